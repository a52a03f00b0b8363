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


@pytest.mark.skipif(importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing")
def test_lora_loader_patches_both_flux_text_encoders(runtime, base_dir):
    from loom_lora.nodes import LoraLoader

    from loom.nodes.builtin.loaders import DualCLIPLoader

    g = torch.Generator().manual_seed(4)
    layers = {
        # kohya's Flux names: CLIP-L as te1, T5 as te2 (ComfyUI also reads te1/te3 for T5)
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (
            "clip_l",
            "encoder.layers.0.self_attn.q_proj.weight",
        ),
        "lora_te2_encoder_block_1_layer_0_SelfAttention_q": (
            "t5",
            "encoder.block.1.layer.0.SelfAttention.q.weight",
        ),
        "text_encoders.t5xxl.transformer.encoder.block.0.layer.1.DenseReluDense.wo": (
            "t5",
            "encoder.block.0.layer.1.DenseReluDense.wo.weight",
        ),
        "lora_unet_double_blocks_0_img_attn_proj": (
            "model",
            "double_blocks.0.img_attn.proj.weight",
        ),
    }
    clip = DualCLIPLoader(
        clip_name1="tiny-t5.safetensors", clip_name2="tiny-clip-l.safetensors", type="flux"
    ).run(make_context(runtime))
    model = _model(runtime)
    handles = {"clip_l": clip.clip_l.handle, "t5": clip.t5, "model": model}
    lora, expected = {}, {}
    for layer, (part, key) in layers.items():
        rows, cols = handles[part].module.get_parameter(key).shape
        up, down = torch.randn(rows, 2, generator=g), torch.randn(2, cols, generator=g)
        lora[f"{layer}.lora_up.weight"], lora[f"{layer}.lora_down.weight"] = up, down
        base = handles[part].module.get_parameter(key).detach().float()
        expected[(part, key)] = base + 0.5 * (up @ down)
    (base_dir / "models" / "loras").mkdir(parents=True, exist_ok=True)
    save_file(lora, str(base_dir / "models" / "loras" / "flux-te.safetensors"))
    out = LoraLoader(
        model=model,
        clip=clip,
        lora_name="flux-te.safetensors",
        strength_model=0.5,
        strength_clip=0.5,
    ).run(make_context(runtime))
    patched = {"clip_l": out.clip.clip_l.handle, "t5": out.clip.t5, "model": out.model}
    runtime.memory.load(list(patched.values()))
    for (part, key), want in expected.items():
        got = patched[part].module.get_parameter(key).detach().float()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=f"{part} {key}")
    runtime.memory.unload_all()
    assert out.clip.t5 is not clip.t5 and clip.t5.weight_patches == {}  # the input is unchanged
