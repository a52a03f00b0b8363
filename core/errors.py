"""Loom's exception hierarchy.

Every error a user can cause derives from :class:`LoomError` and carries a user-facing
``message`` (what went wrong, naming the node, input or file) and an optional ``hint``
(what to do about it). Frontends print ``str(error)``; they never show a traceback for a
``LoomError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class LoomError(Exception):
    """Base class of every error Loom reports to a user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


def install_command(dist: str) -> str:
    """The hint for installing one of Loom's own plugins (``loom-sdxl``): they are not on PyPI
    yet, so from a checkout."""
    folder = dist.removeprefix("loom-")
    return f"not on PyPI yet: pip install -e plugins/{folder} in a Loom checkout"


class PluginLoadError(LoomError):
    """A plugin could not be imported or registered; it is skipped, the rest keep working."""

    def __init__(self, plugin: str, cause: BaseException) -> None:
        super().__init__(
            f"plugin {plugin!r} failed to load: {type(cause).__name__}: {cause}{_origin(cause)}"
        )
        self.plugin = plugin
        self.cause = cause
        self.__cause__ = cause


def _origin(cause: BaseException) -> str:
    """`` (at FILE line N)``: the plugin's own line that raised, skipping the import machinery,
    pluggy and Loom's loader; empty when there is none."""
    import traceback
    from pathlib import Path

    import pluggy

    machinery = (Path(__file__).resolve().parent, Path(pluggy.__file__).resolve().parent)
    for frame in reversed(traceback.extract_tb(cause.__traceback__)):
        path = Path(frame.filename)
        if frame.filename.startswith("<") or "importlib" in path.parts:
            continue
        if any(path.resolve().is_relative_to(folder) for folder in machinery):
            continue
        return f" (at {frame.filename} line {frame.lineno})"
    return ""


class DuplicateRegistrationError(LoomError):
    """Two plugins registered the same id (node class_type, sampler name, ...)."""


class NodeDefinitionError(LoomError):
    """A node class declares itself wrongly; raised at registration, not on first run."""


class PromptValidationError(LoomError):
    """A prompt was rejected; ``error`` and ``node_errors`` are ComfyUI's JSON shapes."""

    def __init__(self, error: dict, node_errors: dict) -> None:
        text = error.get("message", "invalid prompt")
        details = error.get("details")
        super().__init__(f"{text}: {details}" if details else text)
        self.error = error
        self.node_errors = node_errors


class NodeInputError(LoomError, ValueError):
    """A node was given input it cannot work with (sizes that do not fit together, a value
    its maths cannot take); the message names the node and the inputs at fault.

    Also a :class:`ValueError`, so callers that caught the plain error still do.
    """

    def __init__(
        self, node: str, inputs: str | Sequence[str], problem: str, *, hint: str | None = None
    ) -> None:
        super().__init__(f"{node}: {problem}", hint=hint)
        self.node = node
        self.inputs: tuple[str, ...] = (inputs,) if isinstance(inputs, str) else tuple(inputs)


class NodeExecutionError(LoomError):
    """A node raised while running; the executor wraps the original exception.

    Raised inside a prompt's run and turned by the executor into that prompt's
    ``execution_error`` (whose message is the cause's, as ComfyUI sends it); ``inputs`` are
    the values the node was called with, by input name.
    """

    def __init__(
        self,
        node_id: str,
        class_type: str,
        cause: BaseException,
        inputs: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        super().__init__(f"node {node_id} ({class_type}) failed: {type(cause).__name__}: {cause}")
        self.node_id = node_id
        self.class_type = class_type
        self.cause = cause
        self.inputs: Mapping[str, Sequence[Any]] = inputs or {}
        self.__cause__ = cause


class DependencyCycleError(LoomError):
    """Nodes of a running prompt wait on each other's outputs (a graph grown by node
    expansion or lazy inputs closed a loop), so none of them can run.

    ``waits_on`` maps each node on the cycle to the nodes on it that it waits for; validation
    reports cycles of the submitted prompt before anything runs.
    """

    def __init__(self, waits_on: Mapping[str, Sequence[str]], class_types: Mapping[str, str]):
        def name(node_id: str) -> str:
            return f"{node_id} ({class_types.get(node_id, '?')})"

        steps = "; ".join(
            f"node {name(node)} waits for {', '.join(map(name, waited))}"
            for node, waited in waits_on.items()
        )
        super().__init__(
            f"dependency cycle: {steps}, so none of them can run",
            hint="a node's expansion or lazy input links back to a node that needs its output; "
            "remove one of those links",
        )
        self.waits_on = {node: list(waited) for node, waited in waits_on.items()}


class ExecutionInterrupted(LoomError):
    """Raised inside a run when an interrupt was requested."""

    def __init__(self, message: str = "Processing interrupted") -> None:
        super().__init__(message)


class WorkflowConversionError(LoomError):
    """A UI-format workflow could not be turned into an API prompt."""


class UnknownCheckpointError(LoomError):
    """No installed model-family plugin recognises a weights file."""


class ModelFileError(LoomError):
    """A model file is missing, truncated, corrupt, or not a safetensors file."""
