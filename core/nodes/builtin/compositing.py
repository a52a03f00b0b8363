"""Masked compositing and mask arithmetic: pasting images and latents through a mask,
combining, cropping and thresholding masks, previewing a mask, and RGBA split/join.

ComfyUI's ``comfy_extras/nodes_mask.py`` and ``nodes_compositing.py``. IMAGE is
``[B, H, W, C]``; MASK is ``[B, H, W]`` (a ``[H, W]`` mask is batch 1); latents are
``[B, C, H, W]``, and their ``x``/``y`` widgets are in pixels (divided by 8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import loom
from loom.errors import NodeInputError
from loom.input_checks import check_batches
from loom.nodes.builtin.image import MAX_RESOLUTION
from loom.nodes.builtin.image_io import preview_prefix, save_images
from loom.nodes.builtin.mask import batched_mask
from loom.types import Image, Latent, Mask

ui = loom.ui

MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


def repeat_to_batch(tensor: Any, batch: int) -> Any:
    """Trim or tile ``tensor`` along dim 0 to exactly ``batch`` items (ComfyUI's
    ``repeat_to_batch_size``)."""
    import math

    if tensor.shape[0] > batch:
        return tensor[:batch]
    if tensor.shape[0] < batch:
        reps = [math.ceil(batch / tensor.shape[0])] + [1] * (tensor.ndim - 1)
        return tensor.repeat(reps)[:batch]
    return tensor


def check_channels(node: str, first: Any, second: Any, names: tuple[str, str]) -> None:
    """Latents of different channel counts (another model family) cannot be mixed: say so."""
    if first.shape[1] != second.shape[1]:
        raise NodeInputError(
            node,
            names,
            f"{names[0]} has {first.shape[1]} latent channels but {names[1]} has "
            f"{second.shape[1]}; both must come from the same model family",
        )


def match_alpha(destination: Image, source: Image) -> tuple[Image, Image]:
    """Give two images the same channel count: drop the source's extra channels, or give an
    RGB source an opaque alpha channel. ComfyUI 0.8's ``image_alpha_fix`` pads the destination
    instead, which then fails to broadcast (RGBA onto RGB); later versions pad the source, as here."""
    import torch

    if destination.shape[-1] < source.shape[-1]:
        source = source[..., : destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        source = torch.nn.functional.pad(source, (0, 1), value=1.0)
    return destination, source


def composite(
    destination: Any,
    source: Any,
    x: int,
    y: int,
    mask: Mask | None,
    multiplier: int,
    resize_source: bool,
) -> Any:
    """Paste ``source`` onto ``destination`` (both ``[B, C, H, W]``, destination modified in
    place) at ``(x, y) // multiplier``, blended by ``mask`` resized to the source.

    Offsets are clamped so that at most the whole source lies outside; the part of the source
    past the destination's right and bottom edges is dropped.
    """
    import torch

    source = source.to(destination.device)
    if resize_source:
        size = (destination.shape[-2], destination.shape[-1])
        source = torch.nn.functional.interpolate(source, size=size, mode="bilinear")
    source = repeat_to_batch(source, destination.shape[0])
    x = max(-source.shape[-1] * multiplier, min(x, destination.shape[-1] * multiplier))
    y = max(-source.shape[-2] * multiplier, min(y, destination.shape[-2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[-1], top + source.shape[-2]
    if mask is None:
        weight = torch.ones_like(source)
    else:
        weight = torch.nn.functional.interpolate(
            mask.to(destination.device).reshape((-1, 1, mask.shape[-2], mask.shape[-1])),
            size=(source.shape[-2], source.shape[-1]),
            mode="bilinear",
        )
        weight = repeat_to_batch(weight, source.shape[0])
    visible_width = destination.shape[-1] - left + min(0, x)
    visible_height = destination.shape[-2] - top + min(0, y)
    weight = weight[:, :, :visible_height, :visible_width]
    pasted = weight * source[..., :visible_height, :visible_width]
    kept = (1.0 - weight) * destination[..., top:bottom, left:right]
    destination[..., top:bottom, left:right] = pasted + kept
    return destination


@loom.node("LatentCompositeMasked", category="latent", v3=True)
class LatentCompositeMasked:
    destination: Latent
    source: Latent
    x: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    y: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    resize_source: bool = ui.boolean(False)
    mask: Mask = ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Latent:
        source = self.source["samples"]
        check_channels(
            "LatentCompositeMasked", self.destination["samples"], source, ("destination", "source")
        )
        target = self.destination["samples"].clone()
        pasted = composite(target, source, self.x, self.y, self.mask, 8, self.resize_source)
        return {**self.destination, "samples": pasted}


@loom.node("ImageCompositeMasked", category="image", v3=True)
class ImageCompositeMasked:
    destination: Image
    source: Image
    x: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    y: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    resize_source: bool = ui.boolean(False)
    mask: Mask = ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Image:
        destination, source = match_alpha(self.destination, self.source)
        target = destination.clone().movedim(-1, 1)
        pasted = composite(
            target, source.movedim(-1, 1), self.x, self.y, self.mask, 1, self.resize_source
        )
        return pasted.movedim(1, -1)


@loom.node("CropMask", category="mask", v3=True)
class CropMask:
    mask: Mask
    x: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    y: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    width: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)
    height: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)

    def run(self, ctx: loom.RunContext) -> Mask:
        mask = batched_mask(self.mask)
        return mask[:, self.y : self.y + self.height, self.x : self.x + self.width]


@loom.node("MaskComposite", category="mask", v3=True)
class MaskComposite:
    destination: Mask
    source: Mask
    x: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    y: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    operation: str = ui.combo(MASK_OPERATIONS)

    def run(self, ctx: loom.RunContext) -> Mask:
        import torch

        out = batched_mask(self.destination).clone()
        source = batched_mask(self.source)
        check_batches(
            "MaskComposite", {"destination": out, "source": source}, broadcast=("source",)
        )
        # An offset past the edge pastes nothing (ComfyUI fails there on wide sources).
        left, top = min(self.x, out.shape[-1]), min(self.y, out.shape[-2])
        right = min(left + source.shape[-1], out.shape[-1])
        bottom = min(top + source.shape[-2], out.shape[-2])
        src = source[:, : bottom - top, : right - left]
        dst = out[:, top:bottom, left:right]
        if self.operation == "multiply":
            value = dst * src
        elif self.operation == "add":
            value = dst + src
        elif self.operation == "subtract":
            value = dst - src
        else:  # logical operations on masks rounded to 0/1
            logical = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}
            value = logical[self.operation](dst.round().bool(), src.round().bool()).float()
        out[:, top:bottom, left:right] = value
        return torch.clamp(out, 0.0, 1.0)


@loom.node("ThresholdMask", category="mask", v3=True)
class ThresholdMask:
    mask: Mask
    value: float = ui.float(0.5, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Mask:
        return (self.mask > self.value).float()


@loom.node(
    "MaskPreview",
    category="mask",
    display_name="Preview Mask",
    output_node=True,
    hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
    v3=True,
)
class MaskPreview:
    """Saves the input images to your ComfyUI output directory."""

    # ComfyUI's MaskPreview carries SaveImage's description; kept for an identical /object_info.

    mask: Mask

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        grey = batched_mask(self.mask).unsqueeze(-1).expand(-1, -1, -1, 3)
        results = save_images(grey, ctx, preview_prefix(ctx.node_id), kind="temp", compress_level=1)
        return loom.NodeOutput(ui={"images": results, "animated": [False]})


@loom.outputs
class ImageAndMask:
    image: Image = loom.output(name="IMAGE")
    mask: Mask = loom.output(name="MASK")


@loom.node(
    "SplitImageWithAlpha",
    category="mask/compositing",
    display_name="Split Image with Alpha",
    v3=True,
)
class SplitImageWithAlpha:
    image: Image

    def run(self, ctx: loom.RunContext) -> ImageAndMask:
        import torch

        if self.image.shape[-1] > 3:
            alpha = self.image[..., 3]
        else:
            alpha = torch.ones_like(self.image[..., 0])
        return ImageAndMask(image=self.image[..., :3], mask=1.0 - alpha)


@loom.node(
    "JoinImageWithAlpha", category="mask/compositing", display_name="Join Image with Alpha", v3=True
)
class JoinImageWithAlpha:
    image: Image
    alpha: Mask

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        height, width = self.image.shape[1], self.image.shape[2]
        mask = batched_mask(self.alpha)
        resized = torch.nn.functional.interpolate(
            mask.unsqueeze(1), size=(height, width), mode="bilinear"
        ).squeeze(1)
        count = min(self.image.shape[0], resized.shape[0])
        opacity = (1.0 - resized[:count]).unsqueeze(-1)
        return torch.cat((self.image[:count, ..., :3], opacity), dim=-1)


NODES: tuple[type, ...] = (
    LatentCompositeMasked,
    ImageCompositeMasked,
    CropMask,
    MaskComposite,
    ThresholdMask,
    MaskPreview,
    SplitImageWithAlpha,
    JoinImageWithAlpha,
)
_COMPOSITING = {SplitImageWithAlpha, JoinImageWithAlpha}


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        module = "nodes_compositing" if node_class in _COMPOSITING else "nodes_mask"
        register(node_class, python_module=f"comfy_extras.{module}")
