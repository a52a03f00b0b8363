"""PorterDuffImageComposite: the Porter-Duff compositing operators (and the blend modes
ComfyUI lists with them) on images with separate MASK alphas, as in ComfyUI's
``comfy_extras/nodes_compositing.py``.

Masks are inverted alpha (1 = transparent). Images are premultiplied before the operator and
divided back after it; the output mask is again ``1 - alpha``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import loom
from loom.nodes.builtin.mask import batched_mask
from loom.resample import common_upscale
from loom.types import Image, Mask

ui = loom.ui

#: ``mode -> (alpha, premultiplied colour)`` from source alpha ``sa``, destination alpha
#: ``da`` and premultiplied colours ``s``, ``d``.
Operator = Callable[[Any, Any, Any, Any], tuple[Any, Any]]


def _union(sa: Any, da: Any) -> Any:
    return sa + da - sa * da


def _add(sa: Any, da: Any, s: Any, d: Any) -> tuple[Any, Any]:
    return (sa + da).clamp(0, 1), (s + d).clamp(0, 1)


def _clear(sa: Any, da: Any, s: Any, d: Any) -> tuple[Any, Any]:
    return da * 0, d * 0


def _darken(sa: Any, da: Any, s: Any, d: Any) -> tuple[Any, Any]:
    import torch

    return _union(sa, da), (1 - da) * s + (1 - sa) * d + torch.minimum(s, d)


def _lighten(sa: Any, da: Any, s: Any, d: Any) -> tuple[Any, Any]:
    import torch

    return _union(sa, da), (1 - da) * s + (1 - sa) * d + torch.maximum(s, d)


def _overlay(sa: Any, da: Any, s: Any, d: Any) -> tuple[Any, Any]:
    import torch

    return _union(sa, da), torch.where(2 * d < da, 2 * s * d, sa * da - 2 * (da - s) * (sa - d))


# Listed in ComfyUI's order (its enum's), which is the combo's order.
OPERATORS: dict[str, Operator] = {
    "ADD": _add,
    "CLEAR": _clear,
    "DARKEN": _darken,
    "DST": lambda sa, da, s, d: (da, d),
    "DST_ATOP": lambda sa, da, s, d: (sa, sa * d + (1 - da) * s),
    "DST_IN": lambda sa, da, s, d: (sa * da, d * sa),
    "DST_OUT": lambda sa, da, s, d: ((1 - sa) * da, (1 - sa) * d),
    "DST_OVER": lambda sa, da, s, d: (da + (1 - da) * sa, d + (1 - da) * s),
    "LIGHTEN": _lighten,
    "MULTIPLY": lambda sa, da, s, d: (sa * da, s * d),
    "OVERLAY": _overlay,
    "SCREEN": lambda sa, da, s, d: (_union(sa, da), s + d - s * d),
    "SRC": lambda sa, da, s, d: (sa, s),
    "SRC_ATOP": lambda sa, da, s, d: (da, da * s + (1 - sa) * d),
    "SRC_IN": lambda sa, da, s, d: (sa * da, s * da),
    "SRC_OUT": lambda sa, da, s, d: ((1 - da) * sa, (1 - da) * s),
    "SRC_OVER": lambda sa, da, s, d: (sa + (1 - sa) * da, s + (1 - sa) * d),
    "XOR": lambda sa, da, s, d: ((1 - da) * sa + (1 - sa) * da, (1 - da) * s + (1 - sa) * d),
}


def porter_duff(
    source: Image, source_mask: Any, destination: Image, destination_mask: Any, mode: str
) -> tuple[Image, Any]:
    """Composite ``[B, H, W, C]`` images with ``[B, H, W, 1]`` masks of the same size."""
    import torch

    sa, da = 1 - source_mask, 1 - destination_mask
    alpha, colour = OPERATORS[mode](sa, da, source * sa, destination * da)
    straight = torch.where(alpha > 1e-5, colour / alpha, torch.zeros_like(colour))
    return straight.clamp(0, 1), 1 - alpha


def _fit(tensor: Any, height: int, width: int) -> Any:
    """``[B, H, W, C]`` resized bicubically with a centre crop when its size differs."""
    if tuple(tensor.shape[1:3]) == (height, width):
        return tensor
    return common_upscale(tensor.movedim(-1, 1), width, height, "bicubic", "center").movedim(1, -1)


@loom.outputs
class ImageWithMask:
    image: Image = loom.output(name="IMAGE")
    mask: Mask = loom.output(name="MASK")


@loom.node(
    "PorterDuffImageComposite",
    category="mask/compositing",
    display_name="Porter-Duff Image Composite",
    v3=True,
)
class PorterDuffImageComposite:
    source: Image
    source_alpha: Mask
    destination: Image
    destination_alpha: Mask
    mode: str = ui.combo(tuple(OPERATORS), default="DST")

    def run(self, ctx: loom.RunContext) -> ImageWithMask:
        source_mask = batched_mask(self.source_alpha).unsqueeze(-1)
        destination_mask = batched_mask(self.destination_alpha).unsqueeze(-1)
        if self.source.shape[-1] != self.destination.shape[-1]:
            raise ValueError(
                f"PorterDuffImageComposite: source has {self.source.shape[-1]} channels but "
                f"destination has {self.destination.shape[-1]}; they must match"
            )
        # Items past the shortest of the four batches are dropped, as ComfyUI does.
        count = min(
            len(self.source), len(source_mask), len(self.destination), len(destination_mask)
        )
        destination = self.destination[:count]
        height, width = destination.shape[1:3]
        image, alpha = porter_duff(
            _fit(self.source[:count], height, width),
            _fit(source_mask[:count], height, width),
            destination,
            _fit(destination_mask[:count], height, width),
            self.mode,
        )
        return ImageWithMask(image=image, mask=alpha.squeeze(-1))


NODES: tuple[type, ...] = (PorterDuffImageComposite,)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="comfy_extras.nodes_compositing")
