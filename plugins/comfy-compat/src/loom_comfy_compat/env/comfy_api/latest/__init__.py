"""``comfy_api.latest``: ``io``, ``ui`` (also as ``IO`` / ``UI``), ``ComfyExtension``,
``ComfyAPI`` / ``ComfyAPISync`` and the value types ``Input`` / ``InputImpl`` / ``Types``
(loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.v3_api import ComfyAPI, ComfyAPISync
from loom_comfy_compat.v3_media import Input, InputImpl, Types
from loom_comfy_compat.v3_node import ComfyExtension

from . import io, ui

IO = io
UI = ui

__getattr__ = module_getattr(__name__)
__all__ = [
    "IO",
    "UI",
    "ComfyAPI",
    "ComfyAPISync",
    "ComfyExtension",
    "Input",
    "InputImpl",
    "Types",
    "io",
    "ui",
]
