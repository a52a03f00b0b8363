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
