"""Tiny Flux-layout files with random weights, for tests and benchmarks.

The real architectures at toy widths (seeded): a DiT in ComfyUI's layout, a T5 encoder in
``t5xxl_*.safetensors`` layout (real T5 vocabulary size, so the real tokenizer's ids fit),
a CLIP-L in ``clip_l.safetensors`` layout, a 16-channel VAE in ``ae.safetensors`` layout, and
the all-in-one checkpoint layout combining them. The same code, given full-size configs,
writes full-size random files (the benchmark does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import torch
from loom_sd15.clip import TextEncoderConfig, build_text_encoder
from loom_sd15.vae import AutoencoderKL, VAEConfig

from loom.memory import write_safetensors
from loom_flux.convert import CHECKPOINT_PREFIX
from loom_flux.dit import FluxConfig, FluxTransformer
from loom_flux.t5 import T5Config, build_t5
from loom_flux.vae import FLUX_VAE


@attrs.frozen
class FluxSpec:
    """Configs of the four parts of a Flux setup."""

    dit: FluxConfig
    t5: T5Config
    clip: TextEncoderConfig
    vae: VAEConfig


def tiny_spec(guidance: bool = True, in_channels: int = 64) -> FluxSpec:
    """Toy widths with Flux's structure: 2 double + 2 single blocks, 8x VAE, 2-layer encoders."""
    return FluxSpec(
        dit=FluxConfig(
            in_channels=in_channels,
            hidden_size=32,
            num_heads=2,
            context_dim=32,
            vec_dim=32,
            depth=2,
            depth_single=2,
            guidance_embed=guidance,
        ),
        t5=T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
        clip=TextEncoderConfig(hidden_size=32, intermediate_size=64, num_layers=2),
        vae=attrs.evolve(FLUX_VAE, ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1),
    )


def _randomized(module: torch.nn.Module, seed: int, std: float) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in module.state_dict().items():
        if not tensor.is_floating_point():
            state[key] = tensor.contiguous()
            continue
        noise = torch.randn(tensor.shape, generator=generator) * std
        state[key] = (noise + 1.0 if key.endswith(("scale", "norm.weight")) else noise).contiguous()
    return state


def dit_state(config: FluxConfig, seed: int = 0, std: float = 0.05) -> dict[str, torch.Tensor]:
    return _randomized(FluxTransformer(config), seed, std)


def t5_state(config: T5Config, seed: int = 1, std: float = 0.05) -> dict[str, torch.Tensor]:
    state = _randomized(build_t5(config), seed, std)
    state.pop("encoder.embed_tokens.weight", None)  # ComfyUI's files hold ``shared`` only
    return state


def clip_state(config: TextEncoderConfig, seed: int = 2) -> dict[str, torch.Tensor]:
    model = build_text_encoder(config)
    state = _randomized(model, seed, 0.05)
    # clip_l.safetensors names keys ``text_model.*`` whatever transformers' version builds.
    return {
        k if k.startswith("text_model.") else f"text_model.{k}": v
        for k, v in state.items()
        if not k.endswith("position_ids")
    }


def vae_state(config: VAEConfig, seed: int = 3) -> dict[str, torch.Tensor]:
    return _randomized(AutoencoderKL(config), seed, 0.05)


