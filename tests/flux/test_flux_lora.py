"""Flux LoRA key maps (ComfyUI, kohya, diffusers/PEFT, ai-toolkit) and LoraLoaderModelOnly."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from loom_flux.adapter_keys import flux_adapter_key_map
from safetensors.torch import save_file

from loom.testing import make_context


def _model(runtime):
    from loom.nodes.builtin.loaders import UNETLoader

    return UNETLoader(unet_name="tiny-flux.safetensors", weight_dtype="default").run(
        make_context(runtime)
    )


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("diffusion_model.double_blocks.0.img_attn.qkv", "double_blocks.0.img_attn.qkv.weight"),
        ("lora_unet_single_blocks_1_linear1", "single_blocks.1.linear1.weight"),
        ("transformer.transformer_blocks.0.attn.to_out.0", "double_blocks.0.img_attn.proj.weight"),
        ("transformer_blocks.1.ff_context.net.2", "double_blocks.1.txt_mlp.2.weight"),
        ("lora_transformer_single_transformer_blocks_0_proj_out", "single_blocks.0.linear2.weight"),
        ("transformer.context_embedder", "txt_in.weight"),
    ],
)
def test_layer_names_map_to_comfy_weights(runtime, name, key):
    answer = flux_adapter_key_map(_model(runtime), "model")
    assert answer.keys[name] == key


def test_other_models_are_not_claimed():
    assert flux_adapter_key_map(object(), "model") is None


@pytest.mark.skipif(importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing")
def test_lora_loader_model_only_patches_a_flux_clone(runtime, base_dir):
    from loom_lora.nodes import LoraLoaderModelOnly

    g = torch.Generator().manual_seed(0)
    layer = "lora_unet_double_blocks_0_img_attn_proj"
    up, down = torch.randn(32, 2, generator=g), torch.randn(2, 32, generator=g)
    lora = {f"{layer}.lora_up.weight": up, f"{layer}.lora_down.weight": down}
    lora[f"{layer}.alpha"] = torch.tensor(2.0)
    (base_dir / "models" / "loras").mkdir(parents=True, exist_ok=True)
    save_file(lora, str(base_dir / "models" / "loras" / "flux-lora.safetensors"))
    model = _model(runtime)
    base = model.module.get_parameter("double_blocks.0.img_attn.proj.weight").detach().clone()
    out = LoraLoaderModelOnly(model=model, lora_name="flux-lora.safetensors", strength_model=0.5)
    patched = out.run(make_context(runtime))
    runtime.memory.load([patched])
    got = patched.module.get_parameter("double_blocks.0.img_attn.proj.weight").detach().clone()
    assert torch.allclose(got, base + 0.5 * (up @ down), atol=1e-5)
