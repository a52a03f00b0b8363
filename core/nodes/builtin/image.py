"""Image nodes: scaling, inverting, batching, blank images, cropping and outpaint padding.

IMAGE tensors are ``[B, H, W, C]`` floats in ``[0, 1]``; resizing goes through
:mod:`loom.resample` with channels moved first, as ComfyUI does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import loom
from loom.input_checks import check_resized
from loom.resample import CROP_METHODS, IMAGE_METHODS, common_upscale
from loom.types import Image, Mask

#: ComfyUI's ``MAX_RESOLUTION`` (``nodes.py``).
MAX_RESOLUTION = 16384
ui = loom.ui


def _resize(image: Image, width: int, height: int, method: str, crop: str) -> Image:
    return common_upscale(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


@loom.node("ImageScale", category="image/upscaling", display_name="Upscale Image")
class ImageScale:
    image: Image
    upscale_method: str = ui.combo(IMAGE_METHODS)
    width: int = ui.int(512, min=0, max=MAX_RESOLUTION, step=1)
    height: int = ui.int(512, min=0, max=MAX_RESOLUTION, step=1)
    crop: str = ui.combo(CROP_METHODS)

    def run(self, ctx: loom.RunContext) -> Image:
        if self.width == 0 and self.height == 0:
            return self.image
        _, in_height, in_width, _ = self.image.shape
        width, height = self.width, self.height
        if width == 0:  # keep the aspect ratio
            width = max(1, round(in_width * height / in_height))
        elif height == 0:
            height = max(1, round(in_height * width / in_width))
        return _resize(self.image, width, height, self.upscale_method, self.crop)


@loom.node("ImageScaleBy", category="image/upscaling", display_name="Upscale Image By")
class ImageScaleBy:
    image: Image
    upscale_method: str = ui.combo(IMAGE_METHODS)
    scale_by: float = ui.float(1.0, min=0.01, max=8.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Image:
        width = round(self.image.shape[2] * self.scale_by)
        height = round(self.image.shape[1] * self.scale_by)
        check_resized(
            "ImageScaleBy",
            "scale_by",
            width,
            height,
            f"scale_by {self.scale_by} on a {self.image.shape[2]}x{self.image.shape[1]} image",
        )
        return _resize(self.image, width, height, self.upscale_method, "disabled")


@loom.node("ImageScaleToTotalPixels", category="image/upscaling", v3=True)
class ImageScaleToTotalPixels:
    image: Image
    upscale_method: str = ui.combo(IMAGE_METHODS)
    megapixels: float = ui.float(1.0, min=0.01, max=16.0, step=0.01)
    resolution_steps: int = ui.int(1, min=1, max=256)

    def run(self, ctx: loom.RunContext) -> Image:
        _, in_height, in_width, _ = self.image.shape
        total = self.megapixels * 1024 * 1024
        scale_by = math.sqrt(total / (in_width * in_height))
        step = self.resolution_steps
        width = round(in_width * scale_by / step) * step
        height = round(in_height * scale_by / step) * step
        return _resize(self.image, int(width), int(height), self.upscale_method, "disabled")


@loom.node("ImageInvert", category="image", display_name="Invert Image")
class ImageInvert:
    image: Image

    def run(self, ctx: loom.RunContext) -> Image:
        return 1.0 - self.image


@loom.node("ImageBatch", category="image", display_name="Batch Images", deprecated=True)
class ImageBatch:
    """ComfyUI's deprecated two-image batch: an RGB image meeting an RGBA one gains an opaque
    alpha channel, and the second image is resized to the first one's size."""

    image1: Image
    image2: Image

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        image1, image2 = self.image1, self.image2
        if image1.shape[-1] < image2.shape[-1]:
            image1 = torch.nn.functional.pad(image1, (0, 1), value=1.0)
        elif image2.shape[-1] < image1.shape[-1]:
            image2 = torch.nn.functional.pad(image2, (0, 1), value=1.0)
        if image1.shape[1:] != image2.shape[1:]:
            image2 = _resize(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
        return torch.cat((image1, image2), dim=0)


@loom.node("EmptyImage", category="image")
class EmptyImage:
    width: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)
    height: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)
    batch_size: int = ui.int(1, min=1, max=4096)
    color: int = ui.int(0, min=0, max=0xFFFFFF, step=1, display="color")

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        shape = [self.batch_size, self.height, self.width, 1]
        planes = [torch.full(shape, ((self.color >> shift) & 0xFF) / 0xFF) for shift in (16, 8, 0)]
        return torch.cat(planes, dim=-1)


@loom.node("ImageCrop", category="image/transform", display_name="Image Crop", v3=True)
class ImageCrop:
    image: Image
    width: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)
    height: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)
    x: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    y: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)

    def run(self, ctx: loom.RunContext) -> Image:
        x = min(self.x, self.image.shape[2] - 1)
        y = min(self.y, self.image.shape[1] - 1)
        return self.image[:, y : y + self.height, x : x + self.width, :]


@loom.outputs
class PaddedImage:
    image: Image = loom.output(name="IMAGE")
    mask: Mask = loom.output(name="MASK")


@loom.node("ImagePadForOutpaint", category="image", display_name="Pad Image for Outpainting")
class ImagePadForOutpaint:
    image: Image
    left: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    top: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    right: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    bottom: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    feathering: int = ui.int(40, min=0, max=MAX_RESOLUTION, step=1)

    def run(self, ctx: loom.RunContext) -> PaddedImage:
        import torch

        batch, height, width, channels = self.image.shape
        left, top, right, bottom = self.left, self.top, self.right, self.bottom
        new_size = (height + top + bottom, width + left + right)
        padded = torch.ones((batch, *new_size, channels), dtype=torch.float32) * 0.5
        padded[:, top : top + height, left : left + width, :] = self.image
        mask = torch.ones(new_size, dtype=torch.float32)
        mask[top : top + height, left : left + width] = self._feather(height, width)
        return PaddedImage(image=padded, mask=mask)

    def _feather(self, height: int, width: int) -> Mask:
        """Inside the original area: ``((f - d) / f) ** 2`` within ``f`` pixels of a padded edge."""
        import torch

        f = self.feathering
        inner = torch.zeros((height, width), dtype=torch.float32)
        if not (f > 0 and f * 2 < height and f * 2 < width):
            return inner
        rows = torch.arange(height, dtype=torch.float64).unsqueeze(1)
        cols = torch.arange(width, dtype=torch.float64).unsqueeze(0)
        # Distance to each edge that was padded; an unpadded edge counts as far away.
        d_top = rows if self.top else torch.full_like(rows, height)
        d_bottom = height - rows if self.bottom else torch.full_like(rows, height)
        d_left = cols if self.left else torch.full_like(cols, width)
        d_right = width - cols if self.right else torch.full_like(cols, width)
        distance = torch.minimum(torch.minimum(d_top, d_bottom), torch.minimum(d_left, d_right))
        value = ((f - distance) / f) ** 2
        return torch.where(distance < f, value, torch.zeros_like(value)).to(torch.float32)


NODES: tuple[type, ...] = (
    ImageScale,
    ImageScaleBy,
    ImageScaleToTotalPixels,
    ImageInvert,
    ImageBatch,
    EmptyImage,
    ImageCrop,
    ImagePadForOutpaint,
)
#: ComfyUI's source module per node, so the frontend labels them as core nodes.
PYTHON_MODULES: dict[type, str] = {
    ImageScaleToTotalPixels: "comfy_extras.nodes_post_processing",
    ImageCrop: "comfy_extras.nodes_images",
}


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=PYTHON_MODULES.get(node_class, "nodes"))
