"""``comfy_api.v0_0_2``: the versioned name of the same V3 API as ``comfy_api.latest``."""

from loom_comfy_compat.missing import module_getattr

from comfy_api.latest import ComfyExtension, io, ui

__getattr__ = module_getattr(__name__)
__all__ = ["ComfyExtension", "io", "ui"]
