"""``comfy_execution.graph_utils``: GraphBuilder, is_link, ExecutionBlocker (loom-comfy-compat)."""

from loom_comfy_compat.graph_builder import GraphBuilder, Node, is_link
from loom_comfy_compat.missing import module_getattr

from loom import ExecutionBlocker

__getattr__ = module_getattr(__name__)
__all__ = ["ExecutionBlocker", "GraphBuilder", "Node", "is_link"]
