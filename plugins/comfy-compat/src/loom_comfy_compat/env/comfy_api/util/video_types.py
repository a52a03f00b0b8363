"""``comfy_api.util.video_types``: the same names as ``comfy_api.util`` (loom-comfy-compat)."""

from comfy_api.util import *  # noqa: F403
from comfy_api.util import __all__ as __all__
from comfy_api.util import __getattr__ as __getattr__
