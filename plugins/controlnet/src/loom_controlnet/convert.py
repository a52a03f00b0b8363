"""Which ControlNet layout a file holds, its config, and its keys mapped onto :class:`ControlNet`.

Two layouts carry the same weights:

- original (ControlNet 1.0/1.1, ComfyUI, A1111): ``control_model.`` + the UNet encoder's LDM
  names, ``input_hint_block.*``, ``zero_convs.N.0``, ``middle_block_out.0`` (the prefix is
  absent in most 1.1 releases);
- diffusers (``ControlNetModel``): ``conv_in``, ``time_embedding``, ``down_blocks``,
  ``mid_block``, ``controlnet_cond_embedding.{conv_in,blocks.N,conv_out}``,
  ``controlnet_down_blocks.N``, ``controlnet_mid_block``.

Configs are read from key shapes only; the diffusers names of the encoder come from
loom-sd15's LDM-to-diffusers table, so both layouts load onto the same module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs
from loom_sd15.adapter_keys import unet_diffusers_names
from loom_sd15.detect import unet_config
from loom_sd15.unet import UNetConfig

from loom.errors import ModelFileError, install_command
from loom_controlnet.model import ControlNetConfig

Shapes = Mapping[str, tuple[int, ...]]
ORIGINAL_PREFIXES = ("control_model.", "")
DIFFUSERS_MARK = "controlnet_cond_embedding.conv_in.weight"
#: encoder layers the ControlNet keeps from the UNet (the rest of the UNet is not in the file)
ENCODER_PARTS = ("time_embed.", "label_emb.", "input_blocks.", "middle_block.")
SD1_HEADS = 8
UNION_PARTS = (
    "task_embedding",
    "transformer_layes.",
    "spatial_ch_projs.",
    "control_add_embedding.",
)


@attrs.frozen
class Layout:
    """A file's ControlNet layout: ``"original"`` (with ``prefix``) or ``"diffusers"``."""

    kind: str
    prefix: str = ""


def detect_layout(shapes: Shapes) -> Layout | None:
    """The ControlNet layout of a file's keys, or None when it holds no ControlNet."""
    if DIFFUSERS_MARK in shapes and "conv_in.weight" in shapes:
        return Layout("diffusers")
    for prefix in ORIGINAL_PREFIXES:
        if f"{prefix}zero_convs.0.0.weight" in shapes and f"{prefix}input_hint_block.0.weight" in (
            shapes
        ):
            return Layout("original", prefix)
    return None


def _sdxl() -> Any:
    """loom-sdxl's UNet (class, config reader), needed for ControlNets with a class embedding."""
    try:
        from loom_sdxl import detect, unet
    except ImportError as error:
        raise ModelFileError(
            "this is an SDXL ControlNet, which needs the loom-sdxl plugin",
            hint=install_command("loom-sdxl"),
        ) from error
    return detect, unet


def original_config(shapes: Shapes, prefix: str) -> ControlNetConfig:
    """Config of an original-layout ControlNet (loom-sd15's or loom-sdxl's UNet reader on
    its encoder; SDXL's when the encoder has a class embedding)."""
    # The readers want the UNet's output width, which a ControlNet (no decoder) lacks.
    encoder = dict(shapes)
    encoder[f"{prefix}out.2.weight"] = (shapes[f"{prefix}input_blocks.0.0.weight"][1], 1, 3, 3)
    hint = shapes[f"{prefix}input_hint_block.0.weight"][1]
    if f"{prefix}label_emb.0.0.weight" in shapes:
        detect, unet = _sdxl()
        config = detect.unet_config(encoder, prefix)
        return ControlNetConfig(unet=config, hint_channels=hint, unet_class=unet.SDXLUNetModel)
    return ControlNetConfig(unet=unet_config(encoder, prefix), hint_channels=hint)


def _depth(shapes: Shapes, base: str) -> int:
    depth = 0
    while f"{base}.transformer_blocks.{depth}.norm1.weight" in shapes:
        depth += 1
    return depth


