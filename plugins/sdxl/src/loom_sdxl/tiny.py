"""Tiny SDXL-layout files with random weights, for tests, the demo and benchmarks.

:func:`checkpoint_state` builds the real architectures (SDXL UNet, AutoencoderKL, CLIP-L,
OpenCLIP bigG) at the widths of a :class:`SDXLSpec`, seeded, in the single-file layout
(``model.diffusion_model.*``, ``conditioner.embedders.*``, ``first_stage_model.*``).
:func:`tiny_spec` gives toy widths with SDXL's structure (base: 3 levels, depths 0/1/2;
refiner: 4 levels, CLIP-G only); :func:`full_spec` the real sizes. Standalone files
(bare UNet, ``clip_l`` / ``clip_g`` text encoders in transformers' layout) come from the same
state via :func:`split_files`.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
from loom_sd15.clip import TextEncoderConfig, build_text_encoder
from loom_sd15.convert import clip_conversion, unet_conversion, vae_conversion
from loom_sd15.tiny import _randomize, save_checkpoint
from loom_sd15.vae import SD15_VAE, AutoencoderKL, VAEConfig

from loom_sdxl.convert import (
    BASE_CLIP_G_PREFIX,
    BASE_CLIP_L_PREFIX,
    REFINER_CLIP_G_PREFIX,
    OpenClipConversion,
)
from loom_sdxl.model import BASE_SIZE_FIELDS, REFINER_SIZE_FIELDS, SIZE_EMBED_DIM
from loom_sdxl.unet import SDXL_BASE_UNET, SDXL_REFINER_UNET, SDXLUNetConfig, SDXLUNetModel

VOCAB = 49408


@attrs.frozen
class SDXLSpec:
    """Widths of one SDXL file: UNet, VAE, CLIP-G and (base only) CLIP-L."""

    unet: SDXLUNetConfig
    vae: VAEConfig
    clip_g: TextEncoderConfig
    clip_l: TextEncoderConfig | None

    @property
    def refiner(self) -> bool:
        return self.clip_l is None


def _clip(
    hidden: int, layers: int, act: str, projection: int | None, vocab_size: int = VOCAB
) -> TextEncoderConfig:
    return TextEncoderConfig(
        vocab_size=vocab_size,
        start_token=vocab_size - 2,
        end_token=vocab_size - 1,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_layers=layers,
        projection_dim=projection,
        hidden_act=act,
    )


def tiny_spec(refiner: bool = False, inpaint: bool = False, vocab_size: int = VOCAB) -> SDXLSpec:
    """Toy widths: CLIP-L 32 wide, CLIP-G 64 (2 and 3 layers), UNet 32/64/128 channels."""
    clip_g = _clip(64, 3, "gelu", 64, vocab_size)
    clip_l = None if refiner else _clip(32, 2, "quick_gelu", None, vocab_size)
    fields = REFINER_SIZE_FIELDS if refiner else BASE_SIZE_FIELDS
    unet = SDXLUNetConfig(
        in_channels=9 if inpaint else 4,
        model_channels=32,
        channel_mult=(1, 2, 4, 4) if refiner else (1, 2, 4),
        num_res_blocks=1 if refiner else 2,
        transformer_depths=(0, 1, 1, 0) if refiner else (0, 1, 2),
        middle_depth=1 if refiner else 2,
        context_dim=clip_g.hidden_size + (0 if clip_l is None else clip_l.hidden_size),
        adm_in_channels=64 + fields * SIZE_EMBED_DIM,
    )
    vae = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1)
    return SDXLSpec(unet, vae, clip_g, clip_l)


def full_spec(refiner: bool = False) -> SDXLSpec:
    """The real SDXL 1.0 base (or refiner) widths."""
    clip_g = _clip(1280, 32, "gelu", 1280)
    clip_g = attrs.evolve(clip_g, intermediate_size=5120)
    clip_l = None if refiner else TextEncoderConfig()
    return SDXLSpec(SDXL_REFINER_UNET if refiner else SDXL_BASE_UNET, SD15_VAE, clip_g, clip_l)


def _random_state(module: torch.nn.Module, generator: torch.Generator, dtype: torch.dtype) -> dict:
    module.to_empty(device="cpu")
    _randomize(module, generator, 0.2)
    return {
        k: v.detach().to(dtype).contiguous()
        for k, v in module.state_dict().items()
        if not k.endswith("position_ids")
    }


def checkpoint_state(
    spec: SDXLSpec, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Random weights for ``spec`` in SDXL's single-file layout."""
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        unet = SDXLUNetModel(spec.unet)
        vae = AutoencoderKL(spec.vae)
        clip_g = build_text_encoder(spec.clip_g)
        clip_l = None if spec.clip_l is None else build_text_encoder(spec.clip_l)
    state = unet_conversion().to_checkpoint(_random_state(unet, generator, dtype))
    state.update(vae_conversion().to_checkpoint(_random_state(vae, generator, dtype)))
    g_prefix = REFINER_CLIP_G_PREFIX if spec.refiner else BASE_CLIP_G_PREFIX
    g_state = _random_state(clip_g, generator, dtype)
    state.update(OpenClipConversion("CLIP-G", g_prefix).to_checkpoint(g_state))
    if clip_l is not None:
        conversion = clip_conversion(BASE_CLIP_L_PREFIX, hasattr(clip_l, "text_model"), True)
        state.update(conversion.to_checkpoint(_random_state(clip_l, generator, dtype)))
    return state


def split_files(state: dict[str, torch.Tensor], spec: SDXLSpec) -> dict[str, dict]:
    """The standalone files of a checkpoint state: ``unet``, ``vae``, ``clip_l``, ``clip_g``
    (text encoders in transformers' layout, as ComfyUI's ``clip_l`` / ``clip_g`` files)."""
    from loom_sd15.convert import UNET_PREFIX, VAE_PREFIX

    def under(prefix: str) -> dict:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    files = {"unet": under(UNET_PREFIX), "vae": under(VAE_PREFIX)}
    g_prefix = REFINER_CLIP_G_PREFIX if spec.refiner else BASE_CLIP_G_PREFIX
    conversion = OpenClipConversion("CLIP-G", g_prefix)
    files["clip_g"] = {k: v.contiguous() for k, v in conversion.view(state).items()}
    if spec.clip_l is not None:
        files["clip_l"] = under(BASE_CLIP_L_PREFIX)
    return files


def write_tiny_checkpoint(
    path: Path,
    seed: int = 0,
    refiner: bool = False,
    inpaint: bool = False,
    dtype: torch.dtype = torch.float32,
    vocab_size: int = VOCAB,
    metadata: dict[str, str] | None = None,
) -> Path:
    spec = tiny_spec(refiner=refiner, inpaint=inpaint, vocab_size=vocab_size)
    return save_checkpoint(path, checkpoint_state(spec, seed, dtype), metadata)
