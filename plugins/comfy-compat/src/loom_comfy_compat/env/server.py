"""ComfyUI's ``server`` module: ``PromptServer.instance`` and ``BinaryEventTypes``
(loom-comfy-compat; backed by loom-http under ``loom serve``, headless otherwise)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.prompt_server import BinaryEventTypes, PromptServer

__getattr__ = module_getattr(__name__)
__all__ = ["BinaryEventTypes", "PromptServer"]
