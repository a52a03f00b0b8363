"""Loading and saving images: LoadImage, LoadImageMask, SaveImage, PreviewImage, PreviewAny.

File names follow ComfyUI: LoadImage lists the image files directly inside the input
directory and accepts annotated names (``"clipspace/x.png [input]"``, ``"y.png [output]"``);
SaveImage writes ``<prefix>_<counter:05>_.png`` with the prompt and workflow in PNG text
chunks (see :mod:`loom.nodes.builtin.save_paths`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import random
import string
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import loom
from loom.nodes.builtin.save_paths import OutputPathError, confined, get_save_path
from loom.settings import Settings
from loom.types import AnyValue, Image, Mask, Socket

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

log = logging.getLogger(__name__)
ui = loom.ui

_ANNOTATIONS = {"[input]": "input", "[output]": "output", "[temp]": "temp"}
_EXTRA_IMAGE_SUFFIXES = frozenset({".webp", ".avif", ".jxl", ".heic", ".heif"})
#: PreviewImage's random prefix per node id, chosen once per process (ComfyUI: per node instance).
_preview_prefixes: dict[str, str] = {}


# --- directories and file names ----------------------------------------------------------


def settings_of(settings: Settings | None) -> Settings:
    """``settings``, or without a runtime (a bare executor, a script) the ``LOOM_*`` variables'."""
    return settings if settings is not None else Settings.from_env()


def run_settings(ctx: loom.RunContext) -> Settings:
    """The settings of the runtime running the node (``LOOM_*`` variables without one)."""
    return settings_of(ctx.runtime.settings if ctx.runtime is not None else None)


def split_annotation(name: str) -> tuple[str, str]:
    """``"x.png [output]"`` -> ``("x.png", "output")``; no annotation means ``input``."""
    for suffix, kind in _ANNOTATIONS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)].rstrip(), kind
    return name, "input"


def annotated_path(name: str, settings: Settings) -> Path:
    """The file an (optionally annotated) image name refers to, confined to its directory."""
    filename, kind = split_annotation(name)
    try:
        return confined(settings.directory(kind), filename)
    except OutputPathError as exc:
        raise FileNotFoundError(f"Invalid image file: {name}") from exc


def is_image_file(name: str) -> bool:
    kind, _ = mimetypes.guess_type(name)
    return (kind or "").startswith("image/") or Path(name).suffix.lower() in _EXTRA_IMAGE_SUFFIXES


def input_image_files(settings: Settings | None = None) -> list[str]:
    """Sorted image files directly inside the input directory (LoadImage's combo)."""
    folder = settings_of(settings).input_dir
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file()]
    except FileNotFoundError:
        return []
    return sorted(name for name in names if is_image_file(name))


def _file_digest(name: str, settings: Settings | None) -> str:
    path = annotated_path(name, settings_of(settings))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_image_name(name: str, settings: Settings | None) -> bool | str:
    try:
        exists = annotated_path(name, settings_of(settings)).is_file()
    except FileNotFoundError:
        exists = False
    return True if exists else f"Invalid image file: {name}"


def _open_image(path: Path) -> PILImage:
    from PIL import Image as PILImageModule
    from PIL import ImageFile

    try:
        return PILImageModule.open(path)
    except FileNotFoundError:
        raise
    except OSError:
        # ComfyUI retries truncated files with LOAD_TRUNCATED_IMAGES.
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            picture = PILImageModule.open(path)
            picture.load()
            return picture
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


# --- loading -----------------------------------------------------------------------------


@loom.outputs
class LoadedImage:
    image: Image = loom.output(name="IMAGE")
    mask: Mask = loom.output(name="MASK")


def _frame_mask(frame: PILImage) -> Any:
    """``1 - alpha`` (ComfyUI's convention: 1 = area to fill); a 64x64 zero mask without alpha."""
    import numpy as np
    import torch

    if "A" in frame.getbands():
        alpha = np.array(frame.getchannel("A")).astype(np.float32) / 255.0
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = np.array(frame.convert("RGBA").getchannel("A")).astype(np.float32) / 255.0
    else:
        return torch.zeros((64, 64), dtype=torch.float32)
    return 1.0 - torch.from_numpy(alpha)


