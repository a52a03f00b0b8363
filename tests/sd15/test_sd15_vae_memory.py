"""VAE encode/decode within the device budget: batches split to fit, tiled on out-of-memory."""

from __future__ import annotations

import logging

import pytest
import torch
from loom_sd15.family import SD15Family

from loom.memory import MemoryManager, simulated_device
from loom.safetensors_header import read_header
from loom.types import LoadRequest, ModelPart


def _vae(tiny_checkpoint, budget_bytes: int | None = None):
    memory = None
    if budget_bytes is not None:
        memory = MemoryManager(simulated_device(budget_bytes), budget_bytes=budget_bytes)
    request = LoadRequest(memory=memory)
    return SD15Family().load(read_header(tiny_checkpoint), ModelPart.VAE, request).vae


def test_decode_splits_the_batch_when_activations_do_not_fit(tiny_checkpoint):
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    whole = _vae(tiny_checkpoint).decode(latents)
    vae = _vae(tiny_checkpoint, budget_bytes=2**40)
    per_item = vae.memory_estimate((1, 4, 8, 8), torch.float32)
    vae.memory.explicit_budget_bytes = vae.handle.size_bytes() + 2 * per_item  # room for two
    calls = []
    decode = vae.handle.module.decode
    vae.handle.module.decode = lambda z: calls.append(z.shape[0]) or decode(z)
    split = vae.decode(latents)
    assert calls == [2, 2]
    assert torch.allclose(split, whole, atol=1e-6)


def test_decode_falls_back_to_tiles_when_the_device_runs_out(tiny_checkpoint, caplog):
    latents = torch.randn(1, 4, 80, 80, generator=torch.Generator().manual_seed(1))
    vae = _vae(tiny_checkpoint)
    decode = vae.handle.module.decode
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

    def small_only(z):
        if z.shape[-1] * z.shape[-2] > 64 * 64:  # the whole latent does not fit; tiles do
            raise oom("CUDA out of memory (simulated)")
        return decode(z)

    vae.handle.module.decode = small_only
    with caplog.at_level(logging.WARNING):
        image = vae.decode(latents)
    assert "retrying tiled" in caplog.text
    assert image.shape == (1, 80 * vae.downscale_ratio, 80 * vae.downscale_ratio, 3)
    assert torch.isfinite(image).all()


def test_encode_splits_the_batch_too(tiny_checkpoint):
    pixels = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(2))
    whole = _vae(tiny_checkpoint).encode(pixels)
    vae = _vae(tiny_checkpoint, budget_bytes=2**40)
    per_item = vae.encode_memory_estimate((1, 3, 32, 32), torch.float32)
    vae.memory.explicit_budget_bytes = vae.handle.size_bytes() + per_item  # room for one
    assert torch.allclose(vae.encode(pixels), whole, atol=1e-6)
    assert vae._per_batch(per_item, 3) == 1


@pytest.mark.parametrize("size", [8])
def test_estimates_scale_with_area_and_dtype(tiny_checkpoint, size):
    vae = _vae(tiny_checkpoint)
    small = vae.memory_estimate((1, 4, size, size), torch.float32)
    assert vae.memory_estimate((1, 4, 2 * size, 2 * size), torch.float32) == 4 * small
    assert vae.memory_estimate((1, 4, size, size), torch.float16) * 2 == small
