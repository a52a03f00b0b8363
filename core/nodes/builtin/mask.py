"""Mask nodes: solid masks, inversion, image/mask conversion, growing and feathering.

MASK tensors are ``[B, H, W]`` floats in ``[0, 1]`` (a ``[H, W]`` mask is read as batch 1).
"""

from __future__ import annotations

from collections.abc import Callable

import loom
from loom.nodes.builtin.image import MAX_RESOLUTION
from loom.types import Image, Mask

ui = loom.ui

IMAGE_CHANNELS = ("red", "green", "blue", "alpha")


def batched_mask(mask: Mask) -> Mask:
    """``[B, H, W]`` view of a mask given as ``[H, W]``, ``[B, H, W]`` or ``[B, 1, H, W]``."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


@loom.node("SolidMask", category="mask", v3=True)
class SolidMask:
    value: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)
    width: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)
    height: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)

    def run(self, ctx: loom.RunContext) -> Mask:
        import torch

        return torch.full((1, self.height, self.width), self.value, dtype=torch.float32)


@loom.node("InvertMask", category="mask", v3=True)
class InvertMask:
    mask: Mask

    def run(self, ctx: loom.RunContext) -> Mask:
        return 1.0 - self.mask


@loom.node("MaskToImage", category="mask", display_name="Convert Mask to Image", v3=True)
class MaskToImage:
    mask: Mask

    def run(self, ctx: loom.RunContext) -> Image:
        return batched_mask(self.mask).unsqueeze(-1).expand(-1, -1, -1, 3)


@loom.node("ImageToMask", category="mask", display_name="Convert Image to Mask", v3=True)
class ImageToMask:
    image: Image
    channel: str = ui.combo(IMAGE_CHANNELS)

    def run(self, ctx: loom.RunContext) -> Mask:
        return self.image[:, :, :, IMAGE_CHANNELS.index(self.channel)]


@loom.node("ImageColorToMask", category="mask", v3=True)
class ImageColorToMask:
    image: Image
    color: int = ui.int(0, min=0, max=0xFFFFFF, step=1, display="number")

    def run(self, ctx: loom.RunContext) -> Mask:
        import torch

        rgb = (torch.clamp(self.image, 0, 1.0) * 255.0).round().to(torch.int)
        packed = (rgb[..., 0] << 16) + (rgb[..., 1] << 8) + rgb[..., 2]
        return (packed == self.color).float()


def grow(mask: Mask, expand: int, tapered_corners: bool) -> Mask:
    """Grey dilation (``expand > 0``) or erosion (``< 0``), ``|expand|`` times, with a 3x3 cross
    (tapered) or square footprint; edges repeat the border pixel (scipy's ``reflect``)."""
    import torch

    footprint = [
        (dy, dx)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if not (tapered_corners and dy != 0 and dx != 0)
    ]
    reduce = torch.amin if expand < 0 else torch.amax
    out = batched_mask(mask).clone()
    height, width = out.shape[-2:]
    for _ in range(abs(expand)):
        padded = torch.nn.functional.pad(out.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(
            1
        )
        shifted = [
            padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in footprint
        ]
        grown = reduce(torch.stack(shifted), dim=0)
        if torch.equal(grown, out):  # a fixed point: further steps change nothing
            break
        out = grown
    return out


@loom.node("GrowMask", category="mask", display_name="Grow Mask", v3=True)
class GrowMask:
    mask: Mask
    expand: int = ui.int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1)
    tapered_corners: bool = ui.boolean(True)

    def run(self, ctx: loom.RunContext) -> Mask:
        return grow(self.mask, self.expand, self.tapered_corners)


@loom.node("FeatherMask", category="mask", v3=True)
class FeatherMask:
    mask: Mask
    left: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    top: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    right: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    bottom: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)

    def run(self, ctx: loom.RunContext) -> Mask:
        out = batched_mask(self.mask).clone()
        height, width = out.shape[-2:]
        left, right = min(self.left, width), min(self.right, width)
        top, bottom = min(self.top, height), min(self.bottom, height)
        # Linear ramps (i + 1) / n. The right and bottom ramps index ``-i`` as ComfyUI does, so
        # their first step lands on column/row 0 and the outermost pixel gets 2 / n: kept for
        # identical output.
        for i in range(left):
            out[:, :, i] *= (i + 1.0) / left
        for i in range(right):
            out[:, :, -i] *= (i + 1) / right
        for i in range(top):
            out[:, i, :] *= (i + 1) / top
        for i in range(bottom):
            out[:, -i, :] *= (i + 1) / bottom
        return out


NODES: tuple[type, ...] = (
    SolidMask,
    InvertMask,
    MaskToImage,
    ImageToMask,
    ImageColorToMask,
    GrowMask,
    FeatherMask,
)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="comfy_extras.nodes_mask")
