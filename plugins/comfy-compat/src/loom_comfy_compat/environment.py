"""The Loom runtime (and web server) ComfyUI's global modules stand for.

ComfyUI's modules are process-wide (``folder_paths``, ``server.PromptServer.instance``), so
the environment binds to one runtime at a time: the last one the ``prepare_runtime`` hook
announced. Packs imported for that runtime see its directories, registry and server.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.frontend import Runtime
    from loom.types import WebServer

log = logging.getLogger(__name__)

PACK_MODULE = "custom_nodes"


class NoRuntimeError(LoomError):
    """A ComfyUI environment function was used with no Loom runtime set up."""


class Environment:
    """What the environment modules read: the bound runtime, the server, per-pack notes."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.server: WebServer | None = None
        #: ``pack name -> ComfyUI names it asked for that Loom does not provide``.
        self.missing: dict[str, set[str]] = defaultdict(set)
        self._lock = threading.Lock()

    def bind(self, runtime: Runtime) -> None:
        with self._lock:
            self.runtime = runtime
            self.missing.clear()
        log.debug("ComfyUI environment bound to runtime %r", runtime)

    def require_runtime(self, what: str) -> Runtime:
        runtime = self.runtime
        if runtime is None:
            raise NoRuntimeError(
                f"{what} needs a Loom runtime; none is set up yet",
                hint="custom nodes get one when `loom run` or `loom serve` loads them",
            )
        return runtime

    def registry_if_ready(self) -> Any:
        """The bound runtime's registry once built (None while packs are still importing)."""
        runtime = self.runtime
        if runtime is None or "registry" not in vars(runtime):
            return None
        return runtime.registry

    def record_missing(self, name: str) -> str | None:
        """Note that the calling pack asked for ``name``; returns the pack's name if known."""
        pack = calling_pack()
        if pack is not None:
            with self._lock:
                self.missing[pack].add(name)
        return pack


def calling_pack() -> str | None:
    """The custom-node package whose code is on the stack (innermost), if any."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if module.startswith(PACK_MODULE + "."):
                return module.split(".")[1]
            frame = frame.f_back
    finally:
        del frame
    return None


#: The one environment of this process.
ENV = Environment()
