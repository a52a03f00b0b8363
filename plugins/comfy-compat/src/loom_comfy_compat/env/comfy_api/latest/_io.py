"""``comfy_api.latest._io``: the module ``io`` re-exports in ComfyUI; some packs import
from it directly (``from comfy_api.latest._io import DynamicSlot``) (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr

from comfy_api.latest.io import *  # noqa: F403
from comfy_api.latest.io import __all__ as __all__

__getattr__ = module_getattr(__name__)
