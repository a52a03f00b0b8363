"""``latent_preview`` (loom-comfy-compat): preview methods; ``get_previewer`` returns None
(no previewer), which packs treat as "previews off"."""

from comfy.cli_args import LatentPreviewMethod
from loom_comfy_compat.missing import module_getattr


def get_previewer(device, latent_format):
    return None


def prepare_callback(model, steps, x0_output_dict=None):
    """A sampler callback that advances the running node's progress bar."""
    from comfy.utils import ProgressBar

    bar = ProgressBar(steps)

    def callback(step, x0, x, total_steps):
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        bar.update_absolute(step + 1, total_steps)

    return callback


__getattr__ = module_getattr(__name__)
__all__ = ["LatentPreviewMethod", "get_previewer", "prepare_callback"]
