"""PatchModelAddDownscale (Kohya deep shrink) for the SD1.x / SDXL UNet.

ComfyUI's ``comfy_extras/nodes_model_downscale.py`` rule: while the step's sigma lies within
``[sigma(end_percent), sigma(start_percent)]``, the features leaving input block
``block_number`` are resized by ``1 / downscale_factor`` (before the skip connection keeps
them, or after with ``downscale_after_skip``); the decoder features are resized back to the
size of the skip connection they meet whenever their heights differ. Through the UNet's
:class:`loom_sd15.unet_hooks.InputBlockPatch` and :class:`loom_sd15.unet.OutputBlockPatch`.
"""

from __future__ import annotations

from typing import Any

import attrs

import loom
from loom.errors import LoomError
from loom.types import Model
from loom_sd15.unet_hooks import BlockSite

ui = loom.ui

RESIZE_METHODS = ["bicubic", "nearest-exact", "bilinear", "area", "bislerp"]


@attrs.frozen
class Downscale:
    """The input-block patch: ``h`` of block ``block_number`` resized inside the window."""

    block_number: int
    factor: float
    sigma_start: float
    sigma_end: float
    method: str

    def __call__(self, h: Any, site: BlockSite) -> Any:
        sigma = site.call.sigma
        if site.block[1] != self.block_number or sigma is None:
            return h
        level = float(sigma.reshape(-1)[0])
        if not (self.sigma_end <= level <= self.sigma_start):
            return h
        from loom.resample import common_upscale

        width = round(h.shape[-1] * (1.0 / self.factor))
        height = round(h.shape[-2] * (1.0 / self.factor))
        if width < 1 or height < 1:
            raise LoomError(
                f"PatchModelAddDownscale: downscale_factor {self.factor} shrinks the "
                f"{h.shape[-2]}x{h.shape[-1]} features of input block {self.block_number} to "
                "nothing",
                hint="use a smaller downscale_factor or an earlier block_number, or a larger image",
            )
        return common_upscale(h, width, height, self.method, "disabled")


@attrs.frozen
class UpscaleToSkip:
    """The output-block patch: ``h`` resized to the skip connection's size when their
    heights differ."""

    method: str

    def __call__(self, h: Any, skip: Any) -> tuple[Any, Any]:
        if h.shape[2] == skip.shape[2]:
            return h, skip
        from loom.resample import common_upscale

        return common_upscale(h, skip.shape[-1], skip.shape[-2], self.method, "disabled"), skip


@loom.node(
    "PatchModelAddDownscale",
    category="model_patches/unet",
    display_name="PatchModelAddDownscale (Kohya Deep Shrink)",
    v3=True,
)
class PatchModelAddDownscale:
    # no docstring: /object_info's description is ComfyUI's (empty)

    model: Model
    block_number: int = ui.int(3, min=1, max=32, step=1)
    downscale_factor: float = ui.float(2.0, min=0.1, max=9.0, step=0.001)
    start_percent: float = ui.float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent: float = ui.float(0.35, min=0.0, max=1.0, step=0.001)
    downscale_after_skip: bool = ui.boolean(True)
    downscale_method: str = ui.combo(RESIZE_METHODS)
    upscale_method: str = ui.combo(RESIZE_METHODS)

    def run(self, ctx: loom.RunContext) -> Model:
        model = self.model
        if not hasattr(model, "input_block_patches"):
            raise LoomError(
                "PatchModelAddDownscale: the model "
                f"{getattr(model, 'name', type(model).__name__)} is not a UNet with input "
                "blocks",
                hint="PatchModelAddDownscale applies to SD1.x and SDXL models",
            )
        sampling = model.model_sampling
        downscale = Downscale(
            int(self.block_number),
            float(self.downscale_factor),
            float(sampling.percent_to_sigma(float(self.start_percent))),
            float(sampling.percent_to_sigma(float(self.end_percent))),
            self.downscale_method,
        )
        patched = model.clone()
        if self.downscale_after_skip:
            patched.input_block_patches_after_skip = (
                *model.input_block_patches_after_skip,
                downscale,
            )
        else:
            patched.input_block_patches = (*model.input_block_patches, downscale)
        upscale = UpscaleToSkip(self.upscale_method)
        patched.output_block_patches = (*model.output_block_patches, upscale)
        return patched


NODES = [PatchModelAddDownscale]
