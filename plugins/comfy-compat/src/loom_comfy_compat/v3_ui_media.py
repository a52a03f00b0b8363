"""``comfy_api.latest.ui``'s audio, video and 3D outputs.

``PreviewVideo`` and ``PreviewUI3D`` only shape the ``executed`` message (the files are
already written by the node), so they work as in ComfyUI. Saving audio needs an audio
encoder (ComfyUI uses PyAV), which Loom does not have: ``AudioSaveHelper`` and
``PreviewAudio`` import and construct fine but fail when they would write, with a
:class:`~loom.errors.LoomError` naming the node.
"""

from __future__ import annotations

import uuid
from typing import Any

from loom.frontend import current_context
from loom_comfy_compat.v3_media import media_unsupported
from loom_comfy_compat.v3_ui import SavedResult, _UIOutput


class SavedAudios(_UIOutput):
    """Audio files already written where the frontend can fetch them."""

    def __init__(self, results: list[Any]) -> None:
        self.results = list(results)

    def as_dict(self) -> dict[str, Any]:
        return {"audio": [dict(r) for r in self.results]}


class AudioSaveHelper:
    """Audio saving for V3 nodes (FLAC / MP3 / Opus): not available on Loom."""

    @staticmethod
    def save_audio(
        audio: dict,
        filename_prefix: str,
        folder_type: Any,
        cls: Any = None,
        format: str = "flac",
        quality: str = "128k",
    ) -> list[SavedResult]:
        """Would write each waveform of the batch; raises (no audio encoder)."""
        raise media_unsupported(f"encoding audio as {format}")

    @staticmethod
    def get_save_audio_ui(
        audio: dict, filename_prefix: str, cls: Any = None, format: str = "flac",
        quality: str = "128k",
    ) -> SavedAudios:  # fmt: skip
        """Save to the output directory and wrap for ``NodeOutput(ui=...)``."""
        return SavedAudios(
            AudioSaveHelper.save_audio(audio, filename_prefix, "output", cls, format, quality)
        )


class PreviewAudio(_UIOutput):
    """Play ``audio`` on the node (written to the temp directory as FLAC)."""

    def __init__(self, audio: dict, cls: Any = None, **_: Any) -> None:
        self.values = AudioSaveHelper.save_audio(audio, "ComfyUI_temp_", "temp", cls)

    def as_dict(self) -> dict[str, Any]:
        return {"audio": self.values}


class PreviewVideo(_UIOutput):
    """Show video files the node has written (``SavedResult`` entries) on the node."""

    def __init__(self, values: list[Any], **_: Any) -> None:
        self.values = list(values)

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (True,)}


class PreviewUI3D(_UIOutput):
    """Show a 3D model file in the node's viewer, with camera info and an optional
    background (``bg_image=``, an image batch; its first image is written to temp)."""

    def __init__(self, model_file: Any, camera_info: Any, **kwargs: Any) -> None:
        self.model_file = model_file
        self.camera_info = camera_info
        self.bg_image_path: str | None = None
        bg_image = kwargs.get("bg_image")
        if bg_image is not None:
            self.bg_image_path = _write_background(bg_image)

    def as_dict(self) -> dict[str, Any]:
        return {"result": [self.model_file, self.camera_info, self.bg_image_path]}


def _write_background(images: Any) -> str:
    """Write ``images[0]`` as a PNG in the temp directory; its ``temp/<name>`` path."""
    import numpy as np
    from PIL import Image

    ctx = current_context()
    if ctx is None:
        raise RuntimeError("ui.PreviewUI3D(bg_image=...) can only be used while a node executes")
    folder = ctx.require_runtime("the temp directory").settings.directory("temp")
    folder.mkdir(parents=True, exist_ok=True)
    name = f"bg_{uuid.uuid4().hex}.png"
    pixels = np.clip(255.0 * images[0].detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / name, compress_level=1)
    return f"temp/{name}"


__all__ = ["AudioSaveHelper", "PreviewAudio", "PreviewUI3D", "PreviewVideo", "SavedAudios"]
