"""The prompt queue and history every frontend shares.

:class:`PromptQueue` is the interface (a plugin may supply another implementation through
the ``make_prompt_queue`` hook, e.g. a distributed backend); :class:`InProcessQueue` is
core's: a priority heap ordered by ``number``, one running prompt at a time, and a bounded
history (oldest entries dropped first, as ComfyUI keeps at most 10,000).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from loom.events import ExecutionEvent

#: extra_data keys that hold secrets: never shown in queue or history.
SECRET_KEYS = frozenset({"auth_token_comfy_org", "api_key_comfy_org"})
MAX_HISTORY = 10_000


@attrs.define
class QueueItem:
    """One queued prompt. ``as_list()`` is ComfyUI's 5-element queue/history form."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        visible = {k: v for k, v in self.extra_data.items() if k not in SECRET_KEYS}
        return [self.number, self.prompt_id, self.prompt, visible, list(self.outputs)]


@attrs.define
class HistoryEntry:
    """A finished prompt: ComfyUI's history entry plus timings for ``/api/jobs``."""

    item: QueueItem
    outputs: dict[str, Any]
    status: dict[str, Any]
    meta: dict[str, Any]
    execution_start_ms: int | None = None
    execution_end_ms: int | None = None
    error: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.item.as_list(),
            "outputs": self.outputs,
            "status": self.status,
            "meta": self.meta,
        }


@attrs.frozen
class WorkerState:
    """One worker as a shared queue knows it (its own advertisement)."""

    name: str
    state: str  # "idle", "running" or "stale" (not heard from for three heartbeats)
    prompt_id: str | None = None
    models: tuple[str, ...] = ()
    seen_ms: int | None = None


@attrs.frozen
class QueueMetrics:
    """Queue depth and per-worker state, for monitoring (``/metrics`` on the server)."""

    pending: int
    running: int
    history: int
    dead_letters: int = 0
    workers: tuple[WorkerState, ...] = ()


class PromptQueue(Protocol):
    """What frontends and the worker need from a queue.

    ``runs_in_process`` says who runs prompts: True for core's queue (the server's own worker
    thread), False for a shared queue whose prompts separate worker processes pull (the
    server then only accepts, relays and serves). ``get`` hands out a prompt under a lease
    that ``task_done`` (result durably stored, then acknowledged) ends.
    """

    runs_in_process: bool

    def next_number(self) -> int:
        """The next submission number (shared by every server of a distributed queue)."""
        ...

    def put(self, item: QueueItem) -> None: ...

    def get(self, timeout: float | None = None) -> QueueItem | None: ...

    def task_done(self, item: QueueItem, entry: HistoryEntry) -> None: ...

    def running(self) -> list[QueueItem]: ...

    def pending(self) -> list[QueueItem]: ...

    def remaining(self) -> int: ...

    def clear(self) -> None: ...

    def delete(self, prompt_ids: Iterable[str]) -> None: ...

    def history(
        self, max_items: int | None = None, offset: int = -1
    ) -> OrderedDict[str, HistoryEntry]: ...

    def history_item(self, prompt_id: str) -> HistoryEntry | None: ...

    def clear_history(self) -> None: ...

    def delete_history(self, prompt_ids: Iterable[str]) -> None: ...

    def on_change(self, callback: Callable[[], None]) -> None: ...

    def interrupt(self, prompt_id: str | None) -> None:
        """Ask whoever runs ``prompt_id`` (None: every running prompt) to stop."""
        ...

    def on_interrupt(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(prompt_id)`` for every :meth:`interrupt`, from any process."""
        ...

    def on_remote_event(self, callback: Callable[[ExecutionEvent], None]) -> None:
        """Call ``callback(event)`` for execution events of prompts run by other processes."""
        ...

    def metrics(self) -> QueueMetrics:
        """Depth, running prompts, history size and what is known of the workers."""
        ...


class InProcessQueue:
    """Thread-safe in-process queue (core's default :class:`PromptQueue`)."""

    runs_in_process = True

    def __init__(self, max_history: int = MAX_HISTORY) -> None:
        self._numbers = itertools.count()
        self._interrupt_listeners: list[Callable[[str | None], None]] = []
        self._heap: list[tuple[float, int, QueueItem]] = []
        self._order = itertools.count()
        self._running: dict[str, QueueItem] = {}
        self._history: OrderedDict[str, HistoryEntry] = OrderedDict()
        self._max_history = max_history
        self._cond = threading.Condition()
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (no arguments) after every change of the queue length."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def next_number(self) -> int:
        return next(self._numbers)

    def interrupt(self, prompt_id: str | None) -> None:
        for listener in list(self._interrupt_listeners):
            listener(prompt_id)

    def on_interrupt(self, callback: Callable[[str | None], None]) -> None:
        self._interrupt_listeners.append(callback)

    def on_remote_event(self, callback: Callable[[ExecutionEvent], None]) -> None:
        """Nothing runs elsewhere: the callback is never called."""

    def metrics(self) -> QueueMetrics:
        with self._cond:
            return QueueMetrics(len(self._heap), len(self._running), len(self._history))

    def put(self, item: QueueItem) -> None:
        with self._cond:
            heapq.heappush(self._heap, (item.number, next(self._order), item))
            self._cond.notify()
        self._changed()

    def get(self, timeout: float | None = None) -> QueueItem | None:
        with self._cond:
            if not self._heap and not self._cond.wait_for(lambda: bool(self._heap), timeout):
                return None
            _, _, item = heapq.heappop(self._heap)
            self._running[item.prompt_id] = item
        self._changed()
        return item

    def task_done(self, item: QueueItem, entry: HistoryEntry) -> None:
        with self._cond:
            self._running.pop(item.prompt_id, None)
            self._history[item.prompt_id] = entry
            while len(self._history) > self._max_history:
                self._history.popitem(last=False)
        self._changed()

    def running(self) -> list[QueueItem]:
        with self._cond:
            return list(self._running.values())

    def pending(self) -> list[QueueItem]:
        """Pending items in heap order (unsorted, as ComfyUI returns them)."""
        with self._cond:
            return [item for _, _, item in self._heap]

    def remaining(self) -> int:
        with self._cond:
            return len(self._heap) + len(self._running)

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()
        self._changed()

    def delete(self, prompt_ids: Iterable[str]) -> None:
        doomed = set(prompt_ids)
        with self._cond:
            self._heap = [entry for entry in self._heap if entry[2].prompt_id not in doomed]
            heapq.heapify(self._heap)
        self._changed()

    def history(
        self, max_items: int | None = None, offset: int = -1
    ) -> OrderedDict[str, HistoryEntry]:
        """Oldest first; ``max_items`` alone gives the newest N (ComfyUI's semantics)."""
        with self._cond:
            items = list(self._history.items())
        if offset < 0 and max_items is not None:
            offset = max(len(items) - max_items, 0)
        offset = max(offset, 0)
        end = None if max_items is None else offset + max_items
        return OrderedDict(items[offset:end])

    def history_item(self, prompt_id: str) -> HistoryEntry | None:
        with self._cond:
            return self._history.get(prompt_id)

    def clear_history(self) -> None:
        with self._cond:
            self._history.clear()

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        with self._cond:
            for prompt_id in prompt_ids:
                self._history.pop(prompt_id, None)
