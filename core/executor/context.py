"""What a running node can see and do: its id, the prompt, progress, interruption."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import attrs

from loom.errors import ExecutionInterrupted, LoomError

if TYPE_CHECKING:
    from loom.events import Preview
    from loom.runtime import Runtime


class ExecutionBlocker:
    """Return as an output value to stop every consumer of it (ComfyUI's ExecutionBlocker).

    With a message, each consumer fails with ``ExecutionBlocked`` and the prompt continues;
    with ``None`` the consumers are skipped silently.
    """

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


class InterruptFlag:
    """A cooperative interrupt: set from any thread, checked between nodes and sampler steps.

    An interrupt may name the prompt it is for. A prompt the queue has handed out but whose
    run has not begun yet keeps such an interrupt when it begins (:meth:`begin`); one meant
    for nobody in particular does not outlive the run it found, so a stale interrupt never
    stops the next prompt.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._for_prompts: set[str] = set()

    def set(self, prompt_id: str | None = None) -> None:
        with self._lock:
            if prompt_id is not None:
                self._for_prompts.add(prompt_id)
            self._event.set()

    def begin(self, prompt_id: str) -> None:
        """A run of ``prompt_id`` starts: keep only an interrupt addressed to it."""
        with self._lock:
            keep = prompt_id in self._for_prompts
            self._for_prompts.clear()
            if keep:
                self._event.set()
            else:
                self._event.clear()

    def clear(self) -> None:
        with self._lock:
            self._for_prompts.clear()
            self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise ExecutionInterrupted()


ProgressCallback = Callable[[int, int, "Preview | None"], None]


@attrs.define
class RunContext:
    """Handed to ``run(self, ctx)``: the node's identity, the prompt, and services.

    ``runtime`` gives settings, folders, the registry and the memory manager. Call
    :meth:`progress` from long loops (it also checks for interruption) and
    :meth:`check_interrupted` anywhere it is safe to stop.
    """

    node_id: str
    prompt_id: str
    prompt: Mapping[str, Any]
    extra_data: Mapping[str, Any]
    runtime: Runtime | None
    interrupt: InterruptFlag
    display_node_id: str | None = None
    on_progress: ProgressCallback | None = None

    @property
    def unique_id(self) -> str:
        return self.node_id

    @property
    def extra_pnginfo(self) -> Mapping[str, Any] | None:
        return self.extra_data.get("extra_pnginfo")

    def check_interrupted(self) -> None:
        self.interrupt.check()

    def require_runtime(self, needs: str) -> Runtime:
        """The runtime; a node run without one (a bare executor) fails naming what it
        ``needs`` the runtime for (``"model folders and model families"``)."""
        if self.runtime is None:
            raise LoomError(
                f"node {self.node_id} needs a runtime ({needs}), but this executor has none",
                hint="run prompts through loom.runtime.Runtime(...).executor",
            )
        return self.runtime

    def progress(self, value: int, total: int, preview: Preview | None = None) -> None:
        """Report ``value`` of ``total`` steps done (a progress bar and websocket event)."""
        self.interrupt.check()
        if self.on_progress is not None:
            self.on_progress(value, total, preview)


_CURRENT: ContextVar[RunContext | None] = ContextVar("loom_run_context", default=None)


def current_context() -> RunContext | None:
    """The context of the node running on this thread, or None outside a node's ``execute``.

    For code that cannot take ``ctx`` as an argument (ComfyUI-style progress bars inside
    classic nodes); a node's own code should use the ``ctx`` it is given.
    """
    return _CURRENT.get()


@contextmanager
def running(ctx: RunContext) -> Iterator[None]:
    """Make ``ctx`` the :func:`current_context` while a node executes."""
    token = _CURRENT.set(ctx)
    try:
        yield
    finally:
        _CURRENT.reset(token)
