"""``comfy_api.latest._util``: video settings and 3D value types (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.v3_media import MESH, VOXEL, VideoCodec, VideoComponents, VideoContainer

__getattr__ = module_getattr(__name__)
__all__ = ["MESH", "VOXEL", "VideoCodec", "VideoComponents", "VideoContainer"]
