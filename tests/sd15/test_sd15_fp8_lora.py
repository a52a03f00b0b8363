"""An SD1.x UNet loaded as fp8 (UNETLoader ``weight_dtype``) with a LoRA: the patched weights
are rounded back to fp8 as ComfyUI does, stochastically, seeded by ComfyUI's name of each
weight (``diffusion_model.`` + the UNet's key), so the merged model is ComfyUI's bit for bit."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from loom_sd15.tiny import checkpoint_state, save_checkpoint, tiny_spec

from loom.memory.rounding import key_seed, round_to
from loom.testing import make_context

FP8 = torch.float8_e4m3fn
UNET_PREFIX = "model.diffusion_model."
#: (the LoRA's kohya name, the UNet weight it patches): a linear layer and a 3x3 convolution
LAYERS = (
    (
        "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k",
        "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
    ),
    ("lora_unet_input_blocks_1_0_in_layers_2", "input_blocks.1.0.in_layers.2.weight"),
)
RANK = 2

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing"
)


@pytest.fixture
def runtime(tmp_path, loom_runtime):
    """A diffusion-model-only tiny SD1.5 file and a LoRA for two of its layers."""
    state = checkpoint_state(tiny_spec(), seed=0)
    unet = {k[len(UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    save_checkpoint(tmp_path / "models" / "diffusion_models" / "tiny-unet.safetensors", unet)
    g = torch.Generator().manual_seed(7)
    lora = {}
    for name, key in LAYERS:
        shape = unet[key].shape
        kernel = [1, 1] if len(shape) == 4 else []
        lora[f"{name}.lora_up.weight"] = torch.randn(shape[0], RANK, *kernel, generator=g) * 0.1
        lora[f"{name}.lora_down.weight"] = torch.randn(RANK, *shape[1:], generator=g) * 0.1
    save_checkpoint(tmp_path / "models" / "loras" / "l.safetensors", lora)
    return loom_runtime("sd15", "lora", settings={"cpu_only": True})


def test_a_lora_on_an_fp8_unet_rounds_with_comfyuis_seeds(runtime):
    from loom_lora.nodes import LoraLoaderModelOnly

    from loom.memory import open_safetensors
    from loom.nodes.builtin.loaders import UNETLoader

    ctx = make_context(runtime)
    model = UNETLoader(unet_name="tiny-unet.safetensors", weight_dtype="fp8_e4m3fn").run(ctx)
    patched = LoraLoaderModelOnly(model=model, lora_name="l.safetensors", strength_model=1.0).run(
        ctx
    )
    lora = open_safetensors(runtime.settings.base_directory / "models/loras/l.safetensors")
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
