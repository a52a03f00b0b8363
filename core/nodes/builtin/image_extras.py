"""Image utilities of ComfyUI's ``comfy_extras/nodes_images.py``: size readout, batch repeat,
film-grain noise, and resize-to-fit with padding."""

from __future__ import annotations

from collections.abc import Callable

import loom
from loom.nodes.builtin.image import MAX_RESOLUTION
from loom.resample import common_upscale
from loom.types import Image

ui = loom.ui

#: ComfyUI's widest seed (``0xFFFFFFFFFFFFFFFF``).
MAX_SEED = 2**64 - 1
PAD_COLORS = ("white", "black")
FIT_METHODS = ("area", "bicubic", "nearest-exact", "bilinear", "lanczos")


@loom.outputs
class ImageSize:
    width: int = loom.output(name="width")
    height: int = loom.output(name="height")
    batch_size: int = loom.output(name="batch_size")


@loom.node(
    "GetImageSize",
    category="image",
    display_name="Get Image Size",
    hidden={"unique_id": "UNIQUE_ID"},
    v3=True,
)
class GetImageSize:
    """Returns width and height of the image, and passes it through unchanged."""

    image: Image

    def run(self, ctx: loom.RunContext) -> ImageSize:
        batch_size, height, width = self.image.shape[:3]
        return ImageSize(width=int(width), height=int(height), batch_size=int(batch_size))


@loom.node("RepeatImageBatch", category="image/batch", v3=True)
class RepeatImageBatch:
    image: Image
    amount: int = ui.int(1, min=1, max=4096)

    def run(self, ctx: loom.RunContext) -> Image:
        return self.image.repeat((self.amount, 1, 1, 1))


@loom.node("ImageAddNoise", category="image", v3=True)
class ImageAddNoise:
    image: Image
    seed: int = ui.int(
        0,
        min=0,
        max=MAX_SEED,
        control_after_generate=True,
        tooltip="The random seed used for creating the noise.",
    )
    strength: float = ui.float(0.5, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        # Noise drawn on the CPU from its own generator (same numbers as ComfyUI's
        # torch.manual_seed), so the image matches on any device.
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        noise = torch.randn(self.image.size(), generator=generator, device="cpu")
        return torch.clip(self.image + self.strength * noise.to(self.image), 0.0, 1.0)


@loom.node("ResizeAndPadImage", category="image/transform", v3=True)
class ResizeAndPadImage:
    image: Image
    target_width: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)
    target_height: int = ui.int(512, min=1, max=MAX_RESOLUTION, step=1)
    padding_color: str = ui.combo(PAD_COLORS)
    interpolation: str = ui.combo(FIT_METHODS)

    def run(self, ctx: loom.RunContext) -> Image:
        import torch

        batch, height, width, channels = self.image.shape
        scale = min(self.target_width / width, self.target_height / height)
        new_width, new_height = int(width * scale), int(height * scale)
        resized = common_upscale(
            self.image.movedim(-1, 1), new_width, new_height, self.interpolation, "disabled"
        )
        fill = 0.0 if self.padding_color == "black" else 1.0
        out = torch.full(
            (batch, channels, self.target_height, self.target_width),
            fill,
            dtype=self.image.dtype,
            device=self.image.device,
        )
        top = (self.target_height - new_height) // 2
        left = (self.target_width - new_width) // 2
        out[:, :, top : top + new_height, left : left + new_width] = resized
        return out.movedim(1, -1)


NODES: tuple[type, ...] = (GetImageSize, RepeatImageBatch, ImageAddNoise, ResizeAndPadImage)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="comfy_extras.nodes_images")
