"""Is a safetensors file Flux, and what shapes does it have? Keys and shapes only.

The DiT is recognised in ComfyUI's layout (``double_blocks.0.img_mod.lin.weight``, bare or
under ``model.diffusion_model.``) and in diffusers' (``x_embedder`` + ``transformer_blocks``);
its config (widths, heads, depths, input channels, guidance) is read off the shapes. Text
encoders: T5 (``encoder.block.N...``) and CLIP-L, bare or under ComfyUI's checkpoint prefixes
``text_encoders.t5xxl.transformer.`` / ``text_encoders.clip_l.transformer.``. The VAE: 16
latent channels and no quant convs.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from loom_sd15 import diffusers_layout
from loom_sd15.clip import text_encoder_config
from loom_sd15.detect import ClipLayout

from loom.types import CheckpointHeader
from loom_flux import convert
from loom_flux.dit import FluxConfig
from loom_flux.t5_keys import t5_prefix
from loom_flux.vae import flux_vae_prefix

Shapes = Mapping[str, tuple[int, ...]]

CLIP_PREFIXES = ("text_encoders.clip_l.transformer.", "")


def shapes_of(header: CheckpointHeader) -> dict[str, tuple[int, ...]]:
    """Key -> shape, a diffusers-layout VAE under its LDM names."""
    return diffusers_layout.ldm_shapes({k: tuple(v.shape) for k, v in header.tensors.items()})


@attrs.frozen
class DitLayout:
    """Where a Flux DiT sits in a file and in which layout."""

    prefix: str
    diffusers: bool


def dit_layout(shapes: Shapes) -> DitLayout | None:
    for prefix in (convert.CHECKPOINT_PREFIX, ""):
        if (
            f"{prefix}double_blocks.0.img_mod.lin.weight" in shapes
            and f"{prefix}img_in.weight" in shapes
        ):
            return DitLayout(prefix, diffusers=False)
    for prefix in (convert.CHECKPOINT_PREFIX, "transformer.", ""):
        if (
            convert.is_diffusers_layout(shapes, prefix)
            and f"{prefix}transformer_blocks.0.norm1.linear.weight" in shapes
        ):
            return DitLayout(prefix, diffusers=True)
    return None


def dit_config(shapes: Shapes, layout: DitLayout) -> FluxConfig:
    """The DiT's config from its shapes, in the layout ``layout`` found."""
    return convert.config_from_shapes(shapes, layout.prefix, diffusers=layout.diffusers)


def clip_layout(shapes: Shapes) -> ClipLayout | None:
    """A CLIP-L text encoder (with or without ``text_model.``), as loom-sd15 describes it."""
    for prefix in CLIP_PREFIXES:
        for text_model in (True, False):
            base = prefix + ("text_model." if text_model else "")
            if (
                f"{base}embeddings.token_embedding.weight" in shapes
                and f"{base}encoder.layers.0.mlp.fc1.weight" in shapes
            ):
                return ClipLayout(prefix, text_model, text_encoder_config(shapes, base))
    return None


def score(header: CheckpointHeader, part: str) -> float:
    """How sure the flux family is that ``header`` holds Flux ``part`` (0 = not Flux).

    A CLIP-L file alone scores 0.4, below loom-sd15's 0.5, so ``CLIPLoader`` keeps giving it
    to SD1.x; beside a T5 file (``DualCLIPLoader``) only Flux claims both.
    """
    shapes = shapes_of(header)
    if part == "diffusion_model":
        return 1.0 if dit_layout(shapes) is not None else 0.0
    if part == "checkpoint":
        return 1.0 if dit_layout(shapes) is not None else 0.0
    if part == "text_encoder":
        if t5_prefix(shapes) is not None:
            return 1.0
        return 0.4 if clip_layout(shapes) is not None else 0.0
    if part == "vae":
        return 1.0 if flux_vae_prefix(shapes) is not None else 0.0
    return 0.0
