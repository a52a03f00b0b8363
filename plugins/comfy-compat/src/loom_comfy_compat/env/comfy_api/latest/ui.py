"""``comfy_api.latest.ui``: previews and saved results (loom-comfy-compat)."""

from loom_comfy_compat import v3_ui, v3_ui_media
from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.v3_ui import *  # noqa: F403
from loom_comfy_compat.v3_ui_media import *  # noqa: F403

__getattr__ = module_getattr(__name__)
__all__ = [*v3_ui.__all__, *v3_ui_media.__all__]
