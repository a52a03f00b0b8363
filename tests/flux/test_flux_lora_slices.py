"""diffusers / PEFT Flux LoRAs on ComfyUI's fused DiT: split q, k, v and ``proj_mlp`` patch
slices of ``qkv`` / ``linear1`` (and ``norm_out.linear`` the swapped final modulation).

The reference merges the same LoRA by hand in diffusers' own layout (``W + s * alpha / r *
B @ A`` on the unfused weights) and fuses the result with the plugin's layout converter:
what a diffusers user gets from ``fuse_lora`` on ``FluxTransformer2DModel``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from flux_markers import needs_samplers
from loom_flux.adapter_keys import flux_adapter_key_map
from loom_flux.convert import DiffusersView, to_diffusers
from loom_flux.tiny import save
from safetensors.torch import load_file, save_file

from loom.testing import make_context
from loom.types import WeightSlice

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("loom_lora") is None, reason="loom-lora missing"
)

#: diffusers layers the LoRA trains: split ones (slices of a fused weight) and whole ones.
LAYERS = (
    "transformer_blocks.0.attn.to_q",
    "transformer_blocks.0.attn.to_k",
    "transformer_blocks.0.attn.to_v",
    "transformer_blocks.1.attn.add_k_proj",
    "transformer_blocks.1.attn.add_v_proj",
    "single_transformer_blocks.0.attn.to_q",
    "single_transformer_blocks.0.attn.to_v",
    "single_transformer_blocks.1.proj_mlp",
    "single_transformer_blocks.1.attn.to_k",
    "transformer_blocks.0.attn.to_out.0",
    "norm_out.linear",
)
RANK, ALPHA = 4, 2.0
NAMING = {
    "peft": (".lora_B.weight", ".lora_A.weight"),
    "kohya": (".lora_up.weight", ".lora_down.weight"),
}


def _lora(base: dict[str, torch.Tensor], naming: str, prefix: str, seed: int = 5) -> dict:
    up_suffix, down_suffix = NAMING[naming]
    g = torch.Generator().manual_seed(seed)
    diffusers = to_diffusers(base)
    out = {}
    for layer in LAYERS:
        rows, cols = diffusers[f"{layer}.weight"].shape
        name = prefix + layer if prefix != "flat" else f"lora_transformer_{layer.replace('.', '_')}"
        out[name + up_suffix] = torch.randn(rows, RANK, generator=g) * 0.3
        out[name + down_suffix] = torch.randn(RANK, cols, generator=g) * 0.3
        out[name + ".alpha"] = torch.tensor(ALPHA)
    return out


def _merged_by_hand(base: dict, lora: dict, naming: str, prefix: str, strength: float) -> dict:
    """The LoRA merged in diffusers' layout, then fused into ComfyUI's."""
    up_suffix, down_suffix = NAMING[naming]
    diffusers = {k: v.clone() for k, v in to_diffusers(base).items()}
    for layer in LAYERS:
        name = prefix + layer if prefix != "flat" else f"lora_transformer_{layer.replace('.', '_')}"
        up, down = lora[name + up_suffix], lora[name + down_suffix]
        diffusers[f"{layer}.weight"] += strength * (ALPHA / RANK) * (up @ down)
    view = DiffusersView(diffusers, "reference")
    return {k: view[k] for k in view}


def _write_lora(base_dir, lora: dict, name: str = "flux-peft.safetensors") -> str:
    folder = base_dir / "models" / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(lora, str(folder / name))
    return name


def _base(tiny_models) -> dict[str, torch.Tensor]:
    return load_file(str(tiny_models / "diffusion_models" / "tiny-flux.safetensors"))


def _model(runtime):
    from loom.nodes.builtin.loaders import UNETLoader

    return UNETLoader(unet_name="tiny-flux.safetensors", weight_dtype="default").run(
        make_context(runtime)
    )


def test_split_diffusers_layers_map_to_rows_of_the_fused_weights(runtime):
    answer = flux_adapter_key_map(_model(runtime), "model")
    hidden, mlp = 32, 128
    assert answer.slices["transformer.transformer_blocks.0.attn.to_k"] == WeightSlice(
        "double_blocks.0.img_attn.qkv.weight", hidden, hidden
    )
    assert answer.slices["transformer_blocks.1.attn.add_v_proj"] == WeightSlice(
        "double_blocks.1.txt_attn.qkv.weight", 2 * hidden, hidden
    )
    assert answer.slices["lora_transformer_single_transformer_blocks_0_proj_mlp"] == WeightSlice(
        "single_blocks.0.linear1.weight", 3 * hidden, mlp
    )
    assert answer.slices["lycoris_single_transformer_blocks_1_attn_to_q"] == WeightSlice(
        "single_blocks.1.linear1.weight", 0, hidden
    )
    assert answer.slices["transformer.norm_out.linear"] == WeightSlice(
        "final_layer.adaLN_modulation.1.weight", 0, 2 * hidden, swap_halves=True
    )
    # kohya's Flux layout is fused already: a whole weight, no slice
    assert answer.keys["lora_unet_double_blocks_0_img_attn_qkv"] == (
        "double_blocks.0.img_attn.qkv.weight"
    )


@pytest.mark.parametrize(
    ("naming", "prefix"),
    [("peft", "transformer."), ("kohya", "transformer."), ("peft", ""), ("kohya", "flat")],
    ids=["diffusers-peft", "diffusers-lora_up", "bare-peft", "onetrainer"],
)
def test_patched_weights_equal_the_merge_in_diffusers_layout(
    runtime, base_dir, tiny_models, naming, prefix
):
    from loom_lora.nodes import LoraLoaderModelOnly

    base = _base(tiny_models)
    lora = _lora(base, naming, prefix)
    name = _write_lora(base_dir, lora)
    model = _model(runtime)
    node = LoraLoaderModelOnly(model=model, lora_name=name, strength_model=0.75)
    patched = node.run(make_context(runtime))
    runtime.memory.load([patched])
    got = {k: v.detach().clone() for k, v in patched.module.state_dict().items()}
    expected = _merged_by_hand(base, lora, naming, prefix, 0.75)
    changed = [k for k in expected if not torch.equal(expected[k], base[k])]
    assert "double_blocks.0.img_attn.qkv.weight" in changed
    assert "single_blocks.1.linear1.weight" in changed
    assert "final_layer.adaLN_modulation.1.weight" in changed
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=key)
    runtime.memory.unload_all()
    for key, value in model.module.state_dict().items():  # the base model is untouched
        assert torch.equal(value, base[key]), key


@needs_samplers
def test_lora_loader_in_a_workflow_equals_the_merged_model(runtime, base_dir, tiny_models):
    from test_flux_workflows import custom_advanced, image_of, run

    base = _base(tiny_models)
    lora = _lora(base, "peft", "transformer.")
    name = _write_lora(base_dir, lora)
    merged = _merged_by_hand(base, lora, "peft", "transformer.", 1.0)
    save(merged, base_dir / "models" / "diffusion_models" / "tiny-flux-merged.safetensors")

    plain = custom_advanced(width=32, height=32)
    with_lora = custom_advanced(width=32, height=32)
    with_lora["20"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["1", 0],
            "clip": ["2", 0],
            "lora_name": name,
            "strength_model": 1.0,
            "strength_clip": 1.0,  # a model-only LoRA: the text encoders stay as they are
        },
    }
    with_lora["6"]["inputs"]["model"] = ["20", 0]
    with_lora["4"]["inputs"]["clip"] = ["20", 1]
    reference = custom_advanced(width=32, height=32)
    reference["1"]["inputs"]["unet_name"] = "tiny-flux-merged.safetensors"

    without = image_of(run(runtime, plain))
    got = image_of(run(runtime, with_lora))
    want = image_of(run(runtime, reference))
    assert (got - without).abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
