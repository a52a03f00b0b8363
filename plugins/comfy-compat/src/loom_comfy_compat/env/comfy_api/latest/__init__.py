"""``comfy_api.latest``: ``io``, ``ui`` (also as ``IO`` / ``UI``), ``ComfyExtension`` and
``ComfyAPI`` / ``ComfyAPISync`` (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.v3_api import ComfyAPI, ComfyAPISync
from loom_comfy_compat.v3_node import ComfyExtension

from . import io, ui

IO = io
UI = ui

__getattr__ = module_getattr(__name__)
__all__ = ["IO", "UI", "ComfyAPI", "ComfyAPISync", "ComfyExtension", "io", "ui"]
