"""``comfy_execution.graph``: ExecutionBlocker and DynamicPrompt, Loom's own (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr

from loom.executor.context import ExecutionBlocker
from loom.executor.prompt_run import DynamicPrompt

__getattr__ = module_getattr(__name__)
__all__ = ["DynamicPrompt", "ExecutionBlocker"]
