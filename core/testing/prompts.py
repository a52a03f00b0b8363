"""Running one prompt through a runtime's executor and keeping what a frontend would see."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from loom.events import ExecutionEvent
    from loom.executor.run import ExecutionResult
    from loom.runtime import Runtime


@attrs.frozen
class PromptRecord:
    """One finished prompt: its history entry, the events it sent and its output values.

    ``history`` is the entry ComfyUI's ``GET /history/<prompt_id>`` returns (``prompt``,
    ``outputs``, ``status``, ``meta``); ``events`` are the execution events in the order
    the executor sent them; ``result`` is the executor's own answer, with every node's
    output values in ``result.values``.
    """

    prompt_id: str
    history: dict[str, Any]
    events: tuple[ExecutionEvent, ...]
    result: ExecutionResult
    #: Validation errors of outputs that were dropped while the others ran (``/prompt``'s).
    node_errors: dict[str, Any] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.history["status"]["completed"])

    @property
    def outputs(self) -> dict[str, Any]:
        """UI outputs by node id (``{"9": {"images": [...]}}``), as in history."""
        return self.history["outputs"]

    @property
    def error(self) -> dict[str, Any] | None:
        """The ``execution_error`` message's data, or None."""
        return self.result.error

    @property
    def event_types(self) -> list[str]:
        return [event.type for event in self.events]

    def value(self, node_id: str, output: int = 0) -> Any:
        """The value node ``node_id`` produced on ``output`` (its only one, not a list)."""
        values = self.result.values.get(node_id)
        if values is None:
            raise KeyError(f"node {node_id!r} produced no output in prompt {self.prompt_id!r}")
        (value,) = values[output]
        return value


def run_prompt(
    runtime: Runtime,
    prompt: Mapping[str, Any],
    *,
    prompt_id: str = "test",
    client_id: str | None = None,
    extra_data: Mapping[str, Any] | None = None,
) -> PromptRecord:
    """Validate and execute ``prompt`` on ``runtime``'s executor (caches kept between calls).

    Raises :class:`~loom.errors.PromptValidationError` when no output can run, as
    ``POST /prompt`` answers 400. A node that fails does not raise: the record's ``ok`` is
    False and ``error`` says which node failed and why.
    """
    from loom.executor.queue import HistoryEntry, QueueItem

    executor = runtime.executor
    validated = executor.validate(dict(prompt))
    extra = dict(extra_data or {})
    if client_id is not None:
        extra["client_id"] = client_id
    events: list[ExecutionEvent] = []
    result = executor.execute(
        prompt_id,
        validated.prompt,
        validated.outputs,
        extra,
        client_id=client_id,
        on_event=events.append,
    )
    item = QueueItem(0.0, prompt_id, validated.prompt, extra, list(validated.outputs))
    entry = HistoryEntry(item, result.outputs, result.status, result.meta, error=result.error)
    return PromptRecord(
        prompt_id=prompt_id,
        history=entry.as_dict(),
        events=tuple(events),
        result=result,
        node_errors=dict(validated.node_errors),
    )
