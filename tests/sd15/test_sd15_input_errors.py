"""VAEEncodeForInpaint given input it cannot work with reports a NodeInputError naming the
node and the inputs (found by tests/e2e/test_bad_input_execution_sweep.py)."""

from __future__ import annotations

import pytest
import torch

from loom.errors import NodeInputError


class BlockVae:
    """Stands in for a VAE: 8-pixel blocks; encoding returns zeros of the latent's shape."""

    downscale_ratio = 8

    def encode(self, pixels):
        return torch.zeros(pixels.shape[0], 4, pixels.shape[1] // 8, pixels.shape[2] // 8)


@pytest.fixture(scope="module")
def registry():
    from loom.testing import make_registry

    return make_registry("sd15")


def encode(registry, pixels, mask):
    node = registry.get_node("VAEEncodeForInpaint")
    inputs = {"pixels": pixels, "vae": BlockVae(), "mask": mask, "grow_mask_by": 6}
    return node.impl.execute(node.impl.create(), inputs, None).values[0]


def test_pixels_and_mask_batches_that_cannot_broadcast(registry):
    with pytest.raises(NodeInputError) as info:
        encode(registry, torch.rand(2, 16, 16, 3), torch.zeros(3, 16, 16))
    assert str(info.value).startswith(
        "VAEEncodeForInpaint: inputs pixels and mask must have the same batch size (or 1 for "
        "mask), but pixels has 2, mask has 3"
    )
    latent = encode(registry, torch.rand(2, 16, 16, 3), torch.zeros(1, 16, 16))
    assert latent["samples"].shape == (2, 4, 2, 2)


def test_pixels_under_one_vae_block(registry):
    with pytest.raises(NodeInputError, match="VAEEncodeForInpaint: pixels must be at least 8x8"):
        encode(registry, torch.rand(1, 16, 7, 3), torch.zeros(1, 16, 7))
