"""``comfy_api.latest.ui``: what a V3 node shows in the frontend (``NodeOutput(ui=...)``).

Each class's :meth:`as_dict` is the node's ``executed`` payload (``{"images": [...]}``,
``{"text": [...]}``). Previews are written to the temp directory through Loom's own image
saving, with the running prompt's metadata.
"""

from __future__ import annotations

import random
import string
from typing import Any

from loom.frontend import (
    current_context,
    save_animated_png,
    save_animated_webp,
    save_images,
)
from loom_comfy_compat.v3_io import FolderType


class _UIOutput:
    """Base class of UI outputs."""

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class SavedResult(dict):
    """One saved file as the frontend addresses it: filename, subfolder, type."""

    def __init__(self, filename: str, subfolder: str, type: Any) -> None:
        super().__init__(filename=filename, subfolder=subfolder, type=getattr(type, "value", type))

    @property
    def filename(self) -> str:
        return self["filename"]

    @property
    def subfolder(self) -> str:
        return self["subfolder"]

    @property
    def type(self) -> FolderType:
        return FolderType(self["type"])


class SavedImages(_UIOutput):
    """Images already written somewhere the frontend can fetch them."""

    def __init__(self, results: list[Any], is_animated: bool = False) -> None:
        self.results = list(results)
        self.is_animated = is_animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": [dict(r) for r in self.results], "animated": (self.is_animated,)}


def _temp_prefix() -> str:
    return "ComfyUI_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))


def _running(what: str) -> Any:
    ctx = current_context()
    if ctx is None:
        raise RuntimeError(f"{what} can only be used while a node executes")
    return ctx


class ImageSaveHelper:
    """Image saving for V3 save nodes: PNGs with the prompt's metadata, as SavedResults."""

    @staticmethod
    def save_images(
        images: Any,
        filename_prefix: str,
        folder_type: Any,
        cls: Any = None,
        compress_level: int = 4,
    ) -> list[SavedResult]:
        """Write each image of the batch as a PNG under ``folder_type``'s directory."""
        ctx = _running("ui.ImageSaveHelper.save_images")
        saved = save_images(
            images, ctx, filename_prefix, kind=_kind(folder_type), compress_level=compress_level
        )
        return [SavedResult(r["filename"], r["subfolder"], r["type"]) for r in saved]

    @staticmethod
    def get_save_images_ui(
        images: Any, filename_prefix: str, cls: Any = None, compress_level: int = 4
    ) -> SavedImages:
        """Save to the output directory and wrap the files for ``NodeOutput(ui=...)``."""
        return SavedImages(
            ImageSaveHelper.save_images(images, filename_prefix, "output", cls, compress_level)
        )

    @staticmethod
    def save_animated_png(
        images: Any, filename_prefix: str, folder_type: Any, cls: Any, fps: float,
        compress_level: int,
    ) -> SavedResult:  # fmt: skip
        """Write the batch as one animated PNG (the prompt in ``comf`` chunks)."""
        ctx = _running("ui.ImageSaveHelper.save_animated_png")
        entry = save_animated_png(
            images, ctx, filename_prefix, kind=_kind(folder_type), fps=fps,
            compress_level=compress_level,
        )  # fmt: skip
        return SavedResult(entry["filename"], entry["subfolder"], entry["type"])

    @staticmethod
    def get_save_animated_png_ui(
        images: Any, filename_prefix: str, cls: Any, fps: float, compress_level: int
    ) -> SavedImages:
        """Save an APNG to the output directory, wrapped for ``NodeOutput(ui=...)``."""
        saved = ImageSaveHelper.save_animated_png(
            images, filename_prefix, "output", cls, fps, compress_level
        )
        return SavedImages([saved], is_animated=len(images) > 1)

    @staticmethod
    def save_animated_webp(
        images: Any, filename_prefix: str, folder_type: Any, cls: Any, fps: float,
        lossless: bool, quality: int, method: int,
    ) -> SavedResult:  # fmt: skip
        """Write the batch as one animated WEBP (the prompt in its EXIF)."""
        ctx = _running("ui.ImageSaveHelper.save_animated_webp")
        entry = save_animated_webp(
            images, ctx, filename_prefix, kind=_kind(folder_type), fps=fps,
            lossless=lossless, quality=quality, method=method,
        )  # fmt: skip
        return SavedResult(entry["filename"], entry["subfolder"], entry["type"])

    @staticmethod
    def get_save_animated_webp_ui(
        images: Any, filename_prefix: str, cls: Any, fps: float, lossless: bool,
        quality: int, method: int,
    ) -> SavedImages:  # fmt: skip
        """Save an animated WEBP to the output directory, wrapped for ``NodeOutput(ui=...)``."""
        saved = ImageSaveHelper.save_animated_webp(
            images, filename_prefix, "output", cls, fps, lossless, quality, method
        )
        return SavedImages([saved], is_animated=len(images) > 1)


def _kind(folder_type: Any) -> str:
    return str(getattr(folder_type, "value", folder_type))


class PreviewImage(_UIOutput):
    """Write ``image`` (``[B, H, W, C]``) to the temp directory and show it on the node."""

    def __init__(self, image: Any, animated: bool = False, cls: Any = None, **_: Any) -> None:
        ctx = _running("ui.PreviewImage")
        self.results = save_images(image, ctx, _temp_prefix(), kind="temp", compress_level=1)
        self.animated = animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.results, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    """Show a mask (``[B, H, W]``) as a greyscale preview."""

    def __init__(self, mask: Any, animated: bool = False, cls: Any = None, **_: Any) -> None:
        image = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        image = image.movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(image, animated, cls)


class PreviewText(_UIOutput):
    """Show text on the node."""

    def __init__(self, value: str, **_: Any) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": (self.value,)}


def ui_dict(ui: Any) -> dict[str, Any] | None:
    """A node's ``ui`` value as the dict the executor reports."""
    if ui is None:
        return None
    if isinstance(ui, _UIOutput):
        return ui.as_dict()
    if isinstance(ui, dict):
        return ui
    raise TypeError(f"ui must be a comfy_api ui object or a dict, got {type(ui).__name__}")


__all__ = [
    "ImageSaveHelper",
    "PreviewImage",
    "PreviewMask",
    "PreviewText",
    "SavedImages",
    "SavedResult",
]
