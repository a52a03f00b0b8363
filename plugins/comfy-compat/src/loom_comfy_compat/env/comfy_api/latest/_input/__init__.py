"""``comfy_api.latest._input``: the value types nodes receive (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr as _missing_names
from loom_comfy_compat.v3_media import AudioInput, LatentInput, VideoInput, tensor_alias

_missing = _missing_names(__name__)


def __getattr__(name):
    if name in ("ImageInput", "MaskInput"):
        return tensor_alias(name)  # torch.Tensor, imported only when asked for
    return _missing(name)


__all__ = ["AudioInput", "ImageInput", "LatentInput", "MaskInput", "VideoInput"]
