"""``comfy_api.latest``: ``io``, ``ui`` and ``ComfyExtension`` (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.v3_node import ComfyExtension

from . import io, ui

__getattr__ = module_getattr(__name__)
__all__ = ["ComfyExtension", "io", "ui"]
