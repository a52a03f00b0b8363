"""CLIPVisionEncode on an empty CLIP_VISION (unCLIPCheckpointLoader on a checkpoint without
one) reports a NodeInputError naming the node and the input, not an AttributeError."""

from __future__ import annotations

import pytest
import torch

from loom.errors import NodeInputError


def test_encoding_with_no_clip_vision_model_names_the_input():
    from loom.testing import make_registry

    node = make_registry("clip-vision").get_node("CLIPVisionEncode")
    inputs = {"clip_vision": None, "image": torch.rand(1, 8, 8, 3), "crop": "center"}
    with pytest.raises(NodeInputError) as info:
        node.impl.execute(node.impl.create(), inputs, None)
    assert str(info.value).startswith("CLIPVisionEncode: input clip_vision is empty")
    assert info.value.inputs == ("clip_vision",)
