"""Is a safetensors file SDXL, which variant, and which shapes? Keys and shapes only.

An SDXL UNet is an LDM UNet with an ADM class embedding (``label_emb.0.0``), linear
``proj_in`` and 64-channel heads. Variants: ``base`` (3 levels, pooled ‖ 6 size embeddings:
2816 at full size), ``refiner`` (4 levels, pooled ‖ 5 embeddings: 2560) and ``inpaint`` (a base
with 9 input channels). Text encoders: CLIP-L at ``conditioner.embedders.0.transformer.`` and
OpenCLIP bigG at ``conditioner.embedders.1.model.`` (refiner: ``...embedders.0.model.``), or
standalone files in transformers' layout (CLIP-G: with ``text_projection`` and a width other
than CLIP-L's 768) or OpenCLIP's.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from loom_sd15 import detect as sd15_detect
from loom_sd15.clip import TextEncoderConfig, text_encoder_config

from loom.types import CheckpointHeader
from loom_sdxl.convert import (
    BASE_CLIP_G_PREFIX,
    BASE_CLIP_L_PREFIX,
    REFINER_CLIP_G_PREFIX,
    openclip_shapes_config,
)
from loom_sdxl.model import BASE_SIZE_FIELDS, REFINER_SIZE_FIELDS, SIZE_EMBED_DIM
from loom_sdxl.unet import SDXLUNetConfig

Shapes = Mapping[str, tuple[int, ...]]
shapes_of = sd15_detect.shapes_of
unet_prefix = sd15_detect.unet_prefix
vae_prefix = sd15_detect.vae_prefix
vae_config = sd15_detect.vae_config

FULL_BASE_ADM = 2816
FULL_REFINER_ADM = 2560
CLIP_L_WIDTH = 768


def is_sdxl_unet(shapes: Shapes, prefix: str) -> bool:
    """An LDM UNet with SDXL's class embedding and linear transformer projections."""
    if f"{prefix}label_emb.0.0.weight" not in shapes:
        return False
    proj = [k for k in shapes if k.startswith(prefix) and k.endswith(".proj_in.weight")]
    return bool(proj) and all(len(shapes[k]) == 2 for k in proj)


