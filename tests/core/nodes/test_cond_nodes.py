"""CLIPTextEncodeControlnet and T5TokenizerOptions over core's protocols: what they put on
the conditioning / CLIP clone, their refusals and their /object_info entries."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import object_info_of

from loom.errors import LoomError
from loom.nodes.builtin.cond_nodes import CLIPTextEncodeControlnet, T5TokenizerOptions
from loom.testing import make_context
from loom.types import TokenizerOptions, TokenizerPadding


class FakeClip:
    """Encodes a text to a tensor of its length; records tokenizer padding per encoder."""

    def __init__(self) -> None:
        self.padding: dict[str, TokenizerPadding] = {}

    def clone(self) -> FakeClip:
        other = FakeClip()
        other.padding = dict(self.padding)
        return other

    def encode(self, text: str) -> list:
        cond = torch.full((1, len(text), 4), float(len(text)))
        return [[cond, {"pooled_output": cond[:, 0]}]]

    def set_last_layer(self, layer: int) -> None:
        pass

    def set_tokenizer_padding(self, encoder: str, padding: TokenizerPadding) -> None:
        self.padding[encoder] = padding


def test_controlnet_text_is_added_to_every_entry_leaving_the_input_alone():
    first, second = torch.zeros(1, 3, 4), torch.ones(1, 5, 4)
    conditioning = [[first, {"pooled_output": 1}], [second, {"strength": 0.5}]]
    node = CLIPTextEncodeControlnet(clip=FakeClip(), conditioning=conditioning, text="abcdef")
    out = node.run(make_context())
    assert [entry[0] for entry in out] == [first, second]
    for entry in out:
        assert entry[1]["cross_attn_controlnet"].shape == (1, 6, 4)
        assert torch.equal(entry[1]["pooled_output_controlnet"], torch.full((1, 4), 6.0))
    assert out[0][1]["pooled_output"] == 1 and out[1][1]["strength"] == 0.5
    assert "cross_attn_controlnet" not in conditioning[0][1]


def test_t5_options_go_to_every_t5_encoder_of_a_clone():
    clip = FakeClip()
    assert isinstance(clip, TokenizerOptions)
    out = T5TokenizerOptions(clip=clip, min_padding=3, min_length=10).run(make_context())
    assert out is not clip and clip.padding == {}
    expected = TokenizerPadding(min_padding=3, min_length=10)
    assert out.padding == dict.fromkeys(
        ["t5xxl", "pile_t5xl", "t5base", "mt5xl", "umt5xxl"], expected
    )


class PlainClip:
    """A CLIP with no tokenizer options (no T5)."""

    def clone(self) -> PlainClip:
        return PlainClip()

    def encode(self, text: str) -> list:
        return []


def test_a_clip_without_t5_comes_back_as_a_clone():
    clip = PlainClip()
    assert not isinstance(clip, TokenizerOptions)
    out = T5TokenizerOptions(clip=clip, min_padding=1, min_length=1).run(make_context())
    assert isinstance(out, PlainClip) and out is not clip


@pytest.mark.parametrize("node", ["CLIPTextEncodeControlnet", "T5TokenizerOptions"])
def test_a_missing_clip_is_refused_naming_node_and_input(node):
    if node == "T5TokenizerOptions":
        runner = T5TokenizerOptions(clip=None, min_padding=0, min_length=0)
    else:
        runner = CLIPTextEncodeControlnet(clip=None, conditioning=[], text="x")
    with pytest.raises(LoomError, match=f"{node}: input 'clip' is not a text encoder"):
        runner.run(make_context())


def test_object_info_entries():
    controlnet = object_info_of("CLIPTextEncodeControlnet")
    assert controlnet["input"]["required"] == {
        "clip": ["CLIP", {}],
        "conditioning": ["CONDITIONING", {}],
        "text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
    }
    assert controlnet["output"] == ["CONDITIONING"]
    t5 = object_info_of("T5TokenizerOptions")
    assert t5["input"]["required"] == {
        "clip": ["CLIP", {}],
        "min_padding": ["INT", {"default": 0, "min": 0, "max": 10000, "step": 1}],
        "min_length": ["INT", {"default": 0, "min": 0, "max": 10000, "step": 1}],
    }
    assert t5["output"] == ["CLIP"]
    for info in (controlnet, t5):
        assert info["category"] == "_for_testing/conditioning"
        assert info["python_module"] == "comfy_extras.nodes_cond"
        assert info["experimental"] is True
