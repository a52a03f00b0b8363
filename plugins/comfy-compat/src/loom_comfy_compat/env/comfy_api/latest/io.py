"""``comfy_api.latest.io``: the V3 schema types (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.v3_io import *  # noqa: F403
from loom_comfy_compat.v3_io import __all__ as __all__

__getattr__ = module_getattr(__name__)