def load_image_file(path: Path) -> LoadedImage:
    """Every frame of the same size as the first, EXIF-rotated, as IMAGE and MASK batches."""
    import numpy as np
    import torch
    from PIL import ImageOps, ImageSequence

    picture = _open_image(path)
    images: list[Any] = []
    masks: list[Any] = []
    size = None
    for frame in ImageSequence.Iterator(picture):
        frame = ImageOps.exif_transpose(frame)
        if frame.mode == "I":
            frame = frame.point(lambda value: value * (1 / 255))
        rgb = frame.convert("RGB")
        size = size or rgb.size
        if rgb.size != size:
            continue
        images.append(torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0)[None])
        masks.append(_frame_mask(frame).unsqueeze(0))
    if len(images) > 1 and picture.format != "MPO":  # MPO: stereo pairs, keep the first view
        return LoadedImage(image=torch.cat(images, dim=0), mask=torch.cat(masks, dim=0))
    return LoadedImage(image=images[0], mask=masks[0])


class _InputImageFile:
    """Checks shared by nodes reading ``self.image`` from the input directory: re-run when the
    file's bytes change (IS_CHANGED), and name a missing file at validation."""

    @classmethod
    def fingerprint(cls, image: str, settings: Settings | None = None) -> str:
        return _file_digest(image, settings)

    @classmethod
    def validate_inputs(cls, image: str, settings: Settings | None = None) -> bool | str:
        return _check_image_name(image, settings)


@loom.node("LoadImage", category="image", display_name="Load Image")
class LoadImage(_InputImageFile):
    image: str = ui.combo(input_image_files, image_upload=True)

    def run(self, ctx: loom.RunContext) -> LoadedImage:
        return load_image_file(annotated_path(self.image, run_settings(ctx)))


@loom.node(
    "LoadImageOutput",
    category="image",
    display_name="Load Image (from Outputs)",
    experimental=True,
)
class LoadImageOutput(_InputImageFile):
    """Load an image from the output folder. When the refresh button is clicked, the node will update the image list and automatically select the first image, allowing for easy iteration."""

    # No list of names: the frontend fetches the output folder's files from the remote route
    # and sends the chosen one annotated ("x.png [output]"), which annotated_path resolves.
    image: Annotated[str, Socket("COMBO")] = ui.input(
        image_upload=True,
        image_folder="output",
        remote={
            "route": "/internal/files/output",
            "refresh_button": True,
            "control_after_refresh": "first",
        },
    )

    def run(self, ctx: loom.RunContext) -> LoadedImage:
        return load_image_file(annotated_path(self.image, run_settings(ctx)))


@loom.node("LoadImageMask", category="mask", display_name="Load Image (as Mask)")
class LoadImageMask(_InputImageFile):
    image: str = ui.combo(input_image_files, image_upload=True)
    channel: str = ui.combo(("alpha", "red", "green", "blue"))

    def run(self, ctx: loom.RunContext) -> Mask:
        import numpy as np
        import torch
        from PIL import ImageOps

        picture = ImageOps.exif_transpose(
            _open_image(annotated_path(self.image, run_settings(ctx)))
        )
        if picture.getbands() != ("R", "G", "B", "A"):
            if picture.mode == "I":
                picture = picture.point(lambda value: value * (1 / 255))
            picture = picture.convert("RGBA")
        band = self.channel[0].upper()
        if band not in picture.getbands():
            return torch.zeros((1, 64, 64), dtype=torch.float32)
        mask = torch.from_numpy(np.array(picture.getchannel(band)).astype(np.float32) / 255.0)
        return (1.0 - mask if band == "A" else mask).unsqueeze(0)


