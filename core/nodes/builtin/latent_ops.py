"""Latent arithmetic and transforms: add, subtract, multiply, interpolate, blend, batch,
rotate, flip and crop.

ComfyUI's ``comfy_extras/nodes_latent.py`` and the latent transforms of its ``nodes.py``.
Each node returns a shallow copy of its first latent with new ``samples``, so
``noise_mask`` and ``batch_index`` travel along as in ComfyUI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import loom
from loom.input_checks import check_batches
from loom.nodes.builtin.compositing import check_channels, repeat_to_batch
from loom.nodes.builtin.image import MAX_RESOLUTION
from loom.nodes.builtin.image_ops import FLIP_METHODS, ROTATIONS, quarter_turns
from loom.resample import common_upscale
from loom.types import Latent

ui = loom.ui


def fit_latent(target_shape: Any, latent: Any, *, repeat_batch: bool = True) -> Any:
    """Resize ``latent`` to ``target_shape``'s size (bilinear, centre crop) and, with
    ``repeat_batch``, tile or trim it to the target batch (ComfyUI's ``reshape_latent_to``)."""
    if latent.shape[1:] != target_shape[1:]:
        latent = common_upscale(latent, target_shape[-1], target_shape[-2], "bilinear", "center")
    return repeat_to_batch(latent, target_shape[0]) if repeat_batch else latent


def _with_samples(latent: Latent, samples: Any) -> Latent:
    return {**latent, "samples": samples}


@loom.node("LatentAdd", category="latent/advanced", v3=True)
class LatentAdd:
    samples1: Latent
    samples2: Latent

    def run(self, ctx: loom.RunContext) -> Latent:
        s1 = self.samples1["samples"]
        check_channels("LatentAdd", s1, self.samples2["samples"], ("samples1", "samples2"))
        return _with_samples(self.samples1, s1 + fit_latent(s1.shape, self.samples2["samples"]))


@loom.node("LatentSubtract", category="latent/advanced", v3=True)
class LatentSubtract:
    samples1: Latent
    samples2: Latent

    def run(self, ctx: loom.RunContext) -> Latent:
        s1 = self.samples1["samples"]
        check_channels("LatentSubtract", s1, self.samples2["samples"], ("samples1", "samples2"))
        return _with_samples(self.samples1, s1 - fit_latent(s1.shape, self.samples2["samples"]))


@loom.node("LatentMultiply", category="latent/advanced", v3=True)
class LatentMultiply:
    samples: Latent
    multiplier: float = ui.float(1.0, min=-10.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Latent:
        return _with_samples(self.samples, self.samples["samples"] * self.multiplier)


@loom.node("LatentInterpolate", category="latent/advanced", v3=True)
class LatentInterpolate:
    # Interpolates directions and magnitudes of the per-pixel channel vectors separately.

    samples1: Latent
    samples2: Latent
    ratio: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        s1 = self.samples1["samples"]
        check_channels("LatentInterpolate", s1, self.samples2["samples"], ("samples1", "samples2"))
        s2 = fit_latent(s1.shape, self.samples2["samples"])
        # Norms keep their channel dim; ComfyUI drops it, which only broadcasts for batch 1
        # (identical results there).
        m1 = torch.linalg.vector_norm(s1, dim=1, keepdim=True)
        m2 = torch.linalg.vector_norm(s2, dim=1, keepdim=True)
        mixed = torch.nan_to_num(s1 / m1) * self.ratio + torch.nan_to_num(s2 / m2) * (
            1.0 - self.ratio
        )
        direction = torch.nan_to_num(mixed / torch.linalg.vector_norm(mixed, dim=1, keepdim=True))
        magnitude = m1 * self.ratio + m2 * (1.0 - self.ratio)
        return _with_samples(self.samples1, direction * magnitude)


@loom.node("LatentBatch", category="latent/batch", deprecated=True, v3=True)
class LatentBatch:
    samples1: Latent
    samples2: Latent

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        s1 = self.samples1["samples"]
        check_channels("LatentBatch", s1, self.samples2["samples"], ("samples1", "samples2"))
        s2 = fit_latent(s1.shape, self.samples2["samples"], repeat_batch=False)
        first = self.samples1.get("batch_index", list(range(s1.shape[0])))
        second = self.samples2.get("batch_index", list(range(s2.shape[0])))
        out = _with_samples(self.samples1, torch.cat((s1, s2), dim=0))
        out["batch_index"] = list(first) + list(second)
        return out


@loom.node("LatentBlend", category="_for_testing", display_name="Latent Blend")
class LatentBlend:
    samples1: Latent
    samples2: Latent
    blend_factor: float = ui.float(0.5, min=0, max=1, step=0.01)

    def run(self, ctx: loom.RunContext) -> Latent:
        s1 = self.samples1["samples"]
        s2 = self.samples2["samples"]
        check_channels("LatentBlend", s1, s2, ("samples1", "samples2"))
        check_batches(
            "LatentBlend", {"samples1": s1, "samples2": s2}, broadcast=("samples1", "samples2")
        )
        if s1.shape != s2.shape:
            s2 = common_upscale(s2, s1.shape[3], s1.shape[2], "bicubic", "center")
        blended = s1 * self.blend_factor + s2 * (1 - self.blend_factor)
        return _with_samples(self.samples1, blended)


@loom.node("LatentRotate", category="latent/transform", display_name="Rotate Latent")
class LatentRotate:
    samples: Latent
    rotation: str = ui.combo(ROTATIONS)

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        turns = quarter_turns(self.rotation)
        return _with_samples(
            self.samples, torch.rot90(self.samples["samples"], k=turns, dims=[3, 2])
        )


@loom.node("LatentFlip", category="latent/transform", display_name="Flip Latent")
class LatentFlip:
    samples: Latent
    flip_method: str = ui.combo(FLIP_METHODS)

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        axis = 2 if self.flip_method.startswith("x") else 3
        return _with_samples(self.samples, torch.flip(self.samples["samples"], dims=[axis]))


@loom.node("LatentCrop", category="latent/transform", display_name="Crop Latent")
class LatentCrop:
    samples: Latent
    width: int = ui.int(512, min=64, max=MAX_RESOLUTION, step=8)
    height: int = ui.int(512, min=64, max=MAX_RESOLUTION, step=8)
    x: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    y: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)

    def run(self, ctx: loom.RunContext) -> Latent:
        latent = self.samples["samples"]
        # The origin stays at least 8 latent pixels (64 image pixels) inside each edge.
        x = min(self.x // 8, latent.shape[3] - 8)
        y = min(self.y // 8, latent.shape[2] - 8)
        cropped = latent[:, :, y : y + self.height // 8, x : x + self.width // 8]
        return _with_samples(self.samples, cropped)


_EXTRAS = (LatentAdd, LatentSubtract, LatentMultiply, LatentInterpolate, LatentBatch)
_CORE = (LatentBlend, LatentRotate, LatentFlip, LatentCrop)
NODES: tuple[type, ...] = _EXTRAS + _CORE


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in _EXTRAS:
        register(node_class, python_module="comfy_extras.nodes_latent")
    for node_class in _CORE:
        register(node_class, python_module="nodes")
