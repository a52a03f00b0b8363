"""Upscale model files -> :class:`~loom_upscale.model.UpscaleModel`, through spandrel.

The file is read as safetensors by Loom (never unpickled) and the state dict handed to
spandrel's ``ModelLoader.load_from_state_dict``, which knows the architecture (ESRGAN /
Real-ESRGAN, SwinIR, HAT, DAT, OmniSR, ...) from the keys and shapes. As in ComfyUI,
SwinIR-style files saved from ``DataParallel`` (``module.layers.0...``) lose their
``module.`` prefix first, and only single-image models are accepted.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom.errors import ModelFileError

if TYPE_CHECKING:
    from loom_upscale.model import UpscaleModel

log = logging.getLogger(__name__)

#: The folder key ComfyUI lists upscale models from.
FOLDER = "upscale_models"
#: Extensions read as safetensors (ComfyUI reads ``.sft`` as safetensors too).
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
#: A key of SwinIR files saved from ``torch.nn.DataParallel`` (prefixed ``module.``).
_DATA_PARALLEL_KEY = "module.layers.0.residual_group.blocks.0.norm1.weight"
_KEYS_SHOWN = 6


class UpscaleModelError(ModelFileError):
    """An upscale model file Loom cannot use; the message names node, input and file."""


def where(node: str, input_name: str, path: Path | str) -> str:
    """``"UpscaleModelLoader, input 'model_name', file 'x.safetensors'"``."""
    return f"{node}, input {input_name!r}, file {Path(path).name!r}"


def read_state_dict(path: Path, context: str) -> dict[str, Any]:
    """The tensors of safetensors file ``path`` (memory-mapped CPU tensors).

    :raises UpscaleModelError: another format (a pickle ``.pth``), or a broken file.
    """
    from loom.memory import open_safetensors

    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise UpscaleModelError(
            f"{context}: {path.suffix or 'no'} files are not loaded: Loom only loads "
            ".safetensors files and never unpickles model files",
            hint="use the .safetensors release of this model, or convert the file to "
            "safetensors with a tool you trust",
        )
    try:
        tensors = open_safetensors(path)
        return {key: tensors[key] for key in tensors}
    except ModelFileError as exc:
        raise UpscaleModelError(f"{context}: {exc.message}", hint=exc.hint) from exc


def _shown_keys(state_dict: dict[str, Any]) -> str:
    keys = sorted(state_dict)
    more = f" (+{len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else ""
    return ", ".join(keys[:_KEYS_SHOWN]) + more


def describe(state_dict: dict[str, Any], context: str) -> Any:
    """spandrel's single-image descriptor for ``state_dict``.

    :raises UpscaleModelError: spandrel knows no architecture with these keys, the weights
        do not fit the architecture it detected, or the model is not a single-image model.
    """
    from loom_upscale.spandrel_import import import_spandrel

    spandrel = import_spandrel()
    if _DATA_PARALLEL_KEY in state_dict:
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    if not state_dict:
        raise UpscaleModelError(f"{context}: the file holds no tensors")
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as exc:
        raise UpscaleModelError(
            f"{context}: not an upscale model of an architecture spandrel knows "
            f"(keys: {_shown_keys(state_dict)})",
            hint="spandrel recognises ESRGAN/Real-ESRGAN, SwinIR, HAT, DAT, OmniSR, SPAN, "
            "Compact and others by their keys; is this file an upscale model?",
        ) from exc
    except (KeyError, RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise UpscaleModelError(
            f"{context}: its weights do not fit the architecture they look like "
            f"({type(exc).__name__}: {exc})",
            hint="the file may be truncated or edited; download it again",
        ) from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscaleModelError(
            f"{context}: a {descriptor.architecture.id} model takes more than one image "
            "(an inpainting model, say); upscale models must be single-image models"
        )
    return descriptor.eval()


def load_upscale_model(path: Path, context: str) -> UpscaleModel:
    """Read ``path`` and build its model on the CPU; ``context`` prefixes error messages."""
    started = time.perf_counter()
    descriptor = describe(read_state_dict(path, context), context)
    from loom_upscale.model import UpscaleModel

    model = UpscaleModel.from_descriptor(descriptor, path)
    log.info(
        "loaded upscale model %s (%s, %dx, %.1f MB) in %.2f s",
        path.name,
        model.architecture,
        model.scale,
        path.stat().st_size / 2**20,
        time.perf_counter() - started,
    )
    return model
