"""How queue items, history entries and execution events travel through Redis (JSON)."""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs

from loom.events import ExecutionEvent, Preview
from loom.frontend import HistoryEntry, QueueItem

#: Input values that name a model file: what a worker advertises as loaded and a prompt
#: prefers (core never names a family; a file name is all the queue looks at).
MODEL_SUFFIXES = (".safetensors", ".sft", ".gguf", ".ckpt", ".pt", ".pth", ".bin")


def model_files(prompt: dict[str, Any]) -> list[str]:
    """The model file names a prompt's nodes take as inputs, sorted."""
    names = set()
    for node in prompt.values():
        inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
        for value in inputs.values():
            if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES):
                names.add(value)
    return sorted(names)


def as_text(value: Any) -> str:
    """A Redis reply field (bytes, or already str) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def encode_item(item: QueueItem) -> str:
    return json.dumps(attrs.asdict(item), default=str)


def decode_item(text: str | bytes) -> QueueItem:
    return QueueItem(**json.loads(text))


def encode_entry(entry: HistoryEntry) -> str:
    return json.dumps(attrs.asdict(entry), default=str)


def decode_entry(text: str | bytes) -> HistoryEntry:
    data = json.loads(text)
    data["item"] = QueueItem(**data["item"])
    return HistoryEntry(**data)


def encode_event(event: ExecutionEvent) -> str:
    data: dict[str, Any] = {"type": event.type, "data": event.data, "client_id": event.client_id}
    if event.preview is not None:
        preview = attrs.asdict(event.preview)
        preview["data"] = base64.b64encode(event.preview.data).decode("ascii")
        data["preview"] = preview
    return json.dumps(data, default=str)


def decode_event(text: str | bytes) -> ExecutionEvent:
    data = json.loads(text)
    preview = data.get("preview")
    if preview is not None:
        preview["data"] = base64.b64decode(preview["data"])
        preview = Preview(**preview)
    return ExecutionEvent(data["type"], data["data"], data.get("client_id"), preview)
