"""LoRA on SDXL through LoraLoader: kohya files for the UNet and both text encoders, and an
SD1.5 LoRA given to SDXL (its keys reported, nothing wrong applied, the run still works)."""

from __future__ import annotations

import logging

import torch
from safetensors.torch import save_file
from sdxl_markers import needs_samplers
from test_sdxl_workflows import base_prompt, image_of, run

pytestmark = [needs_samplers]


def _lora(path, layers: dict[str, tuple[int, int]], rank: int = 4, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (out_features, in_features) in layers.items():
        tensors[f"{name}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator)
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator)
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


SDXL_LAYERS = {  # tiny base widths: context 96, level-1 channels 64, CLIP-L 32, CLIP-G 64
    "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (64, 96),
    "lora_unet_mid_block_attentions_0_transformer_blocks_1_attn1_to_q": (128, 128),
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (32, 32),
    "lora_te2_text_model_encoder_layers_0_mlp_fc1": (256, 64),
}
SD15_LAYERS = {  # what a (tiny) SD1.5 LoRA names: lora_te_, attention at level 0, context 32
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (32, 32),
    "lora_unet_down_blocks_0_attentions_0_proj_in": (32, 32),
    "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k": (64, 32),
}


def with_lora(name: str, strength: float = 1.0) -> dict:
    prompt = base_prompt()
    prompt["20"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": name,
            "strength_model": strength,
            "strength_clip": strength,
        },
    }
    prompt["3"]["inputs"]["model"] = ["20", 0]
    for node in ("6", "7"):
        prompt[node]["inputs"]["clip"] = ["20", 1]
    return prompt


def test_kohya_lora_patches_unet_and_both_text_encoders(runtime, caplog):
    loras = runtime.settings.base_directory / "models" / "loras"
    _lora(loras / "sdxl-style.safetensors", SDXL_LAYERS)
    plain = image_of(run(runtime, base_prompt()))
    with caplog.at_level(logging.INFO, logger="loom_lora"):
        result = run(runtime, with_lora("sdxl-style.safetensors"))
    assert "2 model weights, 2 clip weights; 12 of 12 keys used" in caplog.text
    assert "match no weight" not in caplog.text
    assert not torch.equal(plain, image_of(result))
    encoded = result.values["6"][0][0][0][0]
    unpatched = run(runtime, base_prompt()).values["6"][0][0][0][0]
    assert not torch.equal(encoded[..., :32], unpatched[..., :32])  # CLIP-L part
    assert not torch.equal(encoded[..., 32:], unpatched[..., 32:])  # CLIP-G part
    zero = image_of(run(runtime, with_lora("sdxl-style.safetensors", strength=0.0)))
    assert torch.equal(plain, zero)


def test_sd15_lora_on_sdxl_reports_its_keys_and_applies_nothing_wrong(runtime, caplog):
    loras = runtime.settings.base_directory / "models" / "loras"
    _lora(loras / "sd15-style.safetensors", SD15_LAYERS)
    plain = image_of(run(runtime, base_prompt()))
    with caplog.at_level(logging.INFO, logger="loom_lora"):
        result = run(runtime, with_lora("sd15-style.safetensors"))
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in caplog.text
    assert "lora_unet_down_blocks_0_attentions_0_proj_in" in caplog.text
    assert "attn2_to_k" in caplog.text  # the right name with SD1.5 shapes is refused too
    assert torch.equal(plain, image_of(result))


# One rank-4 LoRA on a UNet layer and a layer of each text encoder, named in the diffusers /
# PEFT layout (lora_A / lora_B, no alpha: scale 1) and in ComfyUI's own (diffusion_model.,
# text_encoders.clip_*.transformer.; lora_up / lora_down with alpha = rank: scale 1).
LAYERS = {  # model key (UNet) or clip key -> (out, in), diffusers name, ComfyUI name
    "input_blocks.4.1.transformer_blocks.0.attn2.to_k": (
        (64, 96),
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
        "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k",
    ),
    "clip_l.text_model.encoder.layers.0.self_attn.q_proj": (
        (32, 32),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
        "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj",
    ),
    "clip_g.text_model.encoder.layers.0.mlp.fc1": (
        (256, 64),
        "text_encoder_2.text_model.encoder.layers.0.mlp.fc1",
        "text_encoders.clip_g.transformer.text_model.encoder.layers.0.mlp.fc1",
    ),
}


def _factors(rank: int = 4) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(7)
    return {
        key: (
            torch.randn(out_features, rank, generator=generator) * 0.1,
            torch.randn(rank, in_features, generator=generator) * 0.1,
        )
        for key, ((out_features, in_features), _, _) in LAYERS.items()
    }


def _write_layouts(loras, factors) -> None:
    peft, comfy = {}, {}
    for key, (_, diffusers_name, comfy_name) in LAYERS.items():
        up, down = factors[key]
        peft[f"{diffusers_name}.lora_B.weight"] = up
        peft[f"{diffusers_name}.lora_A.weight"] = down
        comfy[f"{comfy_name}.lora_up.weight"] = up
        comfy[f"{comfy_name}.lora_down.weight"] = down
        comfy[f"{comfy_name}.alpha"] = torch.tensor(float(up.shape[1]))
    loras.mkdir(parents=True, exist_ok=True)
    save_file(peft, str(loras / "peft.safetensors"))
    save_file(comfy, str(loras / "comfy.safetensors"))


def _module_key(state: dict[str, torch.Tensor], key: str) -> str:
    """``key``'s weight in the module (CLIPTextModel drops ``text_model.`` in transformers 5)."""
    weight = f"{key}.weight"
    if weight in state:
        return weight
    flat = weight.replace(".text_model.", ".", 1)
    assert flat in state, weight
    return flat


def _weights(runtime, handle) -> dict[str, torch.Tensor]:
    runtime.memory.load([handle])
    return {k: v.detach().float().clone() for k, v in handle.module.state_dict().items()}


def test_diffusers_peft_and_comfyui_lora_files_patch_like_a_hand_merge(runtime, caplog):
    loras = runtime.settings.base_directory / "models" / "loras"
    factors = _factors()
    _write_layouts(loras, factors)
    strength = 0.75
    for name in ("peft.safetensors", "comfy.safetensors"):
        with caplog.at_level(logging.INFO, logger="loom_lora"):
            result = run(runtime, with_lora(name, strength=strength))
        assert "1 model weights, 2 clip weights; " in caplog.text
        assert "match no weight" not in caplog.text
        caplog.clear()
        base_model, base_clip = result.values["4"][0][0], result.values["4"][1][0]
        model, clip = result.values["20"][0][0], result.values["20"][1][0]
        before = {**_weights(runtime, base_model), **_weights(runtime, base_clip.handle)}
        runtime.memory.unload_all()
        after = {**_weights(runtime, model), **_weights(runtime, clip.handle)}
        runtime.memory.unload_all()
        for key, (up, down) in factors.items():
            weight = _module_key(before, key)
            expected = before[weight] + strength * (up @ down)
            torch.testing.assert_close(after[weight], expected, rtol=0, atol=1e-5)
        patched = {_module_key(before, key) for key in factors}
        untouched = [k for k in before if k not in patched]
        assert len(untouched) > 50
        assert all(torch.equal(before[k], after[k]) for k in untouched), name
