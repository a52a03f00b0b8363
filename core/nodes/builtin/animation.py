"""SaveAnimatedWEBP and SaveAnimatedPNG (ComfyUI's ``comfy_extras/nodes_images.py``): an IMAGE
batch written as one animated file in the output directory, one frame per image.

Metadata follows ComfyUI: the WEBP carries the prompt in EXIF tag 0x0110 (Model) as
``prompt:<json>`` and each ``extra_pnginfo`` key in 0x010F (Make) downwards; the APNG carries
them in private ``comf`` chunks after the image data, ``key\\0<json>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import loom
from loom.nodes.builtin.image_io import run_settings
from loom.nodes.builtin.save_paths import get_save_path
from loom.types import Image

ui = loom.ui

#: SaveAnimatedWEBP's ``method`` choices -> libwebp effort (0 fast .. 6 slow).
WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def _frames(images: Image) -> list[Any]:
    import numpy as np
    from PIL import Image as PILImage

    return [
        PILImage.fromarray(np.clip(255.0 * image.cpu().float().numpy(), 0, 255).astype(np.uint8))
        for image in images
    ]


def _save_target(
    ctx: loom.RunContext, images: Image, prefix: str, extension: str, kind: str
) -> tuple:
    directory = run_settings(ctx).directory(kind)
    target = get_save_path(prefix, directory, images.shape[2], images.shape[1])
    name = target.file_name(target.counter, extension)
    return target.folder / name, {"filename": name, "subfolder": target.subfolder, "type": kind}


def _ui(entry: dict[str, str], frame_count: int) -> dict[str, Any]:
    ui_data: dict[str, Any] = {"images": [entry]}
    if frame_count > 1:
        ui_data["animated"] = [True]
    return ui_data


def webp_exif(first_frame: Any, ctx: loom.RunContext) -> Any:
    exif = first_frame.getexif()
    if run_settings(ctx).disable_metadata:
        return exif
    if ctx.prompt is not None:
        exif[0x0110] = f"prompt:{json.dumps(ctx.prompt)}"
    tag = 0x010F
    for key, value in (ctx.extra_pnginfo or {}).items():
        exif[tag] = f"{key}:{json.dumps(value)}"
        tag -= 1
    return exif


def apng_metadata(ctx: loom.RunContext) -> Any:
    from PIL.PngImagePlugin import PngInfo

    if run_settings(ctx).disable_metadata:
        return None
    info = PngInfo()
    chunks = {"prompt": ctx.prompt} if ctx.prompt is not None else {}
    chunks.update(ctx.extra_pnginfo or {})
    for key, value in chunks.items():
        payload = key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1")
        info.add(b"comf", payload, after_idat=True)
    return info


def save_animated_webp(
    images: Image,
    ctx: loom.RunContext,
    filename_prefix: str,
    *,
    kind: str,
    fps: float,
    lossless: bool,
    quality: int,
    method: int,
) -> dict[str, str]:
    """Write the batch as one animated WEBP under the ``kind`` directory (``method`` is
    libwebp's effort, 0..6); its UI entry."""
    path, entry = _save_target(ctx, images, filename_prefix, "webp", kind)
    frames = _frames(images)
    frames[0].save(
        path,
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
        exif=webp_exif(frames[0], ctx),
        lossless=lossless,
        quality=quality,
        method=method,
    )
    return entry


def save_animated_png(
    images: Image,
    ctx: loom.RunContext,
    filename_prefix: str,
    *,
    kind: str,
    fps: float,
    compress_level: int,
) -> dict[str, str]:
    """Write the batch as one APNG under the ``kind`` directory; its UI entry."""
    path, entry = _save_target(ctx, images, filename_prefix, "png", kind)
    frames = _frames(images)
    frames[0].save(
        path,
        pnginfo=apng_metadata(ctx),
        compress_level=compress_level,
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
    )
    return entry


@loom.node(
    "SaveAnimatedWEBP", category="image/animation", output_node=True, hidden=_HIDDEN, v3=True
)
class SaveAnimatedWEBP:
    images: Image
    filename_prefix: str = ui.string("ComfyUI")
    fps: float = ui.float(6.0, min=0.01, max=1000.0, step=0.01)
    lossless: bool = ui.boolean(True)
    quality: int = ui.int(80, min=0, max=100)
    method: str = ui.combo(list(WEBP_METHODS))

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        entry = save_animated_webp(
            self.images, ctx, self.filename_prefix, kind="output", fps=self.fps,
            lossless=self.lossless, quality=self.quality, method=WEBP_METHODS[self.method],
        )  # fmt: skip
        return loom.NodeOutput(ui=_ui(entry, len(self.images)))


@loom.node("SaveAnimatedPNG", category="image/animation", output_node=True, hidden=_HIDDEN, v3=True)
class SaveAnimatedPNG:
    images: Image
    filename_prefix: str = ui.string("ComfyUI")
    fps: float = ui.float(6.0, min=0.01, max=1000.0, step=0.01)
    compress_level: int = ui.int(4, min=0, max=9)

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        entry = save_animated_png(
            self.images, ctx, self.filename_prefix, kind="output", fps=self.fps,
            compress_level=self.compress_level,
        )  # fmt: skip
        return loom.NodeOutput(ui=_ui(entry, len(self.images)))


NODES: tuple[type, ...] = (SaveAnimatedWEBP, SaveAnimatedPNG)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module="comfy_extras.nodes_images")
