"""Latent nodes: empty latents, resizing, compositing, batch slicing and noise masks.

A LATENT is a dict: ``samples`` ``[B, C, H, W]``, optional ``noise_mask`` and optional
``batch_index`` (which noise-stream index each item takes). Nodes return a shallow copy
with the keys they change, as ComfyUI does, so other keys travel along.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import loom
from loom.input_checks import check_batches, check_resized
from loom.nodes.builtin.image import MAX_RESOLUTION
from loom.resample import CROP_METHODS, LATENT_METHODS, common_upscale
from loom.types import Latent, Mask

ui = loom.ui


@loom.node(
    "EmptyLatentImage",
    category="latent",
    display_name="Empty Latent Image",
    outputs=[loom.OutputDef("LATENT", "LATENT", tooltip="The empty latent image batch.")],
)
class EmptyLatentImage:
    """Create a new batch of empty latent images to be denoised via sampling."""

    width: int = ui.int(
        512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The width of the latent images in pixels."
    )
    height: int = ui.int(
        512,
        min=16,
        max=MAX_RESOLUTION,
        step=8,
        tooltip="The height of the latent images in pixels.",
    )
    batch_size: int = ui.int(
        1, min=1, max=4096, tooltip="The number of latent images in the batch."
    )

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        # Four channels (SD1.x/SDXL), as ComfyUI 0.8; samplers adapt it to the model's format.
        samples = torch.zeros(
            [self.batch_size, 4, self.height // 8, self.width // 8], dtype=torch.float32
        )
        return {"samples": samples}


@loom.node("LatentUpscale", category="latent", display_name="Upscale Latent")
class LatentUpscale:
    samples: Latent
    upscale_method: str = ui.combo(LATENT_METHODS)
    width: int = ui.int(512, min=0, max=MAX_RESOLUTION, step=8)
    height: int = ui.int(512, min=0, max=MAX_RESOLUTION, step=8)
    crop: str = ui.combo(CROP_METHODS)

    def run(self, ctx: loom.RunContext) -> Latent:
        if self.width == 0 and self.height == 0:
            return self.samples
        latent = self.samples["samples"]
        width, height = self.width, self.height
        if width == 0:
            height = max(64, height)
            width = max(64, round(latent.shape[-1] * height / latent.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(latent.shape[-2] * width / latent.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        resized = common_upscale(latent, width // 8, height // 8, self.upscale_method, self.crop)
        return {**self.samples, "samples": resized}


@loom.node("LatentUpscaleBy", category="latent", display_name="Upscale Latent By")
class LatentUpscaleBy:
    samples: Latent
    upscale_method: str = ui.combo(LATENT_METHODS)
    scale_by: float = ui.float(1.5, min=0.01, max=8.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Latent:
        latent = self.samples["samples"]
        width = round(latent.shape[-1] * self.scale_by)
        height = round(latent.shape[-2] * self.scale_by)
        check_resized(
            "LatentUpscaleBy",
            "scale_by",
            width,
            height,
            f"scale_by {self.scale_by} on a {latent.shape[-1]}x{latent.shape[-2]} latent",
        )
        resized = common_upscale(latent, width, height, self.upscale_method, "disabled")
        return {**self.samples, "samples": resized}


@loom.node("LatentComposite", category="latent", display_name="Latent Composite")
class LatentComposite:
    samples_to: Latent
    samples_from: Latent
    x: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    y: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    feather: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=8)

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        x, y, feather = self.x // 8, self.y // 8, self.feather // 8
        target = self.samples_to["samples"]
        check_batches(
            "LatentComposite",
            {"samples_to": target, "samples_from": self.samples_from["samples"]},
            broadcast=("samples_from",),
        )
        out = target.clone()
        source = self.samples_from["samples"][:, :, : target.shape[2] - y, : target.shape[3] - x]
        region = (
            slice(None),
            slice(None),
            slice(y, y + source.shape[2]),
            slice(x, x + source.shape[3]),
        )
        if feather == 0:
            out[region] = source
        else:
            # Ramp the source in over ``feather`` latent pixels on each side that is inside the target.
            mask = torch.ones_like(source)
            for t in range(feather):
                rate = (1.0 / feather) * (t + 1)
                if y != 0:
                    mask[:, :, t : 1 + t, :] *= rate
                if y + source.shape[2] < target.shape[2]:
                    mask[:, :, mask.shape[2] - 1 - t : mask.shape[2] - t, :] *= rate
                if x != 0:
                    mask[:, :, :, t : 1 + t] *= rate
                if x + source.shape[3] < target.shape[3]:
                    mask[:, :, :, mask.shape[3] - 1 - t : mask.shape[3] - t] *= rate
            out[region] = source * mask + out[region] * (torch.ones_like(mask) - mask)
        return {**self.samples_to, "samples": out}


def _tile_masks(masks: Any, batch: int) -> Any:
    """Repeat a mask batch until it covers ``batch`` items."""
    if masks.shape[0] < batch:
        masks = masks.repeat(math.ceil(batch / masks.shape[0]), 1, 1, 1)[:batch]
    return masks


@loom.node("LatentFromBatch", category="latent/batch", display_name="Latent From Batch")
class LatentFromBatch:
    samples: Latent
    batch_index: int = ui.int(0, min=0, max=63)
    length: int = ui.int(1, min=1, max=64)

    def run(self, ctx: loom.RunContext) -> Latent:
        out = dict(self.samples)
        latent = self.samples["samples"]
        start = min(latent.shape[0] - 1, self.batch_index)
        length = min(latent.shape[0] - start, self.length)
        out["samples"] = latent[start : start + length].clone()
        if "noise_mask" in self.samples:
            masks = self.samples["noise_mask"]
            if masks.shape[0] == 1:
                out["noise_mask"] = masks.clone()
            else:
                out["noise_mask"] = _tile_masks(masks, latent.shape[0])[
                    start : start + length
                ].clone()
        if "batch_index" in self.samples:
            out["batch_index"] = self.samples["batch_index"][start : start + length]
        else:
            out["batch_index"] = list(range(start, start + length))
        return out


@loom.node("RepeatLatentBatch", category="latent/batch", display_name="Repeat Latent Batch")
class RepeatLatentBatch:
    samples: Latent
    amount: int = ui.int(1, min=1, max=64)

    def run(self, ctx: loom.RunContext) -> Latent:
        out = dict(self.samples)
        out["samples"] = self.samples["samples"].repeat((self.amount, 1, 1, 1))
        masks = self.samples.get("noise_mask")
        if masks is not None and masks.shape[0] > 1:
            out["noise_mask"] = masks.repeat((self.amount, 1, 1, 1))
        if "batch_index" in out:
            indices = list(out["batch_index"])
            offset = max(indices) - min(indices) + 1
            out["batch_index"] = indices + [
                i + r * offset for r in range(1, self.amount) for i in indices
            ]
        return out


@loom.node("SetLatentNoiseMask", category="latent/inpaint", display_name="Set Latent Noise Mask")
class SetLatentNoiseMask:
    samples: Latent
    mask: Mask

    def run(self, ctx: loom.RunContext) -> Latent:
        mask = self.mask.reshape((-1, 1, self.mask.shape[-2], self.mask.shape[-1]))
        return {**self.samples, "noise_mask": mask}


# An empty 16-channel latent batch (SD3, Flux): zeros [B, 16, H/8, W/8]. ComfyUI gives it no
# description, so a comment rather than a docstring keeps /object_info's empty.
@loom.node("EmptySD3LatentImage", category="latent/sd3", v3=True)
class EmptySD3LatentImage:
    width: int = ui.int(1024, min=16, max=MAX_RESOLUTION, step=16)
    height: int = ui.int(1024, min=16, max=MAX_RESOLUTION, step=16)
    batch_size: int = ui.int(1, min=1, max=4096)

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch

        samples = torch.zeros(
            [self.batch_size, 16, self.height // 8, self.width // 8], dtype=torch.float32
        )
        return {"samples": samples}


NODES: tuple[type, ...] = (
    EmptyLatentImage,
    LatentUpscale,
    LatentUpscaleBy,
    LatentComposite,
    LatentFromBatch,
    RepeatLatentBatch,
    SetLatentNoiseMask,
)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="nodes")
    register(EmptySD3LatentImage, python_module="comfy_extras.nodes_sd3")
