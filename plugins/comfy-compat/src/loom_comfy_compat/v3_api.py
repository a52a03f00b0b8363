"""``comfy_api.latest.ComfyAPI`` / ``ComfyAPISync``: what a running node may ask of the
server. Its one service, ``execution.set_progress``, reports progress (and optionally a
preview picture) for the node running now, through Loom's own progress events.
"""

from __future__ import annotations

import io
from typing import Any

from loom.frontend import Preview, current_context

#: ComfyUI's default ``--preview-size``: previews are scaled to fit it unless told not to.
PREVIEW_SIZE = 512


def _preview(picture: Any, ignore_size_limit: bool) -> Preview:
    """A JPEG preview of a PIL image or an image tensor (``[B, H, W, C]`` or ``[H, W, C]``)."""
    from PIL import Image

    if not isinstance(picture, Image.Image):
        tensor = picture[0] if picture.ndim == 4 else picture
        array = (tensor.detach().float().cpu().clamp(0, 1) * 255).round().byte().numpy()
        picture = Image.fromarray(array)
    if not ignore_size_limit:
        picture = picture.copy()
        picture.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=95)
    return Preview("JPEG", buffer.getvalue())


def _set_progress(
    value: float,
    max_value: float,
    node_id: str | None,
    preview_image: Any,
    ignore_size_limit: bool,
) -> None:
    ctx = current_context()
    if ctx is None or (node_id is not None and node_id != ctx.node_id):
        # ComfyUI needs a node id outside a running node; Loom reports only for the node
        # running on this thread, so other ids are refused rather than silently dropped.
        raise ValueError(
            "set_progress reports for the node running now; "
            f"node_id={node_id!r} is not it (call it from inside execute)"
        )
    preview = _preview(preview_image, ignore_size_limit) if preview_image is not None else None
    ctx.progress(int(value), int(max_value), preview)


class ComfyAPI:
    """``ComfyAPI()``: ``await api.execution.set_progress(value, max_value)``."""

    class Execution:
        async def set_progress(
            self,
            value: float,
            max_value: float,
            node_id: str | None = None,
            preview_image: Any = None,
            ignore_size_limit: bool = False,
        ) -> None:
            """Report ``value`` of ``max_value`` for the running node (and a preview)."""
            _set_progress(value, max_value, node_id, preview_image, ignore_size_limit)

    def __init__(self) -> None:
        self.execution = ComfyAPI.Execution()


class ComfyAPISync:
    """``ComfyAPISync()``: the same calls without ``await``."""

    class Execution:
        def set_progress(
            self,
            value: float,
            max_value: float,
            node_id: str | None = None,
            preview_image: Any = None,
            ignore_size_limit: bool = False,
        ) -> None:
            """Report ``value`` of ``max_value`` for the running node (and a preview)."""
            _set_progress(value, max_value, node_id, preview_image, ignore_size_limit)

    def __init__(self) -> None:
        self.execution = ComfyAPISync.Execution()


__all__ = ["ComfyAPI", "ComfyAPISync"]
