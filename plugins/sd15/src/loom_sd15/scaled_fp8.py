"""Scaled-fp8 and NVFP4 diffusion models (ComfyUI's ``scaled_fp8`` / ``comfy_quant`` layouts)
for the families built on these loaders (SD1.x/2.x, SDXL, Flux): the layers the file scales
become :class:`~loom.memory.ScaledLinear` (NvFp4Linear / MxFp8Linear for nvfp4 / mxfp8) and
load from a :class:`~loom.memory.ScaledView` of the file, as ComfyUI loads any such model
whatever its family."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from loom.errors import ModelFileError
from loom.memory import QuantLayoutError, ScaledView, scale_layers
from loom_sd15.convert import Conversion

log = logging.getLogger(__name__)


def scaled_view(module: torch.nn.Module, view: Mapping[str, Any], file: str) -> Mapping[str, Any]:
    """Make the layers of ``module`` that ``view`` (module-keyed) scales ScaledLinear; the
    view those layers load from.

    :raises ModelFileError: an unsupported quantisation format, a scale naming no linear
        layer of the model, or an nvfp4 layer whose tensors do not fit its layer.
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
