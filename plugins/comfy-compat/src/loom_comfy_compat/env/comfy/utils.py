"""``comfy.utils``: ProgressBar (Loom's progress events), safetensors-only loading,
common_upscale (loom-comfy-compat)."""

from loom_comfy_compat.missing import module_getattr
from loom_comfy_compat.runtime_bridge import (
    PickleRefused,
    ProgressBar,
    common_upscale,
    load_torch_file,
    save_torch_file,
)

PROGRESS_BAR_ENABLED = True

__getattr__ = module_getattr(__name__)
__all__ = [
    "PROGRESS_BAR_ENABLED",
    "PickleRefused",
    "ProgressBar",
    "common_upscale",
    "load_torch_file",
    "save_torch_file",
]
