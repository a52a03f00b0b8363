"""Human-readable rendering of validation errors, execution errors and progress."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from loom.events import ExecutionEvent


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


class ProgressBar:
    """Draws one bar per node that reports progress (sampler steps) on a stream."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.titles: dict[str, str] = {}
        self._open = False

    def __call__(self, event: ExecutionEvent) -> None:
        if event.type == "progress":
            self._draw(
                str(event.data.get("node")), int(event.data["value"]), int(event.data["max"])
            )
        elif (
            event.type
            in ("executing", "execution_success", "execution_error", "execution_interrupted")
            and self._open
        ):
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def _draw(self, node_id: str, value: int, total: int) -> None:
        """Redraw in place on a terminal; elsewhere write one line when the node's bar fills."""
        filled = int(self.width * value / max(total, 1))
        line = f"[{self.titles.get(node_id, node_id)}] |{'#' * filled}{'-' * (self.width - filled)}| {value}/{total}"
        if self.stream.isatty():
            self.stream.write("\r" + line)
            self._open = True
        elif value == total:
            self.stream.write(line + "\n")
        self.stream.flush()
