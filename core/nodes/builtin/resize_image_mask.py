"""ComfyUI 0.8's ``ResizeImageMaskNode`` (``comfy_extras/nodes_post_processing.py``): one
node that resizes an image or a mask, the way chosen in a DynamicCombo.

The input is an IMAGE (``[B, H, W, C]``) or a MASK (``[B, H, W]``), told apart by rank as
ComfyUI does; the output has the input's type. Sizes follow ComfyUI's formulas (Python's
``round``), and resampling goes through :func:`loom.resample.common_upscale`.

The resize types are 0.8's eight, "scale by multiplier" first (the first is the default a
new node shows). ComfyUI added a ninth, "scale to multiple" (PR #11838, 2026-01-13), and
moved "scale dimensions" first (PR #12040, 2026-01-23), both after the 0.8 releases
(bench/comfyui_0_8_io/image.json names the evidence).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import loom
from loom.nodes.builtin.image import MAX_RESOLUTION
from loom.nodes.dynamic import DynamicCombo, DynamicOption, Slot
from loom.nodes.spec import NodeOutput, OutputDef
from loom.resample import CROP_METHODS, IMAGE_METHODS, common_upscale
from loom.types import Socket

ui = loom.ui

MATCH_TYPE = "COMFY_MATCHTYPE_V3"
TEMPLATE = {"template_id": "input_type", "allowed_types": "IMAGE,MASK"}
ImageOrMask = Annotated[Any, Socket(MATCH_TYPE)]


def _crop() -> Slot:
    return Slot.widget(
        "crop",
        ui.combo(
            CROP_METHODS,
            default="center",
            tooltip="How to handle aspect ratio mismatch: 'disabled' stretches to fit, 'center' "
            "crops to maintain aspect ratio.",
        ),
    )


def _size(name: str, tooltip: str) -> Slot:
    return Slot.widget(name, ui.int(512, min=0, max=MAX_RESOLUTION, step=1, tooltip=tooltip))


RESIZE_TYPES = DynamicCombo(
    [
        DynamicOption(
            "scale by multiplier",
            [
                Slot.widget(
                    "multiplier",
                    ui.float(
                        1.0,
                        min=0.01,
                        max=8.0,
                        step=0.01,
                        tooltip="Scale factor (e.g., 2.0 doubles size, 0.5 halves size).",
                    ),
                )
            ],
        ),
        DynamicOption(
            "scale dimensions",
            [
                _size(
                    "width",
                    "Target width in pixels. Set to 0 to auto-calculate from height while "
                    "preserving aspect ratio.",
                ),
                _size(
                    "height",
                    "Target height in pixels. Set to 0 to auto-calculate from width while "
                    "preserving aspect ratio.",
                ),
                _crop(),
            ],
        ),
        DynamicOption(
            "scale longer dimension",
            [
                _size(
                    "longer_size",
                    "The longer edge will be resized to this value. Aspect ratio is preserved.",
                )
            ],
        ),
        DynamicOption(
            "scale shorter dimension",
            [
                _size(
                    "shorter_size",
                    "The shorter edge will be resized to this value. Aspect ratio is preserved.",
                )
            ],
        ),
        DynamicOption(
            "scale width",
            [
                _size(
                    "width",
                    "Target width in pixels. Height auto-adjusts to preserve aspect ratio.",
                )
            ],
        ),
        DynamicOption(
            "scale height",
            [
                _size(
                    "height",
                    "Target height in pixels. Width auto-adjusts to preserve aspect ratio.",
                )
            ],
        ),
        DynamicOption(
            "scale total pixels",
            [
                Slot.widget(
                    "megapixels",
                    ui.float(
                        1.0,
                        min=0.01,
                        max=16.0,
                        step=0.01,
                        tooltip="Target total megapixels (e.g., 1.0 ≈ 1024×1024). Aspect "
                        "ratio is preserved.",
                    ),
                )
            ],
        ),
        DynamicOption(
            "match size",
            [
                Slot.socket(
                    "match",
                    "IMAGE,MASK",
                    tooltip="Resize input to match the dimensions of this reference image or mask.",
                ),
                _crop(),
            ],
        ),
    ]
)


def _resized(input: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    """``input`` (image or mask) resampled to ``width x height``."""
    if input.ndim == 4:
        return common_upscale(input.movedim(-1, 1), width, height, method, crop).movedim(1, -1)
    return common_upscale(input.unsqueeze(1), width, height, method, crop).squeeze(1)


def _dimensions(input: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    if width == 0 and height == 0:
        return input
    in_height, in_width = input.shape[1], input.shape[2]
    if width == 0:
        width = max(1, round(in_width * height / in_height))
    elif height == 0:
        height = max(1, round(in_height * width / in_width))
    return _resized(input, width, height, method, crop)


def _edge(input: Any, size: int, method: str, *, longer: bool) -> Any:
    """Scale the longer (or shorter) edge to ``size``, keeping the aspect ratio."""
    height, width = input.shape[1], input.shape[2]
    if height == width:
        return _resized(input, size, size, method)
    height_is_edge = (height > width) == longer
    if height_is_edge:
        return _resized(input, round(width / height * size), size, method)
    return _resized(input, size, round(height / width * size), method)


def _total_pixels(input: Any, megapixels: float, method: str) -> Any:
    height, width = input.shape[1], input.shape[2]
    scale = math.sqrt(int(megapixels * 1024 * 1024) / (width * height))
    return _resized(input, round(width * scale), round(height * scale), method)


def resize(input: Any, choice: Mapping[str, Any], method: str) -> Any:
    """``input`` resized as the DynamicCombo ``choice`` says."""
    kind = choice["resize_type"]
    if kind == "scale dimensions":
        return _dimensions(input, choice["width"], choice["height"], method, choice["crop"])
    if kind == "scale by multiplier":
        factor = choice["multiplier"]
        size = (round(input.shape[2] * factor), round(input.shape[1] * factor))
        return _resized(input, *size, method)
    if kind in ("scale longer dimension", "scale shorter dimension"):
        size = (
            choice["longer_size"] if kind.endswith("longer dimension") else choice["shorter_size"]
        )
        return _edge(input, size, method, longer=kind == "scale longer dimension")
    if kind == "scale width":
        return _dimensions(input, choice["width"], 0, method)
    if kind == "scale height":
        return _dimensions(input, 0, choice["height"], method)
    if kind == "scale total pixels":
        return _total_pixels(input, choice["megapixels"], method)
    if kind == "match size":
        match = choice["match"]
        return _resized(input, match.shape[2], match.shape[1], method, choice["crop"])
    raise ValueError(f"ResizeImageMaskNode: unknown resize_type {kind!r}")


@loom.node(
    "ResizeImageMaskNode",
    category="transform",
    display_name="Resize Image/Mask",
    outputs=[OutputDef(MATCH_TYPE, "resized")],
    v3=True,
)
class ResizeImageMaskNode:
    """Resize an image or mask using various scaling methods."""

    input: ImageOrMask = ui.input(template=TEMPLATE)
    resize_type: dict[str, Any] = ui.dynamic_combo(
        RESIZE_TYPES,
        tooltip="Select how to resize: by exact dimensions, scale factor, matching another "
        "image, etc.",
    )
    scale_method: str = ui.combo(
        IMAGE_METHODS,
        default="area",
        tooltip="Interpolation algorithm. 'area' is best for downscaling, 'lanczos' for "
        "upscaling, 'nearest-exact' for pixel art.",
    )

    def run(self, ctx: loom.RunContext) -> NodeOutput:
        if getattr(self.input, "ndim", None) not in (3, 4):
            raise ValueError(
                "ResizeImageMaskNode: input 'input' must be an IMAGE [B, H, W, C] or a MASK "
                f"[B, H, W], got {type(self.input).__name__} "
                f"of shape {tuple(getattr(self.input, 'shape', ()))}"
            )
        return NodeOutput(values=(resize(self.input, self.resize_type, self.scale_method),))


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    register(ResizeImageMaskNode, python_module="comfy_extras.nodes_post_processing")
