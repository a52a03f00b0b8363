"""``comfy_api.input_impl.video_types``: the same names as ``comfy_api.input_impl`` (loom-comfy-compat)."""

from comfy_api.input_impl import *  # noqa: F403
from comfy_api.input_impl import __all__ as __all__
from comfy_api.input_impl import __getattr__ as __getattr__
