"""Submitting prompts and running them in a worker thread: what every frontend shares.

:meth:`PromptService.submit` does what ComfyUI's ``POST /prompt`` does (numbering,
validation, queueing); the worker pulls from the queue, executes, writes history and
sends ``status``. The worker survives anything a prompt does.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loom.errors import PromptValidationError
from loom.events import ExecutionEvent, now_ms
from loom.executor.queue import HistoryEntry, QueueItem

if TYPE_CHECKING:
    from loom.runtime import Runtime

log = logging.getLogger(__name__)


@attrs.frozen
class Submitted:
    """The answer to a submission (ComfyUI's ``/prompt`` 200 body)."""

    prompt_id: str
    number: float
    node_errors: dict[str, Any]


class PromptService:
    """Queue front door and worker for one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.queue = runtime.queue
        self._current: QueueItem | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._free_request: dict[str, bool] = {}
        self.queue.on_change(self._send_status)
        self.queue.on_interrupt(self._interrupt)

    # -- submission -------------------------------------------------------------------

    def next_number(self) -> int:
        return self.queue.next_number()

    def submit(
        self,
        prompt: Any,
        *,
        client_id: str | None = None,
        prompt_id: str | None = None,
        number: float | None = None,
        front: bool = False,
        extra_data: Mapping[str, Any] | None = None,
        partial_targets: Iterable[str] | None = None,
    ) -> Submitted:
        """Validate and queue. Raises PromptValidationError (its ``number`` is still used up)."""
        counter = self.next_number()
        if number is None:
            number = -counter if front else counter
        extra = dict(extra_data or {})
        if client_id is not None:
            extra["client_id"] = client_id
        extra.setdefault("create_time", now_ms())
        validated = self.runtime.executor.validate(prompt, partial_targets)
        item = QueueItem(
            float(number),
            prompt_id or str(uuid.uuid4()),
            validated.prompt,
            extra,
            validated.outputs,
        )
        self.queue.put(item)
        return Submitted(item.prompt_id, number, validated.node_errors)

    # -- worker -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._worker is not None and self._worker.is_alive():
            return
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="loom-prompt-worker", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.runtime.executor.interrupt()
        if self._worker is not None:
            self._worker.join(timeout)

    def request_free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """Applied by the worker after the current prompt (ComfyUI's ``/free``)."""
        self._free_request = {
            "unload_models": unload_models or self._free_request.get("unload_models", False),
            "free_memory": free_memory or self._free_request.get("free_memory", False),
        }
        if self._worker is None or not self._worker.is_alive():
            self._apply_free()

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.5)
            if item is None:
                self._apply_free()
                continue
            try:
                self.run_item(item)
            except Exception:  # the worker must survive anything
                log.exception("prompt worker: unexpected error for %s", item.prompt_id)
            self._apply_free()

    def run_item(self, item: QueueItem) -> HistoryEntry:
        """Execute one queue item and record it in history (the worker's loop body)."""
        started = now_ms()
        self._current = item
        try:
            result = self.runtime.executor.execute(
                item.prompt_id,
                item.prompt,
                item.outputs,
                item.extra_data,
                client_id=item.extra_data.get("client_id"),
            )
            entry = HistoryEntry(
                item, result.outputs, result.status, result.meta, started, now_ms(), result.error
            )
        except Exception as exc:
            log.exception("prompt %s failed outside execution", item.prompt_id)
            status = {
                "status_str": "error",
                "completed": False,
                "messages": [
                    [
                        "execution_error",
                        {"prompt_id": item.prompt_id, "exception_message": str(exc)},
                    ]
                ],
            }
            entry = HistoryEntry(item, {}, status, {}, started, now_ms(), None)
        finally:
            self._current = None
        self.queue.task_done(item, entry)
        self.runtime.emit(
            ExecutionEvent(
                "executing",
                {"node": None, "prompt_id": item.prompt_id},
                item.extra_data.get("client_id"),
            )
        )
        return entry

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop ``prompt_id`` (None: whatever runs) wherever it runs (ComfyUI's ``/interrupt``)."""
        self.queue.interrupt(prompt_id)

    def _interrupt(self, prompt_id: str | None) -> None:
        current = self._current
        ours = {current.prompt_id} if current is not None else set()
        if self.queue.runs_in_process:  # taken from the queue, its run maybe not begun yet
            ours |= {item.prompt_id for item in self.queue.running()}
        for running in ours:
            if prompt_id in (None, running):
                # addressed by id, so it still stops a run that begins after this call
                self.runtime.executor.interrupt(running)

    def _apply_free(self) -> None:
        request, self._free_request = self._free_request, {}
        if request.get("free_memory"):
            self.runtime.executor.reset()
        if request.get("unload_models") or request.get("free_memory"):
            memory = self.runtime.__dict__.get("memory")
            if memory is not None and hasattr(memory, "unload_all"):
                memory.unload_all()

    def _send_status(self) -> None:
        self.runtime.emit(
            ExecutionEvent(
                "status", {"status": {"exec_info": {"queue_remaining": self.queue.remaining()}}}
            )
        )


__all__ = ["PromptService", "PromptValidationError", "Submitted"]
