"""Diffusers-layout UNet and VAE files read as LDM ones, by name only.

A diffusers folder (``DiffusersLoader``) or a file saved by ``diffusers`` keeps the UNet as
``UNet2DConditionModel`` (``down_blocks.0.resnets.0.conv1``) and the VAE as ``AutoencoderKL``
(``encoder.down_blocks.0.resnets.0.conv1``), where the families' modules use the LDM names
(``input_blocks.1.0.in_layers.2``, ``encoder.down.0.block.0.conv1``). :func:`ldm_names` gives,
for such a file, every LDM key and the file key holding its tensor; :func:`ldm_shapes` and
:func:`ldm_state` show the file under those names, so detection and loading run unchanged. The
UNet names are :func:`loom_sd15.adapter_keys.unet_diffusers_names` read backwards, with the
levels, blocks and transformer depths counted from the file's keys (SD1.x and SDXL alike).
Files in any other layout pass through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from loom.types import CheckpointHeader
from loom_sd15.adapter_keys import unet_diffusers_names

Shapes = Mapping[str, tuple[int, ...]]

VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2"}
#: diffusers' VAE mid-block attention (current and pre-0.14 names) -> LDM ``attn_1``
VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
    "query": "q",
    "key": "k",
    "value": "v",
    "proj_attn": "proj_out",
}
_VAE_KEY = re.compile(r"(encoder|decoder)\.(.+)\.(weight|bias)")


def is_diffusers_unet(keys: Shapes) -> bool:
    """A bare ``UNet2DConditionModel`` state dict (not a ControlNet: it has ``up_blocks``)."""
    return (
        "conv_in.weight" in keys
        and "time_embedding.linear_1.weight" in keys
        and "down_blocks.0.resnets.0.conv1.weight" in keys
        and "conv_out.weight" in keys
    )


def is_diffusers_vae(keys: Shapes) -> bool:
    """A bare diffusers ``AutoencoderKL`` state dict."""
    return (
        "encoder.down_blocks.0.resnets.0.conv1.weight" in keys
        and "decoder.up_blocks.0.resnets.0.conv1.weight" in keys
    )


@attrs.frozen
class _UNetShape:
    """What :func:`unet_diffusers_names` reads of a config, counted from diffusers keys."""

    channel_mult: tuple[int, ...]
    num_res_blocks: int
    transformer_depths: tuple[int, ...]
    middle_depth: int
    adm_in_channels: int | None


def _count(keys: Shapes, pattern: str) -> int:
    n = 0
    while pattern.format(n) in keys:
        n += 1
    return n


def _unet_shape(keys: Shapes) -> _UNetShape:
    levels = _count(keys, "down_blocks.{}.resnets.0.conv1.weight")
    depths = tuple(
        _count(keys, f"down_blocks.{level}.attentions.0.transformer_blocks.{{}}.norm1.weight")
        for level in range(levels)
    )
    return _UNetShape(
        channel_mult=tuple(range(1, levels + 1)),
        num_res_blocks=_count(keys, "down_blocks.0.resnets.{}.conv1.weight"),
        transformer_depths=depths,
        middle_depth=_count(keys, "mid_block.attentions.0.transformer_blocks.{}.norm1.weight"),
        adm_in_channels=(keys.get("add_embedding.linear_1.weight") or (0, 0))[1] or None,
    )


def _unet_names(keys: Shapes) -> dict[str, str]:
    names = {}
    for ldm, diffusers in unet_diffusers_names(_unet_shape(keys)).items():
        for param in ("weight", "bias"):
            if f"{diffusers}.{param}" in keys:
                names[f"{ldm}.{param}"] = f"{diffusers}.{param}"
    return names


def _vae_layer(side: str, layer: str, levels: int) -> str | None:
    """An ``AutoencoderKL`` layer name (after ``encoder.`` / ``decoder.``) -> LDM's."""
    parts = layer.split(".")
    if layer in ("conv_in", "conv_out"):
        return layer
    if layer == "conv_norm_out":
        return "norm_out"
    if parts[0] == "mid_block" and parts[1] == "resnets" and len(parts) == 4:
        return f"mid.block_{int(parts[2]) + 1}.{VAE_RESNET.get(parts[3], parts[3])}"
    if parts[0] == "mid_block" and parts[1] == "attentions":
        rest = ".".join(parts[3:])
        return f"mid.attn_1.{VAE_ATTENTION[rest]}" if rest in VAE_ATTENTION else None
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) >= 4:
        level = int(parts[1])
        where = "down" if side == "encoder" else "up"
        if side == "decoder":
            level = levels - 1 - level
        if parts[2] == "resnets" and len(parts) == 5:
            part = "nin_shortcut" if parts[4] == "conv_shortcut" else parts[4]
            return f"{where}.{level}.block.{parts[3]}.{part}"
        if parts[2] in ("downsamplers", "upsamplers") and parts[4:] == ["conv"]:
            sample = "downsample" if side == "encoder" else "upsample"
            return f"{where}.{level}.{sample}.conv"
    return None


def _vae_names(keys: Shapes) -> dict[str, str]:
    levels = _count(keys, "decoder.up_blocks.{}.resnets.0.conv1.weight")
    names = {}
    for key in keys:
        match = _VAE_KEY.fullmatch(key)
        layer = _vae_layer(match[1], match[2], levels) if match else None
        if match is None or layer is None:
            names[key] = key  # quant convs keep their names; strays surface at the check
        else:
            names[f"{match[1]}.{layer}.{match[3]}"] = key
    return names


def ldm_names(keys: Shapes) -> dict[str, str] | None:
    """LDM key -> file key for a diffusers-layout UNet or VAE file; None for any other."""
    if is_diffusers_unet(keys):
        names = _unet_names(keys)
        mapped = set(names.values())
        names.update({k: k for k in keys if k not in mapped})
        return names
    if is_diffusers_vae(keys):
        return _vae_names(keys)
    return None


def ldm_shapes(shapes: Shapes) -> dict[str, tuple[int, ...]]:
    """``shapes`` under LDM names (as they are for a file in any other layout)."""
    names = ldm_names(shapes)
    if names is None:
        return dict(shapes)
    return {ldm: tuple(shapes[key]) for ldm, key in names.items()}


class _Renamed(Mapping[str, Any]):
    """``state`` seen under LDM names; tensors are read only when asked for."""

    def __init__(self, state: Mapping[str, Any], names: Mapping[str, str]) -> None:
        self._state = state
        self._names = names

    def __getitem__(self, key: str) -> Any:
        return self._state[self._names[key]]

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def ldm_state(header: CheckpointHeader, state: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` (the file of ``header``, opened) under LDM names when it is in diffusers'
    layout, else ``state`` itself."""
    names = ldm_names({k: tuple(v.shape) for k, v in header.tensors.items()})
    return state if names is None else _Renamed(state, names)
