"""What a running node can see and do: its id, the prompt, progress, interruption."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
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
    """A cooperative interrupt: set from any thread, checked between nodes and sampler steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
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
