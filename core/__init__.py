"""Loom: a node-graph engine for diffusion models that speaks ComfyUI's formats and API.

The public API plugins use; importing it is cheap (no torch, no plugins loaded)::

    import loom

    @loom.node("MyNode", category="image")
    class MyNode:
        image: loom.types.Image
        strength: float = loom.ui.float(1.0, min=0, max=2)

        def run(self, ctx: loom.RunContext) -> loom.types.Image: ...

    @loom.hookimpl
    def register_nodes(register):
        register(MyNode)
"""

from loom import types
from loom.errors import (
    DuplicateRegistrationError,
    ExecutionInterrupted,
    LoomError,
    NodeDefinitionError,
    NodeExecutionError,
    PluginLoadError,
    UnknownCheckpointError,
)
from loom.executor.context import ExecutionBlocker, RunContext
from loom.hookspecs import hookimpl
from loom.nodes.schema import node, output, outputs, ui
from loom.nodes.spec import NodeOutput, OutputDef

__version__ = "0.1.0"

__all__ = [
    "DuplicateRegistrationError",
    "ExecutionBlocker",
    "ExecutionInterrupted",
    "LoomError",
    "NodeDefinitionError",
    "NodeExecutionError",
    "NodeOutput",
    "OutputDef",
    "PluginLoadError",
    "RunContext",
    "UnknownCheckpointError",
    "__version__",
    "hookimpl",
    "node",
    "output",
    "outputs",
    "types",
    "ui",
]
