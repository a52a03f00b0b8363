"""The node classes this plugin provides."""

from __future__ import annotations

import loom
from loom import ui
from loom.types import Image


@loom.node(
    "ExampleImageBrightness", category="image/adjust", display_name="Image Brightness (example)"
)
class ExampleImageBrightness:
    """Multiply an image's colours by a factor, clamped to [0, 1]; alpha is left alone."""

    image: Image
    factor: float = ui.float(
        1.0, min=0.0, max=4.0, step=0.01, tooltip="1.0 leaves the image unchanged"
    )

    def run(self, ctx: loom.RunContext) -> Image:
        # IMAGE is [B, H, W, C] float in [0, 1]; C is 3 (RGB) or 4 (RGBA).
        out = self.image.clone()
        out[..., :3] = (self.image[..., :3] * self.factor).clamp(0.0, 1.0)
        return out
