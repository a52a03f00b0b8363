"""``comfy_api.util``: the older import path of ``comfy_api.latest._util`` (loom-comfy-compat)."""

from comfy_api.latest._util import *  # noqa: F403
from comfy_api.latest._util import __all__ as __all__
from comfy_api.latest._util import __getattr__ as __getattr__
