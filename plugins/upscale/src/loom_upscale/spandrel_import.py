"""Importing spandrel where torchvision is not installed.

spandrel's package ``__init__`` imports every architecture it knows, and two of them import
torchvision at module level: RestoreFormer (``normalize``, face restoration) and LaMa
(``rotate`` and ``InterpolationMode``, inpainting). No upscaling architecture uses
torchvision, and torchvision cannot be installed beside a CPU-only torch here without
pulling another torch build. So where torchvision is missing, spandrel is imported with a
stand-in ``torchvision.transforms.functional`` in ``sys.modules`` for the length of that
one import, and the stand-in is removed afterwards: no other code ever sees it.

The stand-in's ``normalize`` is the real formula (so RestoreFormer works); its ``rotate``
raises a :class:`~loom.errors.LoomError` saying torchvision is needed (LaMa is an inpainting
model, which the upscale nodes refuse anyway). Where torchvision is installed it is used.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

import torch

from loom.errors import LoomError

_STAND_IN_MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
_lock = threading.Lock()

INSTALL_HINT = (
    "install it without its dependencies (its torchvision requirement would pull another "
    "torch build): pip install --no-deps spandrel einops"
)


class InterpolationMode(enum.Enum):
    """torchvision's interpolation names, as LaMa's module refers to them at import."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def normalize(
    tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float], inplace: bool = False
) -> torch.Tensor:
    """torchvision's ``normalize``: ``(tensor - mean) / std`` per channel of a ``[..., C, H, W]``."""
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    if inplace:
        return tensor.sub_(mean_t).div_(std_t)
    return (tensor - mean_t) / std_t


def rotate(*args: Any, **kwargs: Any) -> torch.Tensor:
    """Stands for torchvision's ``rotate``, which only LaMa (inpainting) calls."""
    raise LoomError(
        "this spandrel architecture rotates images with torchvision, which is not installed",
        hint="install torchvision built for your torch, or use an upscale model",
    )


def _stand_in() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = InterpolationMode  # type: ignore[attr-defined]
    functional.normalize = normalize  # type: ignore[attr-defined]
    functional.rotate = rotate  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    modules = (root, transforms, functional)
    return dict(zip(_STAND_IN_MODULES, modules, strict=True))


def import_spandrel() -> types.ModuleType:
    """The ``spandrel`` module, imported (once) with or without torchvision installed.

    :raises LoomError: spandrel (or a dependency it imports, such as einops) is not installed.
    """
    with _lock:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        if importlib.util.find_spec("spandrel") is None:
            raise LoomError("the spandrel library is not installed", hint=INSTALL_HINT)
        need_stand_in = importlib.util.find_spec("torchvision") is None
        added = _stand_in() if need_stand_in else {}
        sys.modules.update(added)
        try:
            return importlib.import_module("spandrel")
        except ImportError as exc:
            raise LoomError(f"spandrel cannot be imported: {exc}", hint=INSTALL_HINT) from exc
        finally:
            for name, module in added.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]
