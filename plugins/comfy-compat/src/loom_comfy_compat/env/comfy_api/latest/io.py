"""``comfy_api.latest.io``: the V3 schema types and node base class (loom-comfy-compat)."""

from loom_comfy_compat import v3_dynamic, v3_io, v3_node, v3_types
from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.v3_dynamic import *  # noqa: F403
from loom_comfy_compat.v3_io import *  # noqa: F403
from loom_comfy_compat.v3_node import *  # noqa: F403
from loom_comfy_compat.v3_types import *  # noqa: F403

__getattr__ = module_getattr(__name__)
__all__ = [*v3_io.__all__, *v3_types.__all__, *v3_dynamic.__all__, *v3_node.__all__]
