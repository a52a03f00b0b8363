"""``comfy_api.input_impl``: the older import path of ``comfy_api.latest._input_impl``
(loom-comfy-compat)."""

from comfy_api.latest._input_impl import *  # noqa: F403
from comfy_api.latest._input_impl import __all__ as __all__
from comfy_api.latest._input_impl import __getattr__ as __getattr__