# --- saving ------------------------------------------------------------------------------


def png_metadata(ctx: loom.RunContext) -> Any:
    """``prompt`` and one chunk per ``extra_pnginfo`` key, as JSON; None when disabled."""
    from PIL.PngImagePlugin import PngInfo

    if run_settings(ctx).disable_metadata:
        return None
    info = PngInfo()
    if ctx.prompt is not None:
        info.add_text("prompt", json.dumps(_plain(ctx.prompt)))
    for key, value in (ctx.extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(_plain(value)))
    return info


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def save_images(
    images: Image, ctx: loom.RunContext, filename_prefix: str, *, kind: str, compress_level: int
) -> list[dict[str, str]]:
    """Write each image of the batch as a PNG under the ``kind`` directory; the UI entries."""
    import numpy as np

    height, width = images.shape[1], images.shape[2]
    target = get_save_path(filename_prefix, run_settings(ctx).directory(kind), width, height)
    metadata = png_metadata(ctx)
    results = []
    from PIL import Image as PILImageModule

    for batch_number, image in enumerate(images):
        pixels = np.clip(255.0 * image.cpu().float().numpy(), 0, 255).astype(np.uint8)
        name = target.file_name(target.counter + batch_number, "png", batch_number)
        PILImageModule.fromarray(pixels).save(
            target.folder / name, pnginfo=metadata, compress_level=compress_level
        )
        results.append({"filename": name, "subfolder": target.subfolder, "type": kind})
    return results


_SAVE_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


@loom.node(
    "SaveImage", category="image", display_name="Save Image", output_node=True, hidden=_SAVE_HIDDEN
)
class SaveImage:
    """Saves the input images to your ComfyUI output directory."""

    images: Image = ui.input(tooltip="The images to save.")
    filename_prefix: str = ui.string(
        "ComfyUI",
        tooltip="The prefix for the file to save. This may include formatting information such as "
        "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
    )

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        results = save_images(
            self.images, ctx, self.filename_prefix, kind="output", compress_level=4
        )
        return loom.NodeOutput(ui={"images": results})


def preview_prefix(node_id: str) -> str:
    """``ComfyUI_temp_<5 random lowercase letters>``, fixed per node id for this process."""
    suffix = _preview_prefixes.setdefault(
        node_id, "".join(random.choices(string.ascii_lowercase, k=5))
    )
    return f"ComfyUI_temp_{suffix}"


@loom.node(
    "PreviewImage",
    category="image",
    display_name="Preview Image",
    output_node=True,
    hidden=_SAVE_HIDDEN,
)
class PreviewImage:
    """Saves the input images to your ComfyUI output directory."""

    # The description is SaveImage's on purpose: ComfyUI's PreviewImage inherits it.

    images: Image

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        results = save_images(
            self.images, ctx, preview_prefix(ctx.node_id), kind="temp", compress_level=1
        )
        return loom.NodeOutput(ui={"images": results})


def preview_text(source: Any) -> str:
    """How PreviewAny shows a value: strings as is, numbers via str, the rest as JSON if possible."""
    if source is None:
        return "None"
    if isinstance(source, str):
        return source
    if isinstance(source, (int, float, bool)):
        return str(source)
    try:
        return json.dumps(source)
    except (TypeError, ValueError):
        try:
            return str(source)
        except Exception:
            return "source exists, but could not be serialized."


@loom.node("PreviewAny", category="utils", display_name="Preview as Text", output_node=True)
class PreviewAny:
    source: AnyValue = ui.input()

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        return loom.NodeOutput(ui={"text": [preview_text(self.source)]})


NODES: tuple[type, ...] = (
    LoadImage,
    LoadImageMask,
    LoadImageOutput,
    SaveImage,
    PreviewImage,
    PreviewAny,
)
PYTHON_MODULES: dict[type, str] = {PreviewAny: "comfy_extras.nodes_preview_any"}


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=PYTHON_MODULES.get(node_class, "nodes"))
