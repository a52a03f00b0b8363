"""ComfyUI's primitive nodes (``comfy_extras/nodes_primitive.py``): a widget whose value is
the node's output, for feeding one constant to several inputs.

Their inputs carry no ``default`` option, as in ComfyUI (its V3 schema omits unset
defaults); the frontend falls back to the type's zero value.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import loom

COMFY_MODULE = "comfy_extras.nodes_primitive"
CATEGORY = "utils/primitive"


@loom.node("PrimitiveString", category=CATEGORY, display_name="String", v3=True)
class PrimitiveString:
    value: str = loom.ui.string(None, multiline=False)

    def run(self, ctx: loom.RunContext) -> str:
        return self.value


@loom.node(
    "PrimitiveStringMultiline", category=CATEGORY, display_name="String (Multiline)", v3=True
)
class PrimitiveStringMultiline:
    value: str = loom.ui.string(None, multiline=True)

    def run(self, ctx: loom.RunContext) -> str:
        return self.value


@loom.node("PrimitiveInt", category=CATEGORY, display_name="Int", v3=True)
class PrimitiveInt:
    value: int = loom.ui.int(None, min=-sys.maxsize, max=sys.maxsize, control_after_generate=True)

    def run(self, ctx: loom.RunContext) -> int:
        return self.value


@loom.node("PrimitiveFloat", category=CATEGORY, display_name="Float", v3=True)
class PrimitiveFloat:
    value: float = loom.ui.float(None, min=-sys.maxsize, max=sys.maxsize, step=0.1)

    def run(self, ctx: loom.RunContext) -> float:
        return self.value


@loom.node("PrimitiveBoolean", category=CATEGORY, display_name="Boolean", v3=True)
class PrimitiveBoolean:
    value: bool = loom.ui.boolean(None)

    def run(self, ctx: loom.RunContext) -> bool:
        return self.value


# ComfyUI's registration order (its /object_info lists them in this order).
NODES = (PrimitiveString, PrimitiveStringMultiline, PrimitiveInt, PrimitiveFloat, PrimitiveBoolean)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
