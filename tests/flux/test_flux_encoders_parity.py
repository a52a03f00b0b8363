"""T5 (fp32, fp8, scaled fp8) vs transformers used directly; the 16-channel VAE vs diffusers."""

from __future__ import annotations

import pytest
import torch
from loom_flux.t5 import T5Config, T5View, build_t5, t5_config
from loom_flux.tiny import t5_state, tiny_spec, vae_state

from loom.memory import (
    ScaledView,
    build_on_meta,
    is_scaled_fp8,
    load_into_module,
    scale_layers,
)

TOL = 1e-4
CONFIG = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
FP8 = torch.float8_e4m3fn


def _reference(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    from transformers import T5EncoderModel

    model = T5EncoderModel(CONFIG.to_transformers()).eval()
    model.load_state_dict({**state, "encoder.embed_tokens.weight": state["shared.weight"]})
    return model


def _ours(state: dict[str, torch.Tensor], scaled: bool = False) -> torch.nn.Module:
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert t5_config(shapes) == CONFIG
    assert is_scaled_fp8(shapes) == scaled
    module = build_on_meta(build_t5, CONFIG)
    view = T5View(state)
    if scaled:
        view = ScaledView(view)
        scale_layers(module, view.layers)
    load_into_module(module, view)
    return module


def _compare(ours: torch.nn.Module, reference: torch.nn.Module) -> float:
    ids = torch.randint(0, 128, (2, 19), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a = ours(input_ids=ids).last_hidden_state
        b = reference(input_ids=ids).last_hidden_state
    return (a - b).abs().max().item()


def _is_linear(key: str) -> bool:
    return key.endswith(
        ("q.weight", "k.weight", "v.weight", "o.weight", "wi_0.weight", "wi_1.weight", "wo.weight")
    )


def test_t5_matches_transformers():
    state = t5_state(CONFIG, seed=0)
    diff = _compare(_ours(state), _reference(state))
    print(f"t5 max abs diff {diff:.3g}")
    assert diff <= TOL


def test_fp8_t5_keeps_fp8_and_matches_rounded_weights():
    state = t5_state(CONFIG, seed=1)
    stored = {k: v.to(FP8) if _is_linear(k) else v for k, v in state.items()}
    ours = _ours(stored)
    assert ours.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == FP8
    rounded = {k: v.float() for k, v in stored.items()}
    assert _compare(ours, _reference(rounded)) <= TOL


def test_scaled_fp8_t5_multiplies_by_scale_weight():
    state = t5_state(CONFIG, seed=2)
    stored: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=FP8)}
    dequantized = {}
    for key, tensor in state.items():
        if _is_linear(key):
            scale = tensor.abs().max() / 448.0
            q = (tensor / scale).to(FP8)
            stored[key] = q
            stored[key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1)
            dequantized[key] = q.float() * scale
        else:
            stored[key] = dequantized[key] = tensor
    ours = _ours(stored, scaled=True)
    diff = _compare(ours, _reference(dequantized))
    print(f"scaled fp8 t5 max abs diff {diff:.3g}")
    assert diff <= TOL


def test_flux_vae_matches_diffusers_16_channel_autoencoder():
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from loom_sd15.vae import AutoencoderKL

    config = tiny_spec().vae
    state = vae_state(config, seed=4)
    ours = AutoencoderKL(config).eval()
    ours.load_state_dict(state)
    levels = len(config.ch_mult)
    reference = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(config.ch * m for m in config.ch_mult),
        layers_per_block=config.num_res_blocks,
        latent_channels=16,
        norm_num_groups=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()
    converted = convert_ldm_vae_checkpoint(state, reference.config)
    reference.load_state_dict(converted, strict=True)
    image = torch.rand(1, 3, 32, 24, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        z_ours = ours.encode(image)
        z_ref = reference.encode(image).latent_dist.mode()
        x_ours = ours.decode(z_ours)
        x_ref = reference.decode(z_ours).sample
    enc, dec = (z_ours - z_ref).abs().max().item(), (x_ours - x_ref).abs().max().item()
    print(f"flux vae encode diff {enc:.3g}, decode diff {dec:.3g}")
    assert z_ours.shape == (1, 16, 4, 3)
    assert enc <= TOL and dec <= TOL


def test_latent_format_is_comfyuis_flux():
    from loom_flux.vae import FLUX_LATENT_FORMAT

    assert (FLUX_LATENT_FORMAT.scale_factor, FLUX_LATENT_FORMAT.shift_factor) == (0.3611, 0.1159)
    assert FLUX_LATENT_FORMAT.channels == 16 and len(FLUX_LATENT_FORMAT.rgb_factors) == 16


def test_a_t5_file_described_by_quantization_metadata_loads_as_its_comfy_quant_twin(tmp_path):
    import json

    from loom_flux.family import FluxFamily

    from loom.memory import read_header, write_safetensors

    state = t5_state(CONFIG, seed=3)
    tensors, layers = {}, {}
    for key, tensor in state.items():
        tensors[key] = tensor
        if _is_linear(key):
            scale = tensor.abs().max() / 448.0
            tensors[key] = (tensor / scale).to(FP8)
            layer = key.removesuffix(".weight")
            tensors[f"{layer}.weight_scale"] = scale
            layers[layer] = {"format": "float8_e4m3fn"}
    twin = dict(tensors)
    for layer, config in layers.items():
        twin[f"{layer}.comfy_quant"] = torch.tensor(
            list(json.dumps(config).encode()), dtype=torch.uint8
        )
    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}
    write_safetensors(tmp_path / "t5-metadata.safetensors", tensors, metadata)
    write_safetensors(tmp_path / "t5-comfy-quant.safetensors", twin)
    loaded = []
    for name in ("t5-metadata.safetensors", "t5-comfy-quant.safetensors"):
        header = read_header(tmp_path / name)
        shapes = {k: tuple(v.shape) for k, v in header.tensors.items()}
        loaded.append(FluxFamily().load_t5(header, shapes, "").module)
    q = loaded[0].encoder.block[0].layer[0].SelfAttention.q
    assert q.weight.dtype == FP8 and hasattr(q, "weight_scale")
    ids = torch.randint(0, 128, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = (m(input_ids=ids).last_hidden_state for m in loaded)
    assert torch.equal(a, b)
