"""ComfyUI's ``WebcamCapture`` (``comfy_extras/nodes_webcam.py``): a frame the frontend
captured from the webcam and uploaded to the input folder, loaded like ``LoadImage``.

The ``image`` value is the uploaded file's name (``"webcam/1234.png [temp]"``); width and
height only size the capture in the browser. With ``capture_on_queue`` the frontend takes a
new picture per queue, so the node always re-runs; otherwise it re-runs when the file's
bytes change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import loom
from loom.nodes.builtin.image import MAX_RESOLUTION
from loom.nodes.builtin.image_io import (
    _check_image_name,
    _file_digest,
    annotated_path,
    load_image_file,
    run_settings,
)
from loom.settings import Settings
from loom.types import Image, Socket

ui = loom.ui


@loom.node("WebcamCapture", category="image", display_name="Webcam Capture", v3=True)
class WebcamCapture:
    image: Annotated[str, Socket("WEBCAM")] = ui.input()
    width: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    height: int = ui.int(0, min=0, max=MAX_RESOLUTION, step=1)
    capture_on_queue: bool = ui.boolean(True)

    @classmethod
    def fingerprint(
        cls, image: str, capture_on_queue: bool = True, settings: Settings | None = None
    ) -> str | float:
        if capture_on_queue:
            return float("nan")  # a new capture every queue
        return _file_digest(image, settings)

    @classmethod
    def validate_inputs(cls, image: str, settings: Settings | None = None) -> bool | str:
        return _check_image_name(image, settings)

    def run(self, ctx: loom.RunContext) -> Image:
        return load_image_file(annotated_path(self.image, run_settings(ctx))).image


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    register(WebcamCapture, python_module="comfy_extras.nodes_webcam")
