"""Image post-processing and transforms: blend, blur, sharpen, quantize, flip, rotate,
stitch two images, scale to a maximum side, and taking images out of a batch.

ComfyUI's ``comfy_extras/nodes_post_processing.py`` and ``nodes_images.py``. IMAGE tensors are
``[B, H, W, C]`` in ``[0, 1]``; filters run with channels first and reflect-padded edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import loom
from loom.input_checks import check_batches, check_padding
from loom.nodes.builtin.compositing import match_alpha
from loom.nodes.builtin.image import MAX_RESOLUTION
from loom.resample import common_upscale
from loom.types import Image

ui = loom.ui

BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")
DITHER_MODES = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")
ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")
FLIP_METHODS = ("x-axis: vertically", "y-axis: horizontally")
#: ImageScaleToMaxDimension's list, verbatim (ComfyUI lists "bilinear" twice).
MAX_DIMENSION_METHODS = ("area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic")


def blend(base: Image, top: Image, mode: str) -> Image:
    """The blend-mode formula applied to two same-sized images."""
    import torch

    if mode == "normal":
        return top
    if mode == "multiply":
        return base * top
    if mode == "screen":
        return 1 - (1 - base) * (1 - top)
    if mode == "overlay":
        return torch.where(base <= 0.5, 2 * base * top, 1 - 2 * (1 - base) * (1 - top))
    if mode == "soft_light":
        # W3C soft light: D(x) is a cubic below 1/4 and sqrt above.
        d = torch.where(base <= 0.25, ((16 * base - 12) * base + 4) * base, torch.sqrt(base))
        darker = base - (1 - 2 * top) * base * (1 - base)
        return torch.where(top <= 0.5, darker, base + (2 * top - 1) * (d - base))
    if mode == "difference":
        return base - top
    raise ValueError(f"unsupported blend mode {mode!r}; expected one of {', '.join(BLEND_MODES)}")


def gaussian_kernel(size: int, sigma: float, device: Any = None) -> Any:
    """A ``size x size`` Gaussian on the grid ``linspace(-1, 1)`` (not pixel units), summing to 1."""
    import torch

    axis = torch.linspace(-1, 1, size, device=device)
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    g = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return g / g.sum()


def sharpen_kernel(radius: int, sigma: float, alpha: float, device: Any = None) -> Any:
    """The unsharp kernel of ``ImageSharpen``/``LatentOperationSharpen``: ``-10 * alpha`` times
    the Gaussian, its centre raised so the kernel sums to 1."""
    size = radius * 2 + 1
    kernel = gaussian_kernel(size, sigma, device) * -(alpha * 10)
    kernel[radius, radius] = kernel[radius, radius] - kernel.sum() + 1.0
    return kernel


def filter_image(image: Image, kernel: Any, radius: int) -> Image:
    """Convolve each channel with ``kernel`` (``(2r+1)^2``), edges reflected."""
    import torch.nn.functional as F

    channels = image.shape[-1]
    weights = kernel.to(image.dtype).repeat(channels, 1, 1).unsqueeze(1)
    planes = F.pad(image.movedim(-1, 1), (radius, radius, radius, radius), "reflect")
    out = F.conv2d(planes, weights, groups=channels)
    return out.movedim(1, -1)


@loom.node("ImageBlend", category="image/postprocessing", v3=True)
class ImageBlend:
    image1: Image
    image2: Image
    blend_factor: float = ui.float(0.5, min=0.0, max=1.0, step=0.01)
    blend_mode: str = ui.combo(BLEND_MODES)

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        check_batches(
            "ImageBlend",
            {"image1": self.image1, "image2": self.image2},
            broadcast=("image1", "image2"),
        )
        image1, image2 = match_alpha(self.image1, self.image2)
        if image1.shape != image2.shape:
            image2 = common_upscale(
                image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bicubic", "center"
            ).movedim(1, -1)
        mixed = image1 * (1 - self.blend_factor) + blend(image1, image2, self.blend_mode) * (
            self.blend_factor
        )
        return torch.clamp(mixed, 0, 1)


@loom.node("ImageBlur", category="image/postprocessing", v3=True)
class ImageBlur:
    image: Image
    blur_radius: int = ui.int(1, min=1, max=31, step=1)
    sigma: float = ui.float(1.0, min=0.1, max=10.0, step=0.1)

    def run(self, ctx: loom.RunContext) -> Image:
        _, height, width, _ = self.image.shape
        check_padding("ImageBlur", "image", height, width, "blur_radius", self.blur_radius)
        size = self.blur_radius * 2 + 1
        kernel = gaussian_kernel(size, self.sigma, self.image.device)
        return filter_image(self.image, kernel, self.blur_radius)


@loom.node("ImageSharpen", category="image/postprocessing", v3=True)
class ImageSharpen:
    image: Image
    sharpen_radius: int = ui.int(1, min=1, max=31, step=1)
    sigma: float = ui.float(1.0, min=0.1, max=10.0, step=0.01)
    alpha: float = ui.float(1.0, min=0.0, max=5.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        _, height, width, _ = self.image.shape
        check_padding("ImageSharpen", "image", height, width, "sharpen_radius", self.sharpen_radius)
        kernel = sharpen_kernel(self.sharpen_radius, self.sigma, self.alpha, self.image.device)
        return torch.clamp(filter_image(self.image, kernel, self.sharpen_radius), 0, 1)


def bayer_matrix(order: int) -> Any:
    """The normalised ``order x order`` ordered-dither matrix (values centred on 0)."""
    import torch

    matrix = torch.zeros((1, 1), dtype=torch.float64)
    for level in range(1, int(math.log2(order)) + 1):
        q = 4**level
        m = q * matrix
        matrix = (
            torch.cat(
                (torch.cat((m - 1.5, m + 0.5), dim=1), torch.cat((m + 1.5, m - 0.5), dim=1)), dim=0
            )
            / q
        )
    return matrix


def _quantize_one(pixels: Any, colors: int, dither: str) -> Any:
    import numpy as np
    import torch
    from PIL import Image as PILImage

    picture = PILImage.fromarray(pixels, mode="RGB")
    # Pillow needs an explicit palette image for dithering choices to apply (Pillow #5836).
    palette = picture.quantize(colors=colors)
    if dither.startswith("bayer"):
        order = int(dither.split("-")[-1])
        spread = 2 * 256 / (len(palette.getpalette()) // 3)
        threshold = spread * bayer_matrix(order) + 0.5
        values = torch.from_numpy(pixels.astype(np.float32))
        reps = (math.ceil(values.shape[0] / order), math.ceil(values.shape[1] / order))
        tiled = threshold.tile(reps)[: values.shape[0], : values.shape[1]].unsqueeze(-1)
        values = (values + tiled).clamp(0, 255).to(torch.uint8)
        picture = PILImage.fromarray(values.numpy())
        quantized = picture.quantize(palette=palette, dither=PILImage.Dither.NONE)
    else:
        mode = (
            PILImage.Dither.FLOYDSTEINBERG if dither == "floyd-steinberg" else PILImage.Dither.NONE
        )
        quantized = picture.quantize(palette=palette, dither=mode)
    return torch.from_numpy(np.array(quantized.convert("RGB"))).float() / 255


@loom.node("ImageQuantize", category="image/postprocessing", v3=True)
class ImageQuantize:
    image: Image
    colors: int = ui.int(256, min=1, max=256, step=1)
    dither: str = ui.combo(DITHER_MODES)

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        out = self.image.clone()  # an alpha channel passes through
        for index, item in enumerate(self.image):
            pixels = (item[..., :3] * 255).to(torch.uint8).cpu().numpy()
            out[index, ..., :3] = _quantize_one(pixels, self.colors, self.dither)
        return out


@loom.node("ImageFlip", category="image/transform", v3=True)
class ImageFlip:
    image: Image
    flip_method: str = ui.combo(FLIP_METHODS)

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        return torch.flip(self.image, dims=[1 if self.flip_method.startswith("x") else 2])


def quarter_turns(rotation: str) -> int:
    """``"90 degrees"`` -> 1 clockwise quarter turn, ``"none"`` -> 0."""
    return 0 if rotation == "none" else int(rotation.split()[0]) // 90


@loom.node("ImageRotate", category="image/transform", v3=True)
class ImageRotate:
    image: Image
    rotation: str = ui.combo(ROTATIONS)

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        return torch.rot90(self.image, k=quarter_turns(self.rotation), dims=[2, 1])


@loom.node("ImageScaleToMaxDimension", category="image/upscaling", v3=True)
class ImageScaleToMaxDimension:
    image: Image
    upscale_method: str = ui.combo(MAX_DIMENSION_METHODS)
    largest_size: int = ui.int(512, min=0, max=MAX_RESOLUTION, step=1)

    def run(self, ctx: loom.RunContext) -> Image:
        height, width = self.image.shape[1], self.image.shape[2]
        size = self.largest_size
        if height > width:
            width, height = round(width / height * size), size
        elif width > height:
            width, height = size, round(height / width * size)
        else:
            width = height = size
        scaled = common_upscale(
            self.image.movedim(-1, 1), width, height, self.upscale_method, "disabled"
        )
        return scaled.movedim(1, -1)


@loom.node("ImageFromBatch", category="image/batch", v3=True)
class ImageFromBatch:
    image: Image
    batch_index: int = ui.int(0, min=0, max=4095)
    length: int = ui.int(1, min=1, max=4096)

    def run(self, ctx: loom.RunContext) -> Image:
        start = min(self.image.shape[0] - 1, self.batch_index)
        length = min(self.image.shape[0] - start, self.length)
        return self.image[start : start + length].clone()


STITCH_DIRECTIONS = ("right", "down", "left", "up")
#: spacing colours: a grey level for all three channels, or an RGB triple
SPACING_COLORS: dict[str, float | tuple[float, float, float]] = {
    "white": 1.0,
    "black": 0.0,
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
}


def _repeat_last(image: Image, batch: int) -> Image:
    import torch

    missing = batch - image.shape[0]
    return torch.cat([image, image[-1:].repeat(missing, 1, 1, 1)]) if missing > 0 else image


def _center_pad(image: Image, dim: int, size: int, value: float) -> Image:
    """Pad axis ``dim`` (1 = height, 2 = width) to ``size``, the odd pixel after the image."""
    import torch.nn.functional as F

    extra = size - image.shape[dim]
    if extra <= 0:
        return image
    before, after = extra // 2, extra - extra // 2
    padding = (0, 0, 0, 0, before, after) if dim == 1 else (0, 0, before, after)
    return F.pad(image, padding, mode="constant", value=value)


def _with_channels(image: Image, channels: int) -> Image:
    """Extra channels (an alpha) filled with ones."""
    import torch

    missing = channels - image.shape[-1]
    if missing <= 0:
        return image
    ones = torch.ones(*image.shape[:-1], missing, device=image.device, dtype=image.dtype)
    return torch.cat([image, ones], dim=-1)


def spacing_strip(shape: tuple[int, int, int, int], color: str, like: Image) -> Image:
    """A ``[B, H, W, C]`` strip of the spacing colour, alpha (if any) opaque."""
    import torch

    strip = torch.zeros(shape, device=like.device, dtype=like.dtype)
    value = SPACING_COLORS[color]
    if isinstance(value, tuple):
        for channel, level in enumerate(value[: shape[-1]]):
            strip[..., channel] = level
    else:
        strip[..., : min(3, shape[-1])] = value
    if shape[-1] == 4:
        strip[..., 3] = 1.0
    return strip


@loom.node("ImageStitch", category="image/transform", display_name="Image Stitch", v3=True)
class ImageStitch:
    """Stitches image2 to image1 in the specified direction.
    If image2 is not provided, returns image1 unchanged.
    Optional spacing can be added between images."""

    image1: Image
    direction: str = ui.combo(STITCH_DIRECTIONS, default="right")
    match_image_size: bool = ui.boolean(True)
    spacing_width: int = ui.int(0, min=0, max=1024, step=2)
    spacing_color: str = ui.combo(tuple(SPACING_COLORS), default="white")
    image2: Image = ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        image1, image2 = self.image1, self.image2
        if image2 is None:
            return image1
        batch = max(image1.shape[0], image2.shape[0])
        image1, image2 = _repeat_last(image1, batch), _repeat_last(image2, batch)
        sideways = self.direction in ("left", "right")
        if self.match_image_size:
            # image2 scaled (lanczos) to image1's height (sideways) or width, aspect kept
            (h1, w1), (h2, w2) = image1.shape[1:3], image2.shape[1:3]
            aspect = w2 / h2
            width, height = (int(h1 * aspect), h1) if sideways else (w1, int(w1 / aspect))
            image2 = common_upscale(
                image2.movedim(-1, 1), width, height, "lanczos", "disabled"
            ).movedim(1, -1)
        else:
            # the other side padded to the larger one, centred, grey colours only (else black)
            value = SPACING_COLORS[self.spacing_color]
            pad_value = value if not isinstance(value, tuple) else 0.0
            dim = 1 if sideways else 2
            size = max(image1.shape[dim], image2.shape[dim])
            image1 = _center_pad(image1, dim, size, pad_value)
            image2 = _center_pad(image2, dim, size, pad_value)
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = _with_channels(image1, channels), _with_channels(image2, channels)
        parts = [image2, image1] if self.direction in ("left", "up") else [image1, image2]
        if self.spacing_width > 0:
            width = self.spacing_width + self.spacing_width % 2  # even
            if sideways:
                shape = (batch, max(image1.shape[1], image2.shape[1]), width, channels)
            else:
                shape = (batch, width, max(image1.shape[2], image2.shape[2]), channels)
            parts.insert(1, spacing_strip(shape, self.spacing_color, image1))
        return torch.cat(parts, dim=2 if sideways else 1)


_POST_PROCESSING = (ImageBlend, ImageBlur, ImageQuantize, ImageSharpen)
_IMAGES = (ImageFromBatch, ImageStitch, ImageRotate, ImageFlip, ImageScaleToMaxDimension)
NODES: tuple[type, ...] = _POST_PROCESSING + _IMAGES


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in _POST_PROCESSING:
        register(node_class, python_module="comfy_extras.nodes_post_processing")
    for node_class in _IMAGES:
        register(node_class, python_module="comfy_extras.nodes_images")
