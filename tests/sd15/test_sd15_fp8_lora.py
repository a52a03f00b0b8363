"""An SD1.x UNet loaded as fp8 (UNETLoader ``weight_dtype``) with a LoRA: the patched weights
are rounded back to fp8 as ComfyUI does, stochastically, seeded by ComfyUI's name of each
weight (``diffusion_model.`` + the UNet's key), so the merged model is ComfyUI's bit for bit."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from sd15_lora_files import LAYERS, LORA_FILE, UNET_FILE, write_lora, write_tiny_unet

from loom.memory.rounding import key_seed, round_to
from loom.testing import make_context

FP8 = torch.float8_e4m3fn

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing"
)


@pytest.fixture
def runtime(tmp_path, loom_runtime):
    """A diffusion-model-only tiny SD1.5 file and a LoRA for two of its layers."""
    unet = write_tiny_unet(tmp_path, torch.float32)
    write_lora(tmp_path, unet, torch.float32, scale=0.1)
    return loom_runtime("sd15", "lora", settings={"cpu_only": True})


def test_a_lora_on_an_fp8_unet_rounds_with_comfyuis_seeds(runtime):
    from loom_lora.nodes import LoraLoaderModelOnly

    from loom.memory import open_safetensors
    from loom.nodes.builtin.loaders import UNETLoader

    ctx = make_context(runtime)
    model = UNETLoader(unet_name=UNET_FILE, weight_dtype="fp8_e4m3fn").run(ctx)
    patched = LoraLoaderModelOnly(model=model, lora_name=LORA_FILE, strength_model=1.0).run(ctx)
    lora = open_safetensors(runtime.settings.base_directory / "models" / "loras" / LORA_FILE)
    stored = {key: model.module.get_parameter(key).detach().clone() for _, key in LAYERS}
    runtime.memory.load([patched])
    for name, key in LAYERS:
        base = stored[key]
        assert base.dtype == FP8
        up, down = lora[f"{name}.lora_up.weight"], lora[f"{name}.lora_down.weight"]
        merged = base.float() + (up.flatten(1) @ down.flatten(1)).reshape(base.shape)
        expected = round_to(merged, FP8, key_seed(f"diffusion_model.{key}"))
        weight = patched.module.get_parameter(key)
        assert weight.dtype == FP8
        assert torch.equal(weight.view(torch.uint8), expected.view(torch.uint8)), key
        # the seed really is ComfyUI's name: the bare key, or rounding to nearest, differ
        bare = round_to(merged, FP8, key_seed(key))
        assert not torch.equal(weight.view(torch.uint8), bare.view(torch.uint8))
        assert not torch.equal(weight.view(torch.uint8), merged.to(FP8).view(torch.uint8))
    runtime.memory.unload_all()
    for _, key in LAYERS:  # unloading restores the stored fp8 weights
        restored = model.module.get_parameter(key).view(torch.uint8)
        assert torch.equal(restored, stored[key].view(torch.uint8))