def unet_config(shapes: Shapes, prefix: str) -> SDXLUNetConfig:
    """Widths, levels, transformer depth per level, context and ADM width of an SDXL UNet."""
    first = shapes[f"{prefix}input_blocks.0.0.weight"]
    mc = first[0]
    mult: list[int] = []
    depths: list[int] = []
    res_per_level: list[int] = []
    count, context, level_depth = 0, 0, 0
    i = 1
    while (
        f"{prefix}input_blocks.{i}.0.op.weight" in shapes
        or f"{prefix}input_blocks.{i}.0.in_layers.0.weight" in shapes
    ):
        block = f"{prefix}input_blocks.{i}"
        if f"{block}.0.op.weight" in shapes:
            res_per_level.append(count)
            depths.append(level_depth)
            count, level_depth = 0, 0
        else:
            if count == 0:
                mult.append(shapes[f"{block}.0.out_layers.3.weight"][0] // mc)
            count += 1
            level_depth = _depth(shapes, f"{block}.1")
            if level_depth:
                context = shapes[f"{block}.1.transformer_blocks.0.attn2.to_k.weight"][1]
        i += 1
    res_per_level.append(count)
    depths.append(level_depth)
    middle = _depth(shapes, f"{prefix}middle_block.1")
    if middle:
        context = shapes[f"{prefix}middle_block.1.transformer_blocks.0.attn2.to_k.weight"][1]
    return SDXLUNetConfig(
        in_channels=first[1],
        out_channels=shapes[f"{prefix}out.2.weight"][0],
        model_channels=mc,
        channel_mult=tuple(mult),
        num_res_blocks=res_per_level[0],
        transformer_depths=tuple(depths),
        middle_depth=middle,
        context_dim=context,
        adm_in_channels=shapes[f"{prefix}label_emb.0.0.weight"][1],
    )


def _depth(shapes: Shapes, block: str) -> int:
    depth = 0
    while f"{block}.transformer_blocks.{depth}.norm1.weight" in shapes:
        depth += 1
    return depth


def variant(config: SDXLUNetConfig, shapes: Shapes) -> str | None:
    """``base``, ``refiner`` or ``inpaint`` (None: an ADM UNet SDXL code cannot run)."""
    if config.in_channels not in (4, 9) or config.out_channels != 4:
        return None
    if BASE_CLIP_G_PREFIX + "token_embedding.weight" in shapes:
        refiner = False
    elif REFINER_CLIP_G_PREFIX + "token_embedding.weight" in shapes:
        refiner = True
    elif config.adm_in_channels in (FULL_BASE_ADM, FULL_REFINER_ADM):
        refiner = config.adm_in_channels == FULL_REFINER_ADM
    else:  # a file without text encoders at test widths: base has 3 levels, refiner 4
        refiner = len(config.channel_mult) == 4
    fields = REFINER_SIZE_FIELDS if refiner else BASE_SIZE_FIELDS
    if config.adm_in_channels <= fields * SIZE_EMBED_DIM:
        return None
    if refiner:
        return "refiner" if config.in_channels == 4 else None
    return "inpaint" if config.in_channels == 9 else "base"


# --- text encoders ----------------------------------------------------------------------


@attrs.frozen
class EncoderLayout:
    """One text encoder in a file: where, which layout, which role, its config."""

    role: str  # "clip_l" or "clip_g"
    prefix: str
    openclip: bool  # OpenCLIP keys (fused in_proj) rather than transformers'
    has_text_model: bool
    config: TextEncoderConfig


def _openclip(shapes: Shapes, prefix: str) -> EncoderLayout:
    widths = openclip_shapes_config(shapes, prefix)
    vocab = widths["vocab_size"]
    config = TextEncoderConfig(
        hidden_act="gelu", start_token=vocab - 2, end_token=vocab - 1, **widths
    )
    return EncoderLayout("clip_g", prefix, True, True, config)


def _transformers(shapes: Shapes, layout: sd15_detect.ClipLayout) -> EncoderLayout:
    projection = shapes.get(f"{layout.prefix}text_projection.weight")
    config = layout.config
    if projection is not None and config.hidden_size != CLIP_L_WIDTH:
        config = attrs.evolve(config, hidden_act="gelu", projection_dim=projection[0])
        return EncoderLayout("clip_g", layout.prefix, False, layout.has_text_model, config)
    return EncoderLayout("clip_l", layout.prefix, False, layout.has_text_model, config)


def checkpoint_encoders(shapes: Shapes) -> list[EncoderLayout]:
    """The text encoders of an SDXL single file (base: L and G; refiner: G)."""
    found = []
    base = f"{BASE_CLIP_L_PREFIX}text_model."
    if f"{base}embeddings.token_embedding.weight" in shapes:
        config = text_encoder_config(shapes, base)
        found.append(EncoderLayout("clip_l", BASE_CLIP_L_PREFIX, False, True, config))
    for prefix in (BASE_CLIP_G_PREFIX, REFINER_CLIP_G_PREFIX):
        if f"{prefix}token_embedding.weight" in shapes:
            found.append(_openclip(shapes, prefix))
    return found


def standalone_encoder(shapes: Shapes) -> EncoderLayout | None:
    """A text-encoder file on its own (``models/text_encoders``), either layout."""
    if "token_embedding.weight" in shapes and "transformer.resblocks.0.attn.in_proj_weight" in (
        shapes
    ):
        return _openclip(shapes, "")
    layout = sd15_detect.clip_layout(shapes)
    return None if layout is None else _transformers(shapes, layout)


def score(header: CheckpointHeader, part: str) -> float:
    """How sure the sdxl family is that ``header`` holds SDXL ``part`` (0 = not SDXL).

    Checkpoints and diffusion models: 1.0 for any SDXL UNet variant (so the loader can refuse
    an unsupported one by name). Text encoders: 0.9 for CLIP-G, 0.5 for a CLIP-L file (which
    is SD1.x's too: SDXL wins a DualCLIPLoader pair by its CLIP-G). VAE: 0.4, below sd15's
    score for the same architecture (the SDXL VAE only differs in its weights).
    """
    shapes = shapes_of(header)
    if part in ("checkpoint", "diffusion_model"):
        prefix = unet_prefix(shapes)
        return 1.0 if prefix is not None and is_sdxl_unet(shapes, prefix) else 0.0
    if part == "text_encoder":
        encoder = standalone_encoder(shapes)
        if encoder is None:
            return 0.0
        return 0.9 if encoder.role == "clip_g" else 0.5
    if part == "vae":
        prefix = vae_prefix(shapes)
        return 0.4 if prefix is not None and vae_config(shapes, prefix).z_channels == 4 else 0.0
    return 0.0
