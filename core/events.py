"""Execution events: ComfyUI's websocket message types, delivered through the event hook."""

from __future__ import annotations

import time
from typing import Any

import attrs

EVENT_TYPES = frozenset(
    {
        "status",
        "execution_start",
        "execution_cached",
        "executing",
        "progress",
        "progress_state",
        "executed",
        "execution_success",
        "execution_error",
        "execution_interrupted",
    }
)

#: Events ComfyUI sends to every client rather than only to the prompt's client.
BROADCAST_TYPES = frozenset({"status", "execution_interrupted"})


@attrs.frozen
class Preview:
    """A latent preview image for the websocket's binary frame."""

    image_format: str  # "JPEG" or "PNG"
    data: bytes
    node_id: str | None = None
    prompt_id: str | None = None
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None


@attrs.frozen
class ExecutionEvent:
    """One message: ``type`` and ``data`` as ComfyUI sends them, and who it is for.

    ``client_id`` is the id of the client that queued the prompt (None: nobody, so
    per-prompt messages are not sent, while progress is broadcast as ComfyUI does).
    """

    type: str
    data: dict[str, Any]
    client_id: str | None = None
    preview: Preview | None = None

    @property
    def broadcast(self) -> bool:
        return self.type in BROADCAST_TYPES


def now_ms() -> int:
    return int(time.time() * 1000)
