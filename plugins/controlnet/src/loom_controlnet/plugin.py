"""Hook implementations of the ``controlnet`` plugin: its nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import loom

if TYPE_CHECKING:
    from loom.registration import RegisterNode


@loom.hookimpl
def register_nodes(register: RegisterNode) -> None:
    from loom_controlnet.nodes import NODES, PYTHON_MODULES

    for node_class in NODES:
        register(node_class, python_module=PYTHON_MODULES.get(node_class.__name__, "nodes"))
