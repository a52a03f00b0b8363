"""LoRA names for SDXL: diffusers' UNet names at full size, kohya te1/te2, PEFT, ComfyUI."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.adapter_keys import _unet_keys, unet_diffusers_names
from loom_sdxl.adapter_keys import clip_keys
from loom_sdxl.unet import SDXL_BASE_UNET, SDXL_REFINER_UNET, SDXLUNetModel


def _weights(config) -> list[str]:
    with torch.device("meta"):
        keys = SDXLUNetModel(config).state_dict()
    return [k[: -len(".weight")] for k in keys if k.endswith(".weight")]


@pytest.mark.parametrize("config", [SDXL_BASE_UNET, SDXL_REFINER_UNET], ids=["base", "refiner"])
def test_every_full_size_weight_has_diffusers_own_name(config):
    diffusers = pytest.importorskip("diffusers")
    channels = tuple(config.model_channels * m for m in config.channel_mult)
    with torch.device("meta"):
        reference = diffusers.UNet2DConditionModel(
            down_block_types=tuple(
                "CrossAttnDownBlock2D" if d else "DownBlock2D" for d in config.transformer_depths
            ),
            up_block_types=tuple(
                "CrossAttnUpBlock2D" if d else "UpBlock2D"
                for d in reversed(config.transformer_depths)
            ),
            block_out_channels=channels,
            cross_attention_dim=config.context_dim,
            attention_head_dim=tuple(c // 64 for c in channels),
            transformer_layers_per_block=tuple(max(1, d) for d in config.transformer_depths),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=config.adm_in_channels,
        )
    expected = {k[: -len(".weight")] for k in reference.state_dict() if k.endswith(".weight")}
    weights = _weights(config)
    names = unet_diffusers_names(config)
    mapped = {names[w] for w in weights}
    assert len(mapped) == len(weights)  # one-to-one
    # diffusers builds the mid block as deep as the last level (refiner: 1, not 4)
    if config.middle_depth != max(1, config.transformer_depths[-1]):
        expected = {k for k in expected if not k.startswith("mid_block.attentions.0.transformer")}
        mapped = {k for k in mapped if not k.startswith("mid_block.attentions.0.transformer")}
    assert mapped == expected


@pytest.mark.parametrize(
    ("name", "key"),
    [
        (
            "lora_unet_down_blocks_2_attentions_1_transformer_blocks_9_attn2_to_k",
            "input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight",
        ),
        (
            "lora_unet_input_blocks_4_1_transformer_blocks_1_ff_net_0_proj",
            "input_blocks.4.1.transformer_blocks.1.ff.net.0.proj.weight",
        ),
        (
            "unet.mid_block.attentions.0.transformer_blocks.9.attn1.to_out.0",
            "middle_block.1.transformer_blocks.9.attn1.to_out.0.weight",
        ),
        ("lora_unet_add_embedding_linear_1", "label_emb.0.0.weight"),
        ("diffusion_model.label_emb.0.2", "label_emb.0.2.weight"),
        ("lora_unet_up_blocks_0_attentions_2_proj_out", "output_blocks.2.1.proj_out.weight"),
        ("lora_unet_up_blocks_1_upsamplers_0_conv", "output_blocks.5.2.conv.weight"),
    ],
)
def test_sdxl_unet_names(name, key):
    with torch.device("meta"):
        module_keys = tuple(SDXLUNetModel(SDXL_BASE_UNET).state_dict())
    assert _unet_keys(SDXL_BASE_UNET, module_keys)[name] == key


def test_clip_names_for_both_encoders():
    keys = (
        "clip_l.text_model.encoder.layers.0.self_attn.q_proj.weight",
        "clip_l.encoder.layers.1.mlp.fc1.weight",  # transformers 5's flattened CLIPTextModel
        "clip_g.text_model.encoder.layers.31.mlp.fc2.weight",
        "clip_g.text_projection.weight",
        "clip_g.text_model.encoder.layers.31.mlp.fc2.bias",
    )
    names = clip_keys(keys)
    assert names["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"] == keys[0]
    assert names["lora_te1_text_model_encoder_layers_1_mlp_fc1"] == keys[1]
    assert names["text_encoder.text_model.encoder.layers.1.mlp.fc1"] == keys[1]
    assert names["lora_te2_text_model_encoder_layers_31_mlp_fc2"] == keys[2]
    assert names["text_encoder_2.text_model.encoder.layers.31.mlp.fc2"] == keys[2]
    assert (
        names["text_encoders.clip_g.transformer.text_model.encoder.layers.31.mlp.fc2"] == (keys[2])
    )
    assert names["lora_te2_text_projection"] == keys[3]
    assert not any(v.endswith(".bias") for v in names.values())
