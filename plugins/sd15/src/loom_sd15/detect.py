"""Is a safetensors file SD1.x, and which shapes does it have? Keys and shapes only.

Every function reads a :class:`loom.types.CheckpointHeader` (no tensor data). SD1.x: an LDM
UNet with 4 input channels, no class embedding (``label_emb``: SDXL, unCLIP), cross-attention
context 768 and, in a full checkpoint, a CLIP-L text encoder. SD2.x (context 1024, OpenCLIP-H)
is recognised only to be refused with a clear reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import attrs

from loom.types import CheckpointHeader, ModelPart
from loom_sd15 import diffusers_layout
from loom_sd15.clip import TextEncoderConfig, text_encoder_config
from loom_sd15.convert import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
from loom_sd15.unet import UNetConfig
from loom_sd15.vae import VAEConfig

log = logging.getLogger(__name__)

Shapes = Mapping[str, tuple[int, ...]]
SD1_CONTEXT = 768
SD2_CONTEXT = 1024


def shapes_of(header: CheckpointHeader) -> dict[str, tuple[int, ...]]:
    """Key -> shape, a diffusers-layout UNet or VAE under its LDM names."""
    return diffusers_layout.ldm_shapes({k: tuple(v.shape) for k, v in header.tensors.items()})


def unet_prefix(shapes: Shapes) -> str | None:
    """``model.diffusion_model.`` for checkpoints, ``""`` for bare UNet files."""
    for prefix in (UNET_PREFIX, ""):
        if f"{prefix}input_blocks.0.0.weight" in shapes and f"{prefix}out.2.weight" in shapes:
            return prefix
    return None


def unet_config(shapes: Shapes, prefix: str) -> UNetConfig:
    """Widths, levels, attention placement and context size of an LDM UNet."""
    first = shapes[f"{prefix}input_blocks.0.0.weight"]
    mc = first[0]
    mult: list[int] = []
    attention: set[int] = set()
    res_per_level: list[int] = []
    level, count, depth, context, linear = 0, 0, 1, SD1_CONTEXT, False
    i = 1
    while (
        f"{prefix}input_blocks.{i}.0.op.weight" in shapes
        or f"{prefix}input_blocks.{i}.0.in_layers.0.weight" in shapes
    ):
        block = f"{prefix}input_blocks.{i}"
        if f"{block}.0.op.weight" in shapes:
            res_per_level.append(count)
            level, count = level + 1, 0
        else:
            out_ch = shapes[f"{block}.0.out_layers.3.weight"][0]
            if count == 0:
                mult.append(out_ch // mc)
            count += 1
            if f"{block}.1.proj_in.weight" in shapes:
                attention.add(level)
                linear = len(shapes[f"{block}.1.proj_in.weight"]) == 2
                context = shapes[f"{block}.1.transformer_blocks.0.attn2.to_k.weight"][1]
                depth = 0
                while f"{block}.1.transformer_blocks.{depth}.norm1.weight" in shapes:
                    depth += 1
        i += 1
    res_per_level.append(count)
    mid = f"{prefix}middle_block.1.transformer_blocks.0.attn2.to_k.weight"
    if mid in shapes:
        context = shapes[mid][1]
    sd2 = context == SD2_CONTEXT
    return UNetConfig(
        in_channels=first[1],
        out_channels=shapes[f"{prefix}out.2.weight"][0],
        model_channels=mc,
        channel_mult=tuple(mult),
        num_res_blocks=res_per_level[0],
        attention_levels=tuple(sorted(attention)),
        num_heads=8,
        head_channels=64 if sd2 else None,
        transformer_depth=max(depth, 1),
        context_dim=context,
        use_linear_in_transformer=linear,
    )


def vae_prefix(shapes: Shapes) -> str | None:
    for prefix in (VAE_PREFIX, ""):
        if (
            f"{prefix}encoder.conv_in.weight" in shapes
            and f"{prefix}decoder.conv_out.weight" in shapes
        ):
            return prefix
    return None


def vae_config(shapes: Shapes, prefix: str) -> VAEConfig:
    ch = shapes[f"{prefix}encoder.conv_in.weight"][0]
    mult = []
    level = 0
    while f"{prefix}encoder.down.{level}.block.0.conv1.weight" in shapes:
        mult.append(shapes[f"{prefix}encoder.down.{level}.block.0.conv1.weight"][0] // ch)
        level += 1
    blocks = 0
    while f"{prefix}encoder.down.0.block.{blocks}.conv1.weight" in shapes:
        blocks += 1
    return VAEConfig(
        in_channels=shapes[f"{prefix}encoder.conv_in.weight"][1],
        out_channels=shapes[f"{prefix}decoder.conv_out.weight"][0],
        ch=ch,
        ch_mult=tuple(mult),
        num_res_blocks=blocks,
        z_channels=shapes[f"{prefix}decoder.conv_in.weight"][1],
        embed_dim=shapes[f"{prefix}post_quant_conv.weight"][1]
        if f"{prefix}post_quant_conv.weight" in shapes
        else 4,
    )


@attrs.frozen
class ClipLayout:
    """Where a CLIP-L text encoder sits in a file: prefix, ``text_model.`` or not, config."""

    prefix: str
    has_text_model: bool
    config: TextEncoderConfig

    @property
    def key_prefix(self) -> str:
        return self.prefix + ("text_model." if self.has_text_model else "")


def clip_layout(shapes: Shapes) -> ClipLayout | None:
    for prefix in (CLIP_PREFIX, ""):
        for text_model in (True, False):
            base = prefix + ("text_model." if text_model else "")
            if (
                f"{base}embeddings.token_embedding.weight" in shapes
                and f"{base}encoder.layers.0.mlp.fc1.weight" in shapes
            ):
                return ClipLayout(prefix, text_model, text_encoder_config(shapes, base))
    return None


def is_sd1_unet(config: UNetConfig, shapes: Shapes, prefix: str) -> bool:
    """An SD1.x-layout UNet: 4 latent channels, no class embedding, not SD2's context."""
    return (
        config.context_dim != SD2_CONTEXT
        and config.in_channels == 4
        and f"{prefix}label_emb.0.0.weight" not in shapes
        and config.channel_mult != ()
    )


def score(header: CheckpointHeader, part: ModelPart) -> float:
    """How sure the sd15 family is that ``header`` holds SD1.x ``part`` (0 = not SD1.x).

    A checkpoint scores 1.0 when its UNet's context width equals its CLIP text encoder's
    (768 for real SD1.x, smaller for test models), 0.8 for a 768-context UNet without a
    text encoder; a bare UNet of another width that is not SD2 scores 0.3.
    """
    shapes = shapes_of(header)
    if part in ("checkpoint", "diffusion_model"):
        prefix = unet_prefix(shapes)
        if prefix is None:
            return 0.0
        config = unet_config(shapes, prefix)
        if not is_sd1_unet(config, shapes, prefix):
            log.debug(
                "%s: not SD1.x (context %d, %d input channels)",
                header.path.name,
                config.context_dim,
                config.in_channels,
            )
            return 0.0
        clip = clip_layout(shapes)
        if clip is not None:
            return 1.0 if clip.config.hidden_size == config.context_dim else 0.0
        return 0.8 if config.context_dim == SD1_CONTEXT else 0.3
    if part == "text_encoder":
        clip = clip_layout(shapes)
        return 0.5 if clip is not None else 0.0
    if part == "vae":
        prefix = vae_prefix(shapes)
        if prefix is None:
            return 0.0
        return 0.5 if vae_config(shapes, prefix).z_channels == 4 else 0.0
    return 0.0
