"""``comfy_execution.graph``: ExecutionBlocker and DynamicPrompt, Loom's own (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr

from loom import ExecutionBlocker
from loom.frontend import DynamicPrompt

__getattr__ = module_getattr(__name__)
__all__ = ["DynamicPrompt", "ExecutionBlocker"]