def diffusers_config(shapes: Shapes) -> ControlNetConfig:
    """Config of a diffusers ``ControlNetModel`` file (SD1.x / SD2.x / SDXL encoder)."""
    first = shapes["conv_in.weight"]
    mc = first[0]
    mult, attention, depths = [], [], []
    depth, context, linear = 1, 768, False
    level = 0
    while f"down_blocks.{level}.resnets.0.conv1.weight" in shapes:
        mult.append(shapes[f"down_blocks.{level}.resnets.0.conv1.weight"][0] // mc)
        base = f"down_blocks.{level}.attentions.0"
        depths.append(_depth(shapes, base))
        if f"{base}.proj_in.weight" in shapes:
            attention.append(level)
            linear = len(shapes[f"{base}.proj_in.weight"]) == 2
            context = shapes[f"{base}.transformer_blocks.0.attn2.to_k.weight"][1]
            depth = depths[-1]
        level += 1
    blocks = 0
    while f"down_blocks.0.resnets.{blocks}.conv1.weight" in shapes:
        blocks += 1
    hint = shapes["controlnet_cond_embedding.conv_in.weight"][1]
    if "add_embedding.linear_1.weight" in shapes:
        _, unet = _sdxl()
        sdxl = unet.SDXLUNetConfig(
            in_channels=first[1],
            model_channels=mc,
            channel_mult=tuple(mult),
            num_res_blocks=blocks,
            transformer_depths=tuple(depths),
            middle_depth=_depth(shapes, "mid_block.attentions.0"),
            context_dim=context,
            adm_in_channels=shapes["add_embedding.linear_1.weight"][1],
        )
        return ControlNetConfig(unet=sdxl, hint_channels=hint, unet_class=unet.SDXLUNetModel)
    sd2 = context == 1024
    config = UNetConfig(
        in_channels=first[1],
        model_channels=mc,
        channel_mult=tuple(mult),
        num_res_blocks=blocks,
        attention_levels=tuple(attention),
        num_heads=SD1_HEADS,
        head_channels=64 if sd2 else None,
        transformer_depth=max(depth, 1),
        context_dim=context,
        use_linear_in_transformer=linear,
    )
    return ControlNetConfig(unet=config, hint_channels=hint)


def diffusers_names(config: ControlNetConfig, zero_convs: int) -> dict[str, str]:
    """ControlNet module layer name -> diffusers ``ControlNetModel`` layer name."""
    names = {
        ldm: name
        for ldm, name in unet_diffusers_names(config.unet).items()
        if ldm.startswith(ENCODER_PARTS)
    }
    names["input_hint_block.0"] = "controlnet_cond_embedding.conv_in"
    for i in range(6):
        names[f"input_hint_block.{2 * (i + 1)}"] = f"controlnet_cond_embedding.blocks.{i}"
    names["input_hint_block.14"] = "controlnet_cond_embedding.conv_out"
    for i in range(zero_convs):
        names[f"zero_convs.{i}.0"] = f"controlnet_down_blocks.{i}"
    names["middle_block_out.0"] = "controlnet_mid_block"
    return names


class RenamedView(Mapping[str, Any]):
    """Module-keyed lazy view of a file: ``module_key -> file[names(module_key)]``."""

    def __init__(self, source: Mapping[str, Any], keys: Mapping[str, str]) -> None:
        self.source = source
        self.keys = {k: v for k, v in keys.items() if v in source}

    def __getitem__(self, key: str) -> Any:
        return self.source[self.keys[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def file_keys(layout: Layout, module_keys: list[str], names: Mapping[str, str]) -> dict[str, str]:
    """Module state key -> the file's key for it, in ``layout``."""
    if layout.kind == "original":
        return {k: layout.prefix + k for k in module_keys}
    out = {}
    for key in module_keys:
        layer, _, suffix = key.rpartition(".")
        if key.startswith(UNION_PARTS):  # diffusers keeps these names; its attention is fused
            out[key] = key.replace(".attn.in_proj.", ".attn.in_proj_")
        else:
            out[key] = f"{names.get(layer, layer)}.{suffix}"
    return out


def union_types(shapes: Shapes, prefix: str = "") -> tuple[int, int] | None:
    """``(control types, token width)`` of a union ControlNet, else None."""
    shape = shapes.get(f"{prefix}task_embedding")
    return None if shape is None else (shape[0], shape[1])
