"""Scaled-fp8 and NVFP4 / MXFP8 diffusion models (ComfyUI's ``scaled_fp8`` / ``comfy_quant``
layouts) for the families built on these loaders (SD1.x/2.x, SDXL, Flux): the layers the file
scales become :class:`~loom.memory.ScaledLinear` (NvFp4Linear / MxFp8Linear for nvfp4 / mxfp8)
and load from a :class:`~loom.memory.ScaledView` of the file, as ComfyUI loads any such model
whatever its family.

CLIP text encoders are the exception (:func:`refuse_scaled_clip`): ComfyUI 0.8 builds them
with plain cast layers whatever the file says. Its loader does turn a file's
``_quantization_metadata`` into ``comfy_quant`` configs for every layer named, text-encoder
layers included (``comfy/utils.py`` ``convert_old_quants``), but only the T5 and LLM encoder
classes read them (``t5_xxl_detect`` and friends pass ``quantization_metadata`` to their
``SDClipModel``); CLIP-L/G (``SD1ClipModel``, ``SDXLClipModel``, Flux's and SD3's ``clip_l``)
never receive it, so the configs and scales are ignored and the fp8 values used unscaled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from loom.errors import ModelFileError
from loom.memory import QuantLayoutError, ScaledView, is_scaled_fp8, scale_layers
from loom_sd15.convert import Conversion

log = logging.getLogger(__name__)


def scaled_view(module: torch.nn.Module, view: Mapping[str, Any], file: str) -> Mapping[str, Any]:
    """Make the layers of ``module`` that ``view`` (module-keyed) quantises ScaledLinear
    (NvFp4Linear / MxFp8Linear for nvfp4 / mxfp8 layers); the view those layers load from.

    :raises ModelFileError: an unsupported quantisation format, a scale naming no linear
        layer of the model, or an nvfp4 / mxfp8 layer whose tensors do not fit its layer.
    """
    try:
        scaled = ScaledView(view)
    except ValueError as exc:
        raise ModelFileError(
            f"{file}: {exc}",
            hint="use a scaled-fp8 (float8_e4m3fn / float8_e5m2), nvfp4 or mxfp8 file",
        ) from exc
    try:
        count = scale_layers(module, scaled.layers)
    except QuantLayoutError as exc:
        raise ModelFileError(
            f"{file}: {exc}",
            hint="the file may be damaged, or quantised for another model of this family",
        ) from exc
    except KeyError as exc:
        raise ModelFileError(
            f"{file}: scaled-fp8 scale {exc.args[0]} names no linear layer of the model",
            hint="the file may be truncated, merged badly, or a variant this plugin does not support",
        ) from exc
    log.debug("%s: %d scaled-fp8 layers", file, count)
    return scaled


def scaled_source(
    module: torch.nn.Module, conversion: Conversion, state: Mapping[str, Any], file: str
) -> tuple[Conversion, Mapping[str, Any]]:
    """``(conversion, state)`` to load ``module`` from when ``conversion``'s part of ``state``
    is scaled fp8: the part seen through :func:`scaled_view`, keyed as the module names it."""
    view = scaled_view(module, conversion.view(state), file)
    return attrs.evolve(conversion, source_prefix="", target_prefix=""), view


def refuse_scaled_clip(state: Mapping[str, Any], prefix: str, file: str, what: str) -> None:
    """Stop loading a CLIP text encoder (keys of ``state`` under ``prefix``) stored as scaled
    fp8 (``scale_weight`` / ``weight_scale`` with ``comfy_quant``, however described: tensors,
    or the header's ``_quantization_metadata`` applied to ``state``).

    ComfyUI would load it without its scales (see the module docstring): an encoder giving
    conditioning no one intended, which Loom does not reproduce.

    :raises ModelFileError: naming ``file``, the encoder (``what``) and one scaled layer.
    """
    if not is_scaled_fp8(state, prefix):
        return
    suffixes = (".comfy_quant", ".scale_weight", ".weight_scale")
    key = next((k for k in state if k.startswith(prefix) and k.endswith(suffixes)), None)
    where = f"layer {key.rsplit('.', 1)[0]}" if key else f"{prefix}scaled_fp8"
    raise ModelFileError(
        f"{file}: its {what} text encoder is stored as scaled fp8 ({where}); ComfyUI builds "
        "quantised layers only for T5 and LLM text encoders and would run this one without "
        "its scales, so Loom does not load it",
        hint=f"use an fp16, bf16 or plain fp8 {what} (scaled fp8 is supported for T5-XXL)",
    )
