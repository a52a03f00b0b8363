"""``comfy_api.latest.ui``: previews and saved results (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.v3_ui import *  # noqa: F403
from loom_comfy_compat.v3_ui import __all__ as __all__

__getattr__ = module_getattr(__name__)
