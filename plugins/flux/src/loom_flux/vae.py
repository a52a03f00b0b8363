"""Flux's 16-channel VAE (``ae.safetensors``) and latent format.

The autoencoder is loom-sd15's :class:`~loom_sd15.vae.AutoencoderKL` (the same CompVis layout)
with 16 latent channels and no ``quant_conv`` / ``post_quant_conv``. Latents reach the DiT as
``(x - 0.1159) * 0.3611``; previews use ComfyUI's Flux factors.
"""

from __future__ import annotations

from collections.abc import Mapping

from loom_sd15.vae import VAEConfig

from loom.types import LatentFormat

#: ComfyUI's ``latent_formats.Flux.latent_rgb_factors`` (16 x RGB) and bias.
FLUX_RGB_FACTORS = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_RGB_BIAS = (-0.0329, -0.0718, -0.0851)

FLUX_LATENT_FORMAT = LatentFormat(
    channels=16,
    scale_factor=0.3611,
    shift_factor=0.1159,
    downscale=8,
    rgb_factors=FLUX_RGB_FACTORS,
    rgb_bias=FLUX_RGB_BIAS,
)

FLUX_VAE = VAEConfig(z_channels=16, embed_dim=16, use_quant_conv=False)

#: Where the VAE sits inside all-in-one checkpoints (ComfyUI saves ``vae.``).
CHECKPOINT_VAE_PREFIX = "vae."
VAE_PREFIXES = (CHECKPOINT_VAE_PREFIX, "first_stage_model.", "")


def flux_vae_prefix(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The prefix of a 16-channel VAE without quant convs, or None."""
    for prefix in VAE_PREFIXES:
        conv_in = shapes.get(f"{prefix}decoder.conv_in.weight")
        if (
            conv_in is not None
            and f"{prefix}encoder.conv_in.weight" in shapes
            and conv_in[1] == 16
            and f"{prefix}post_quant_conv.weight" not in shapes
        ):
            return prefix
    return None
