"""``comfy_api.input.video_types``: the same names as ``comfy_api.input`` (loom-comfy-compat)."""

# ImageInput / MaskInput come through __getattr__, so torch is imported only when asked for.
from comfy_api.input import AudioInput as AudioInput
from comfy_api.input import LatentInput as LatentInput
from comfy_api.input import VideoInput as VideoInput
from comfy_api.input import __all__ as __all__
from comfy_api.input import __getattr__ as __getattr__
