"""Grey-scale morphology and YCbCr channel split/merge: ComfyUI's
``comfy_extras/nodes_morphology.py``, which calls kornia 0.8; here in plain torch with
kornia's rules.

Morphology uses a flat square ``kernel_size`` footprint anchored at ``kernel_size // 2``
(an even size reaches one pixel further up/left than down/right) and kornia's "geodesic"
border: pixels outside the image are ignored. The YCbCr coefficients are kornia's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import loom
from loom.errors import NodeInputError
from loom.types import Image

ui = loom.ui

OPERATIONS = ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat")


def dilate(images: Any, size: int) -> Any:
    """Max over each pixel's ``size`` x ``size`` neighbourhood of ``[B, C, H, W]`` images."""
    import torch

    before = size // 2
    after = size - before - 1
    # Padding with -inf leaves out-of-image pixels out of every maximum; max over a square is
    # a max over rows then over columns.
    padded = torch.nn.functional.pad(images, (before, after, before, after), value=-float("inf"))
    rows = torch.nn.functional.max_pool2d(padded, (1, size), stride=1)
    return torch.nn.functional.max_pool2d(rows, (size, 1), stride=1)


def erode(images: Any, size: int) -> Any:
    """Min over each pixel's ``size`` x ``size`` neighbourhood (see :func:`dilate`)."""
    return -dilate(-images, size)


def morphology(images: Any, operation: str, size: int) -> Any:
    """One of :data:`OPERATIONS` on ``[B, C, H, W]`` images."""
    if operation == "erode":
        return erode(images, size)
    if operation == "dilate":
        return dilate(images, size)
    if operation == "open":
        return dilate(erode(images, size), size)
    if operation == "close":
        return erode(dilate(images, size), size)
    if operation == "gradient":
        return dilate(images, size) - erode(images, size)
    if operation == "top_hat":
        return images - dilate(erode(images, size), size)
    if operation == "bottom_hat":
        return erode(dilate(images, size), size) - images
    raise ValueError(f"Morphology: operation must be one of {', '.join(OPERATIONS)}")


@loom.node("Morphology", category="image/postprocessing", display_name="ImageMorphology", v3=True)
class Morphology:
    image: Image
    operation: str = ui.combo(OPERATIONS)
    kernel_size: int = ui.int(3, min=3, max=999, step=1)

    def run(self, ctx: loom.RunContext) -> Image:
        return morphology(self.image.movedim(-1, 1), self.operation, self.kernel_size).movedim(
            1, -1
        )


def rgb_to_ycbcr(rgb: Any) -> Any:
    """``[..., 3]`` RGB to Y, Cb, Cr (kornia's coefficients, chroma centred on 0.5)."""
    import torch

    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack((y, (b - y) * 0.564 + 0.5, (r - y) * 0.713 + 0.5), dim=-1)


def ycbcr_to_rgb(ycbcr: Any) -> Any:
    """Inverse of :func:`rgb_to_ycbcr` (kornia's coefficients), clamped to ``[0, 1]``."""
    import torch

    y, cb, cr = ycbcr[..., 0], ycbcr[..., 1] - 0.5, ycbcr[..., 2] - 0.5
    r = y + 1.403 * cr
    g = y - 0.714 * cr - 0.344 * cb
    b = y + 1.773 * cb
    return torch.stack((r, g, b), dim=-1).clamp(0, 1)


@loom.outputs
class YuvChannels:
    y: Image = loom.output(name="Y")
    u: Image = loom.output(name="U")
    v: Image = loom.output(name="V")


@loom.node("ImageRGBToYUV", category="image/batch", v3=True)
class ImageRGBToYUV:
    image: Image

    def run(self, ctx: loom.RunContext) -> YuvChannels:
        rgb = self.image[..., :3]
        ycbcr = rgb_to_ycbcr(rgb)
        # Each channel as a grey image of the input's shape.
        y, u, v = (ycbcr[..., i : i + 1].expand_as(rgb) for i in range(3))
        return YuvChannels(y=y, u=u, v=v)


@loom.node("ImageYUVToRGB", category="image/batch", v3=True)
class ImageYUVToRGB:
    Y: Image
    U: Image
    V: Image

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        planes = [plane.mean(dim=-1) for plane in (self.Y, self.U, self.V)]
        shapes = {tuple(p.shape) for p in planes}
        if len(shapes) != 1:
            raise NodeInputError(
                "ImageYUVToRGB",
                ("Y", "U", "V"),
                "inputs Y, U and V must have the same batch and size, got "
                f"{', '.join(str(tuple(p.shape)) for p in planes)}",
            )
        return ycbcr_to_rgb(torch.stack(planes, dim=-1))


NODES: tuple[type, ...] = (Morphology, ImageRGBToYUV, ImageYUVToRGB)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="comfy_extras.nodes_morphology")
