"""Human-readable rendering of validation errors and execution errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def validation_report(
    error: Mapping[str, Any], node_errors: Mapping[str, Any], prompt: Any = None
) -> str:
    """One line per problem, naming node id, class and input."""
    lines = [f"error: {error.get('message', 'invalid prompt')}"]
    if error.get("details") and not node_errors:
        lines.append(f"  {error['details']}")
    hint = (error.get("extra_info") or {}).get("hint")
    if hint:
        lines.append(f"hint: {hint}")
    for node_id, entry in node_errors.items():
        title = ""
        if isinstance(prompt, dict) and isinstance(prompt.get(node_id), dict):
            title = (prompt[node_id].get("_meta") or {}).get("title") or ""
        label = f"node {node_id} ({entry.get('class_type')}{', ' + title if title and title != entry.get('class_type') else ''})"
        for err in entry.get("errors", []):
            details = f": {err['details']}" if err.get("details") else ""
            lines.append(f"  {label}: {err['message']}{details}")
            searched = (err.get("extra_info") or {}).get("searched_folders")
            if searched and "no model files found" not in details:
                lines.append(f"    model files are read from: {', '.join(searched)}")
    return "\n".join(lines)


def execution_error_report(error: Mapping[str, Any]) -> str:
    node = (
        f"node {error.get('node_id')} ({error.get('node_type')})"
        if error.get("node_id")
        else "the executor"
    )
    return f"error: {node} failed: {error.get('exception_type')}: {error.get('exception_message')}"


def output_paths(
    outputs: Mapping[str, Mapping[str, Any]], directories: Mapping[str, Path]
) -> list[Path]:
    """Files written by output nodes (``images``/``gifs``/... entries with a filename)."""
    paths = []
    for ui in outputs.values():
        for entries in ui.values():
            if not isinstance(entries, list):
                continue
            for entry in entries:
                if (
                    isinstance(entry, dict)
                    and "filename" in entry
                    and entry.get("type", "output") in directories
                ):
                    base = directories[entry.get("type", "output")]
                    paths.append(base / entry.get("subfolder", "") / entry["filename"])
    return paths
