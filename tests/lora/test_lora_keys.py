"""Key parsing: layer name + suffix per key, grouping, prefixes, and the patch plan's report."""

from __future__ import annotations

import pytest
import torch
from loom_lora.adapters import default_adapters
from loom_lora.keys import group_keys, part_of, split_key
from loom_lora.loader import Target, plan_patches

SUFFIXES = {s for adapter in default_adapters() for s in adapter.suffixes}


@pytest.mark.parametrize(
    ("key", "layer", "suffix"),
    [
        (
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
            "lora_unet_down_blocks_0_attentions_0_proj_in",
            ".lora_up.weight",
        ),
        (
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha",
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
            ".alpha",
        ),
        (
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight",
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
            ".lora_A.weight",
        ),
        (
            "unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight",
            "unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q",
            "_lora.up.weight",
        ),
        (
            "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora.down.weight",
            "text_encoder.text_model.encoder.layers.0.mlp.fc1",
            ".lora.down.weight",
        ),
        ("diffusion_model.out.2.diff_b", "diffusion_model.out.2", ".diff_b"),
        ("diffusion_model.out.2.diff", "diffusion_model.out.2", ".diff"),
        ("lora_unet_conv_in.hada_w1_a", "lora_unet_conv_in", ".hada_w1_a"),
        ("lora_unet_conv_in.lokr_w1_a", "lora_unet_conv_in", ".lokr_w1_a"),
        ("lora_unet_conv_in.lokr_w1", "lora_unet_conv_in", ".lokr_w1"),
    ],
)
def test_split_key(key, layer, suffix):
    assert split_key(key, SUFFIXES) == (layer, suffix)


def test_group_keys_groups_per_layer_and_keeps_unknown_suffixes_apart():
    keys = ["a.lora_up.weight", "a.lora_down.weight", "a.alpha", "b.diff", "b.diff_b", "c.weird"]
    parsed = group_keys(keys, SUFFIXES)
    assert parsed.layers["a"].keys == {
        ".lora_up.weight": "a.lora_up.weight",
        ".lora_down.weight": "a.lora_down.weight",
        ".alpha": "a.alpha",
    }
    assert set(parsed.layers["b"].keys) == {".diff", ".diff_b"}
    assert parsed.unparsed == ["c.weird"]


@pytest.mark.parametrize(
    ("layer", "part"),
    [
        ("lora_unet_x", "model"),
        ("lora_te_x", "clip"),
        ("lora_te1_x", "clip"),
        ("lora_te2_x", "clip"),
        ("unet.x", "model"),
        ("text_encoder.x", "clip"),
        ("diffusion_model.x", "model"),
        ("something_else", None),
    ],
)
def test_part_of(layer, part):
    assert part_of(layer) == part


def tensors_for(layers: dict[str, tuple[int, int]], rank: int = 2) -> dict[str, torch.Tensor]:
    out = {}
    for layer, (rows, cols) in layers.items():
        out[f"{layer}.lora_up.weight"] = torch.randn(rows, rank)
        out[f"{layer}.lora_down.weight"] = torch.randn(rank, cols)
        out[f"{layer}.alpha"] = torch.tensor(float(rank))
    return out


def test_plan_reports_every_key_that_matches_no_weight():
    tensors = tensors_for({"lora_unet_fc": (6, 8), "lora_unet_nope": (6, 8)})
    tensors["lora_unet_fc.reshape_weight"] = torch.tensor([6, 8])
    tensors["lora_unet_orphan.alpha"] = torch.tensor(1.0)
    target = Target("model", None, {"lora_unet_fc": "fc.weight"}, 1.0)
    report = plan_patches(tensors, [target], default_adapters())
    assert list(report.patches["model"]) == ["fc.weight"]
    assert report.used == {
        "lora_unet_fc.lora_up.weight",
        "lora_unet_fc.lora_down.weight",
        "lora_unet_fc.alpha",
    }
    assert sorted(report.unmatched) == sorted(
        [
            "lora_unet_nope.lora_up.weight",
            "lora_unet_nope.lora_down.weight",
            "lora_unet_nope.alpha",
            "lora_unet_fc.reshape_weight",
            "lora_unet_orphan.alpha",
        ]
    )


def test_plan_sends_each_layer_to_the_target_whose_map_names_it():
    tensors = tensors_for({"lora_unet_fc": (6, 8), "lora_te_q": (4, 4)})
    model = Target("model", None, {"lora_unet_fc": "fc.weight"}, 1.0)
    clip = Target("clip", None, {"lora_te_q": "q.weight"}, 1.0)
    report = plan_patches(tensors, [model, clip], default_adapters())
    assert list(report.patches["model"]) == ["fc.weight"]
    assert list(report.patches["clip"]) == ["q.weight"]
    assert not report.unmatched


def test_model_only_plan_skips_text_encoder_keys_instead_of_calling_them_unknown():
    tensors = tensors_for({"lora_unet_fc": (6, 8), "lora_te_q": (4, 4)})
    model = Target("model", None, {"lora_unet_fc": "fc.weight"}, 1.0)
    report = plan_patches(tensors, [model], default_adapters(), skip_parts=("clip",))
    assert len(report.skipped) == 3 and not report.unmatched


def test_a_lora_and_a_bias_diff_on_one_layer_both_apply():
    tensors = tensors_for({"lora_unet_fc": (6, 8)})
    tensors["lora_unet_fc.diff_b"] = torch.randn(6)
    target = Target("model", None, {"lora_unet_fc": "fc.weight"}, 1.0)
    report = plan_patches(tensors, [target], default_adapters())
    assert set(report.patches["model"]) == {"fc.weight", "fc.bias"}
    assert not report.unmatched
