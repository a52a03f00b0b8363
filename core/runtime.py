"""The runtime: one object holding settings, plugins, registry, folders, cache and queue.

Frontends (the CLI, the HTTP plugin, an embedding application) build one
:class:`Runtime` and pass it on; there is no module-level state. Building a runtime changes
no process-wide setting: the ``loom`` command line tunes the host allocator itself
(:func:`loom.memory.configure_host_allocator`), an embedding application may call it too.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from loom.errors import LoomError
from loom.folders import ExtraPaths, ModelFolders, read_extra_model_paths
from loom.nodes.spec import NodeEnvironment
from loom.plugins import PluginHost
from loom.registry import Registry, collect
from loom.settings import Settings

if TYPE_CHECKING:
    from loom.events import ExecutionEvent
    from loom.executor.executor import Executor
    from loom.executor.queue import PromptQueue
    from loom.memory import MemoryManager

log = logging.getLogger(__name__)


class Runtime:
    """Everything a run needs, built lazily from :class:`~loom.settings.Settings`."""

    def __init__(self, settings: Settings | None = None, host: PluginHost | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.host = host or PluginHost(disabled=self.settings.disabled_plugins)

    @cached_property
    def registry(self) -> Registry:
        self.host.load()
        self.host.hook.prepare_runtime(runtime=self)
        if self.settings.load_custom_nodes:
            from loom.custom_nodes import register_custom_nodes

            register_custom_nodes(self.host, self.custom_node_dirs())
        return collect(self.host)

    @cached_property
    def folders(self) -> ModelFolders:
        """The model folders: the kinds plugins declared, under the settings' directories."""
        return ModelFolders(
            self.settings.models_dir,
            self.settings.output_dir,
            self.registry.folder_kinds,
            self.extra_paths,
        )

    @property
    def environment(self) -> NodeEnvironment:
        """What live combos, ``validate_inputs`` and ``fingerprint`` of nodes see."""
        return NodeEnvironment(self.registry, self.folders, self.settings)

    @cached_property
    def extra_paths(self) -> list[ExtraPaths]:
        """The settings' ``extra_model_paths.yaml`` files, each read once."""
        return [read_extra_model_paths(config) for config in self.settings.extra_model_paths]

    def custom_node_dirs(self) -> list[Path]:
        return [
            self.settings.custom_nodes_dir,
            *(p for extra in self.extra_paths for p in extra.custom_nodes()),
        ]

    @cached_property
    def memory(self) -> MemoryManager:
        """The memory manager (``loom.memory``), created on first use."""
        from loom.memory import MemoryManager

        return MemoryManager.from_settings(self.settings)

    @cached_property
    def executor(self) -> Executor:
        from loom.executor.executor import Executor

        return Executor(self)

    @cached_property
    def queue(self) -> PromptQueue:
        from loom.executor.queue import InProcessQueue

        _ = self.registry  # plugins must be loaded before the hook can answer
        queue = self.host.hook.make_prompt_queue(settings=self.settings)
        if queue is None and self.settings.queue_url:
            # running the prompts here instead would silently ignore what was asked for
            raise LoomError(
                f"no loaded plugin understands the queue URL {self.settings.queue_url!r}",
                hint="redis://HOST:6379/0 needs loom-redis (see `loom plugins`)",
            )
        return queue if queue is not None else InProcessQueue()

    def emit(self, event: ExecutionEvent) -> None:
        """Send an execution event to every ``on_execution_event`` implementation.

        Each implementation is called on its own, so one raising observer neither breaks the
        run nor keeps the event from the others.
        """
        self.host.call_each(
            "on_execution_event", lambda _plugin: {"event": event}, _observer_failed
        )


def _observer_failed(plugin: str, exc: Exception) -> None:
    # An observer's bug must never break a run.
    log.error("on_execution_event of plugin %s raised", plugin, exc_info=exc)
