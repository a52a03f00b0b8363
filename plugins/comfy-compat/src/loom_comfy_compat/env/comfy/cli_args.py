"""``comfy.cli_args``: ``args`` with ComfyUI's defaults, directories from Loom's settings
(loom-comfy-compat). ``LatentPreviewMethod`` is latent_preview's."""

import argparse
import enum

from loom_comfy_compat.missing import module_getattr


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class _Args(argparse.Namespace):
    """Reads directories from the bound runtime; other options are ComfyUI's defaults."""

    def __getattr__(self, name):
        from loom_comfy_compat.environment import ENV

        runtime = ENV.runtime
        settings = runtime.settings if runtime is not None else None
        directories = {
            "base_directory": "base_directory",
            "output_directory": "output_directory",
            "input_directory": "input_directory",
            "temp_directory": "temp_directory",
            "user_directory": "user_directory",
        }
        if name in directories:
            value = getattr(settings, directories[name], None) if settings else None
            return str(value) if value is not None else None
        if name == "cpu":
            return bool(settings and settings.cpu_only)
        if name == "disable_metadata":
            return bool(settings and settings.disable_metadata)
        raise AttributeError(f"comfy.cli_args.args has no option {name!r} in Loom")


args = _Args(
    listen="127.0.0.1",
    port=8188,
    preview_method=LatentPreviewMethod.NoPreviews,
    preview_size=512,
    disable_all_custom_nodes=False,
    dont_print_server=False,
    verbose="INFO",
    enable_cors_header=None,
    max_upload_size=100,
    highvram=False,
    lowvram=False,
    normalvram=False,
    novram=False,
    force_fp16=False,
    force_fp32=False,
    fp16_vae=False,
    bf16_vae=False,
    fp32_vae=False,
    deterministic=False,
    disable_smart_memory=False,
    multi_user=False,
    extra_model_paths_config=None,
    front_end_version="comfyanonymous/ComfyUI@latest",
    front_end_root=None,
)

__getattr__ = module_getattr(__name__)
__all__ = ["LatentPreviewMethod", "args"]
