"""Hook implementations of the ``upscale`` plugin: the upscale-model nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import loom

if TYPE_CHECKING:
    from loom.registration import RegisterNode


@loom.hookimpl
def register_nodes(register: RegisterNode) -> None:
    from loom_upscale.nodes import NODES, PYTHON_MODULE

    for node_class in NODES:
        register(node_class, python_module=PYTHON_MODULE)
