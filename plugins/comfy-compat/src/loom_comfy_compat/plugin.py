"""loom-comfy-compat's hook implementations.

Importing this module (the plugin loading) installs the finder that makes ComfyUI's module
names importable; the hooks bind those modules to the runtime and the web server, compile
V3 node classes and load ``comfy_entrypoint`` packages.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import loom
from loom_comfy_compat import finder
from loom_comfy_compat.environment import ENV

if TYPE_CHECKING:
    from loom.events import ExecutionEvent
    from loom.frontend import NodeDef, Runtime
    from loom.types import WebServer

finder.install()


@loom.hookimpl
def prepare_runtime(runtime: Runtime) -> None:
    ENV.bind(runtime)


@loom.hookimpl
def compile_node(
    node_class: Any, class_type: str | None, display_name: str | None, python_module: str | None
) -> NodeDef | None:
    from loom_comfy_compat.v3 import compile_v3, is_v3

    if not is_v3(node_class):
        return None
    return compile_v3(node_class, class_type, display_name, python_module)


@loom.hookimpl
def custom_node_entrypoint(module: ModuleType, name: str) -> list[type] | None:
    from loom_comfy_compat.v3 import entrypoint_nodes

    return entrypoint_nodes(module)


@loom.hookimpl
def plugin_notes(plugin_name: str) -> list[str] | None:
    prefix = "custom_nodes."
    if not plugin_name.startswith(prefix):
        return None
    names = ENV.missing.get(plugin_name[len(prefix) :])
    if not names:
        return None
    return [f"loaded with missing ComfyUI names: {', '.join(sorted(names))}"]


@loom.hookimpl
def web_server_started(server: WebServer) -> None:
    from loom_comfy_compat.prompt_server import attach

    attach(server)


@loom.hookimpl
def web_server_stopped(server: WebServer) -> None:
    from loom_comfy_compat.prompt_server import detach

    detach(server)


@loom.hookimpl
def on_execution_event(event: ExecutionEvent) -> None:
    from loom_comfy_compat.prompt_server import observe

    observe(event)