def checkpoint_state(spec: FluxSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """ComfyUI's all-in-one layout: DiT, both text encoders and the VAE under their prefixes."""
    state = {CHECKPOINT_PREFIX + k: v for k, v in dit_state(spec.dit, seed).items()}
    state |= {
        f"text_encoders.t5xxl.transformer.{k}": v for k, v in t5_state(spec.t5, seed + 1).items()
    }
    state |= {
        f"text_encoders.clip_l.transformer.{k}": v
        for k, v in clip_state(spec.clip, seed + 2).items()
    }
    state |= {f"vae.{k}": v for k, v in vae_state(spec.vae, seed + 3).items()}
    return state


def save(state: Mapping[str, torch.Tensor], path: Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``state`` as safetensors, floating tensors converted to ``dtype`` if given."""
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return write_safetensors(path, state)


#: DiT layers :func:`scaled_fp8_state` leaves unscaled (bf16), as real scaled files do.
UNSCALED_LAYERS = ("img_in.", "final_layer.")
#: T5's linear weights: what ComfyUI's scaled-fp8 T5 files quantise.
T5_LINEARS = (
    "q.weight",
    "k.weight",
    "v.weight",
    "o.weight",
    "wi_0.weight",
    "wi_1.weight",
    "wo.weight",
)


def _unscaled_dit_layer(name: str) -> bool:
    return name.startswith(UNSCALED_LAYERS)


def _unscaled_t5_weight(name: str) -> bool:
    return not name.endswith(T5_LINEARS)


def scaled_fp8_state(
    state: Mapping[str, torch.Tensor],
    prefix: str = "",
    unscaled: Callable[[str], bool] = _unscaled_dit_layer,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``state`` in ComfyUI's scaled-fp8 layout (``scaled_fp8`` marker, fp8 weights, per-layer
    ``scale_weight`` and ``scale_input``), and the same weights dequantised in float32.

    Only 2-D weights under ``prefix`` are quantised; those whose name (``prefix`` removed)
    ``unscaled`` picks are stored bf16 instead (by default the DiT's :data:`UNSCALED_LAYERS`).
    """
    fp8 = torch.float8_e4m3fn
    stored: dict[str, torch.Tensor] = {f"{prefix}scaled_fp8": torch.empty(0, dtype=fp8)}
    dequantized: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = key[len(prefix) :]
        if not key.startswith(prefix) or tensor.ndim != 2 or unscaled(name):
            kept = key.startswith(prefix) and tensor.ndim == 2
            stored[key] = tensor.to(torch.bfloat16) if kept else tensor
            dequantized[key] = stored[key].float() if kept else tensor
            continue
        scale = tensor.abs().max().float() / 448.0
        quantized = (tensor / scale).to(fp8)
        layer = key.removesuffix(".weight")
        # both shapes ComfyUI's files use for the scale, and an input scale only fp8 kernels read
        stored[f"{layer}.scale_weight"] = scale.reshape(1) if "double" in key else scale
        stored[f"{layer}.scale_input"] = torch.ones(())
        stored[key] = quantized
        dequantized[key] = quantized.float() * scale
    return stored, dequantized


def scaled_fp8_t5_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A T5 state as ``t5xxl_fp8_e4m3fn_scaled.safetensors`` stores it: linears fp8, scaled."""
    return scaled_fp8_state(state, unscaled=_unscaled_t5_weight)[0]


def write_tiny_files(folder: Path, seed: int = 0, guidance: bool = True) -> dict[str, Path]:
    """The four separate files ComfyUI's Flux templates load, in ``models/`` subfolders."""
    spec = tiny_spec(guidance)
    return {
        "dit": save(
            dit_state(spec.dit, seed), folder / "diffusion_models" / "tiny-flux.safetensors"
        ),
        "t5": save(t5_state(spec.t5, seed + 1), folder / "text_encoders" / "tiny-t5.safetensors"),
        "clip_l": save(
            clip_state(spec.clip, seed + 2), folder / "text_encoders" / "tiny-clip-l.safetensors"
        ),
        "vae": save(vae_state(spec.vae, seed + 3), folder / "vae" / "tiny-ae.safetensors"),
    }


def uso_projector_state(
    siglip_tokens: int, siglip_dim: int, hidden_size: int, style_tokens: int = 4, seed: int = 7
) -> dict[str, torch.Tensor]:
    """A random USO style projector in its ``model_patches`` layout (``feature_embedder.*``)."""
    from loom_flux.uso import PREFIX, ProjectorConfig, USOProjector

    config = ProjectorConfig(siglip_tokens, style_tokens, siglip_dim, hidden_size, True)
    state = _randomized(USOProjector(config), seed, 0.2)
    return {PREFIX + key: value for key, value in state.items()}
