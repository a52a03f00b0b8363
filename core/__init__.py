"""Loom: a node-graph engine for diffusion models that speaks ComfyUI's formats and API.

The public API plugins use: the names below, plus the modules in :data:`PUBLIC_MODULES`.
Importing it is cheap (no torch, no plugins loaded)::

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
    DependencyCycleError,
    DuplicateRegistrationError,
    ExecutionInterrupted,
    LoomError,
    ModelFileError,
    NodeDefinitionError,
    NodeExecutionError,
    NodeInputError,
    PluginLoadError,
    UnknownCheckpointError,
)
from loom.executor.context import ExecutionBlocker, RunContext
from loom.hookspecs import hookimpl
from loom.nodes.schema import node, output, outputs, ui
from loom.nodes.spec import NodeEnvironment, NodeOutput, OutputDef
from loom.registration import (
    RegisterFolderKind,
    RegisterModelFamily,
    RegisterNode,
    RegisterSampler,
    RegisterScheduler,
    RegisterWeightAdapter,
)
from loom.types import (
    AdapterKeyMap,
    AdapterTarget,
    CheckpointHeader,
    LatentFormat,
    LoadedParts,
    LoadRequest,
    ModelFamily,
    ModelPart,
    WeightAdapter,
    WeightSlice,
)

__version__ = "0.1.0"

#: The modules a plugin may import from besides ``loom`` itself (the names in their
#: ``__all__``, or their public names). Everything else in the package is internal and may
#: change without notice; ``tests/core/test_public_surface.py`` holds the plugins to this.
#: ``loom.memory`` and ``loom.model_sampling`` import torch; ``loom.frontend`` is for frontends
#: (servers, workers, commands that run prompts).
PUBLIC_MODULES: tuple[str, ...] = (
    "loom.types",
    "loom.errors",
    "loom.registration",
    "loom.events",
    "loom.folders",
    "loom.paths",
    "loom.resample",
    "loom.tiling",
    "loom.memory",
    "loom.model_sampling",
    "loom.samplers",
    "loom.hooks",
    "loom.frontend",
    "loom.nodes.dynamic",
    "loom.input_checks",
)

__all__ = [
    "PUBLIC_MODULES",
    "AdapterKeyMap",
    "AdapterTarget",
    "CheckpointHeader",
    "DependencyCycleError",
    "DuplicateRegistrationError",
    "ExecutionBlocker",
    "ExecutionInterrupted",
    "LatentFormat",
    "LoadRequest",
    "LoadedParts",
    "LoomError",
    "ModelFamily",
    "ModelFileError",
    "ModelPart",
    "NodeDefinitionError",
    "NodeEnvironment",
    "NodeExecutionError",
    "NodeInputError",
    "NodeOutput",
    "OutputDef",
    "PluginLoadError",
    "RegisterFolderKind",
    "RegisterModelFamily",
    "RegisterNode",
    "RegisterSampler",
    "RegisterScheduler",
    "RegisterWeightAdapter",
    "RunContext",
    "UnknownCheckpointError",
    "WeightAdapter",
    "WeightSlice",
    "__version__",
    "hookimpl",
    "node",
    "output",
    "outputs",
    "types",
    "ui",
]
