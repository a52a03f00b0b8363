"""ComfyUI's list mapping around one node's run: which calls a node's input lists make, and
how the calls' outputs and UI dicts merge back into the node's result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loom.errors import NodeExecutionError
from loom.nodes.spec import InputTypes, NodeDef, NodeOutput


def hidden_kinds(spec: InputTypes) -> dict[str, str]:
    """Hidden input name -> its kind (``"UNIQUE_ID"``), however the spec wrote it."""
    return {
        name: kind[0] if isinstance(kind, (list, tuple)) else kind
        for name, kind in (spec.get("hidden") or {}).items()
    }


def lazy_input_names(spec: Mapping[str, Any]) -> set[str]:
    """The required and optional inputs ``spec`` marks ``lazy``."""
    return {
        name
        for section in ("required", "optional")
        for name, config in (spec.get(section) or {}).items()
        if isinstance(config, (list, tuple))
        and len(config) > 1
        and isinstance(config[1], dict)
        and config[1].get("lazy")
    }


def split_calls(definition: NodeDef, inputs: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """ComfyUI's list mapping: one call per element, shorter lists repeat their last."""
    if definition.input_is_list:
        return [inputs]
    lengths = [len(v) for v in inputs.values() if v]
    count = max(lengths) if lengths else 1
    return [{k: v[min(i, len(v) - 1)] for k, v in inputs.items() if v} for i in range(count)]


def merge_ui(produced: list[NodeOutput]) -> dict[str, Any] | None:
    """UI dicts of several calls merged key-wise (lists concatenated)."""
    ui: dict[str, Any] | None = None
    for part in produced:
        for key, value in (part.ui or {}).items():
            ui = ui if ui is not None else {}
            if isinstance(value, (list, tuple)):
                ui[key] = [*ui.get(key, []), *value]
            else:
                ui[key] = value
    return ui


def merge_values(
    node_id: str,
    definition: NodeDef,
    calls: list[tuple[Any, ...]],
    inputs: Mapping[str, list[Any]],
) -> tuple[list[Any], ...]:
    """Each output slot's values over the calls (a list output's items spliced in)."""
    merged: list[list[Any]] = [[] for _ in definition.outputs]
    for values in calls:
        if len(values) < len(definition.outputs):
            error = TypeError(
                f"returned {len(values)} values, but the node declares "
                f"{len(definition.outputs)} outputs"
            )
            raise NodeExecutionError(node_id, definition.class_type, error, inputs)
        for slot, output in enumerate(definition.outputs):
            if output.is_list:
                merged[slot].extend(values[slot])
            else:
                merged[slot].append(values[slot])
    return tuple(merged)
