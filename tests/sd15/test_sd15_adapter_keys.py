"""The ``adapter_key_map`` answer for SD1.x: LDM <-> diffusers names, kohya/PEFT/ComfyUI layouts."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.adapter_keys import (
    _clip_keys,
    _unet_keys,
    sd15_adapter_key_map,
    unet_diffusers_names,
)
from loom_sd15.unet import SD15_UNET, UNetModel

from loom.types import AdapterKeyMap


@pytest.fixture(scope="module")
def full_unet_keys() -> tuple[str, ...]:
    with torch.device("meta"):
        return tuple(UNetModel(SD15_UNET).state_dict())


def test_every_full_size_unet_weight_has_a_diffusers_name(full_unet_keys):
    names = unet_diffusers_names(SD15_UNET)
    weights = [k[: -len(".weight")] for k in full_unet_keys if k.endswith(".weight")]
    assert len(weights) == 391
    assert all(w in names for w in weights)
    assert len({names[w] for w in weights}) == len(weights)  # one-to-one


def test_diffusers_names_match_diffusers_own_unet(full_unet_keys):
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        reference = diffusers.UNet2DConditionModel()  # its defaults are SD1.5's
    expected = {k[: -len(".weight")] for k in reference.state_dict() if k.endswith(".weight")}
    names = unet_diffusers_names(SD15_UNET)
    assert {names[k[:-7]] for k in full_unet_keys if k.endswith(".weight")} == expected


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("lora_unet_down_blocks_0_attentions_0_proj_in", "input_blocks.1.1.proj_in.weight"),
        ("lora_unet_input_blocks_1_1_proj_in", "input_blocks.1.1.proj_in.weight"),
        ("diffusion_model.input_blocks.1.1.proj_in", "input_blocks.1.1.proj_in.weight"),
        ("unet.down_blocks.0.attentions.0.proj_in", "input_blocks.1.1.proj_in.weight"),
        ("down_blocks.0.attentions.0.proj_in", "input_blocks.1.1.proj_in.weight"),
        (
            "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0",
            "middle_block.1.transformer_blocks.0.attn2.to_out.0.weight",
        ),
        (
            "unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out",
            "middle_block.1.transformer_blocks.0.attn2.to_out.0.weight",
        ),
        (
            "unet.up_blocks.3.attentions.2.transformer_blocks.0.attn1.processor.to_q",
            "output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight",
        ),
        ("lora_unet_up_blocks_1_upsamplers_0_conv", "output_blocks.5.2.conv.weight"),
        ("lora_unet_up_blocks_0_upsamplers_0_conv", "output_blocks.2.1.conv.weight"),
        ("lora_unet_down_blocks_2_downsamplers_0_conv", "input_blocks.9.0.op.weight"),
        (
            "lora_unet_down_blocks_1_resnets_0_conv_shortcut",
            "input_blocks.4.0.skip_connection.weight",
        ),
        ("lora_unet_time_embedding_linear_1", "time_embed.0.weight"),
        ("lycoris_conv_in", "input_blocks.0.0.weight"),
    ],
)
def test_unet_names(full_unet_keys, name, key):
    assert _unet_keys(SD15_UNET, full_unet_keys)[name] == key


@pytest.mark.parametrize("text_model", [True, False])
def test_clip_names(text_model):
    prefix = "text_model." if text_model else ""
    keys = (
        f"{prefix}encoder.layers.0.self_attn.q_proj.weight",
        f"{prefix}encoder.layers.0.self_attn.q_proj.bias",
    )
    mapped = _clip_keys(keys)
    target = keys[0]
    assert mapped["lora_te_text_model_encoder_layers_0_self_attn_q_proj"] == target
    assert mapped["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"] == target
    assert mapped["text_encoder.text_model.encoder.layers.0.self_attn.q_proj"] == target
    assert (
        mapped["text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj"]
        == target
    )
    assert len(mapped) == 4


def test_the_hook_claims_sd15_values_only():
    from loom_sd15.model import SD15Model
    from loom_sd15.tiny import tiny_spec

    with torch.device("meta"):
        unet = UNetModel(tiny_spec().unet)
    model = SD15Model(unet)
    answer = sd15_adapter_key_map(model, "model")
    assert isinstance(answer, AdapterKeyMap) and answer.handle is model
    assert answer.keys["lora_unet_conv_in"] == "input_blocks.0.0.weight"
    assert sd15_adapter_key_map(model, "clip") is None
    assert sd15_adapter_key_map(object(), "model") is None
