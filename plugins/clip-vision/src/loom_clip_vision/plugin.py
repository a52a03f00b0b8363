"""Hook implementations of the ``clip_vision`` plugin: its nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import loom

if TYPE_CHECKING:
    from loom.registration import RegisterNode


@loom.hookimpl
def register_nodes(register: RegisterNode) -> None:
    from loom_clip_vision import photomaker_nodes
    from loom_clip_vision.nodes import COMFY_MODULE, NODES

    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
    for node_class in photomaker_nodes.NODES:
        register(node_class, python_module=photomaker_nodes.PYTHON_MODULE)
