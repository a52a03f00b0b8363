"""``comfy_api.latest._input_impl``: the video classes nodes construct (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.v3_media import VideoFromComponents, VideoFromFile

__getattr__ = module_getattr(__name__)
__all__ = ["VideoFromComponents", "VideoFromFile"]
