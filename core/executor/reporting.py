"""Builds ComfyUI's execution messages for one prompt and sends them out.

Events go to the runtime's ``on_execution_event`` hook and to an optional extra callback
(the CLI's progress bar). ``progress_state`` snapshots cost O(nodes), so they are only
built when a hook implementation is listening.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from loom.events import ExecutionEvent, Preview, now_ms

if TYPE_CHECKING:
    from loom.runtime import Runtime

EventCallback = Callable[[ExecutionEvent], None]


def type_name(exc: BaseException) -> str:
    module = type(exc).__module__
    name = type(exc).__qualname__
    return name if module == "builtins" else f"{module}.{name}"


def format_value(value: Any) -> str:
    if value is None or isinstance(value, (int, float, bool, str)):
        text = str(value)
        return text if len(text) <= 200 else text[:200] + "..."
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__}(shape={tuple(shape)}, dtype={getattr(value, 'dtype', '?')})"
    return type(value).__name__


class Reporter:
    """Sends one prompt's events; records the ones that go into history ``status.messages``."""

    def __init__(
        self,
        runtime: Runtime | None,
        prompt_id: str,
        client_id: str | None,
        callback: EventCallback | None,
    ) -> None:
        self.runtime = runtime
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.callback = callback
        self.messages: list[list[Any]] = []
        self.node_states: dict[str, dict[str, Any]] = {}
        hook_impls = (
            runtime.host.hook.on_execution_event.get_hookimpls() if runtime is not None else []
        )
        # Events are built only for listeners; progress_state snapshots cost O(nodes) each.
        self.has_listeners = bool(hook_impls)

    def send(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        record: bool = False,
        preview: Preview | None = None,
    ) -> None:
        if record:
            self.messages.append([kind, data])
        event = ExecutionEvent(kind, data, self.client_id, preview)
        if self.runtime is not None and self.has_listeners:
            self.runtime.emit(event)
        if self.callback is not None:
            self.callback(event)

    def node_state(
        self,
        node_id: str,
        display_id: str,
        parent_id: str | None,
        real_id: str,
        state: str,
        value: int = 0,
        total: int = 1,
    ) -> None:
        if not self.has_listeners:
            return
        self.node_states[node_id] = {
            "value": value,
            "max": total,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": display_id,
            "parent_node_id": parent_id,
            "real_node_id": real_id,
        }
        snapshot = {key: dict(entry) for key, entry in self.node_states.items()}
        self.send("progress_state", {"prompt_id": self.prompt_id, "nodes": snapshot})

    def start(self) -> None:
        self.send(
            "execution_start", {"prompt_id": self.prompt_id, "timestamp": now_ms()}, record=True
        )

    def cached(self, node_ids: list[str]) -> None:
        self.send(
            "execution_cached",
            {"nodes": node_ids, "prompt_id": self.prompt_id, "timestamp": now_ms()},
            record=True,
        )

    def executing(self, node_id: str | None, display_id: str | None = None) -> None:
        data: dict[str, Any] = {"node": node_id, "prompt_id": self.prompt_id}
        if node_id is not None:
            data = {
                "node": node_id,
                "display_node": display_id or node_id,
                "prompt_id": self.prompt_id,
            }
        self.send("executing", data)

    def executed(self, node_id: str, display_id: str, ui: Mapping[str, Any]) -> None:
        self.send(
            "executed",
            {
                "node": node_id,
                "display_node": display_id,
                "output": dict(ui),
                "prompt_id": self.prompt_id,
            },
        )

    def progress(self, node_id: str, value: int, total: int, preview: Preview | None) -> None:
        self.send(
            "progress",
            {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id},
            preview=preview,
        )

    def success(self) -> None:
        self.send(
            "execution_success", {"prompt_id": self.prompt_id, "timestamp": now_ms()}, record=True
        )

    def error(
        self,
        node_id: str | None,
        node_type: str | None,
        exc: BaseException,
        executed: list[str],
        inputs: Mapping[str, list[Any]],
        outputs: list[str],
        *,
        record: bool = True,
        exception_type: str | None = None,
    ) -> dict[str, Any]:
        cause = exc
        data = {
            "prompt_id": self.prompt_id,
            "node_id": node_id,
            "node_type": node_type,
            "executed": list(executed),
            "exception_message": str(cause),
            "exception_type": exception_type or type_name(cause),
            "traceback": traceback.format_tb(cause.__traceback__),
            "current_inputs": {
                name: [format_value(v) for v in values] for name, values in inputs.items()
            },
            "current_outputs": list(outputs),
            "timestamp": now_ms(),
        }
        self.send("execution_error", data, record=record)
        return data

    def interrupted(self, node_id: str | None, node_type: str | None, executed: list[str]) -> None:
        self.send(
            "execution_interrupted",
            {
                "prompt_id": self.prompt_id,
                "node_id": node_id,
                "node_type": node_type,
                "executed": list(executed),
                "timestamp": now_ms(),
            },
            record=True,
        )


class ExecutionBlockedError(Exception):
    """A consumer of an ExecutionBlocker output (reported as ``ExecutionBlocked``)."""
