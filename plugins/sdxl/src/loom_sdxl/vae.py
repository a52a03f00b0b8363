"""The SDXL VAE: sd15's AutoencoderKL, never computed in float16.

SDXL's VAE overflows in float16 (NaN images). ComfyUI's VAEs work in bfloat16 or float32
unless ``--fp16-vae`` is given; :class:`SDXLVae` does the same: where the memory manager
would compute in float16, it decodes and encodes in bfloat16 on devices that support it
and float32 elsewhere. The latent scale (0.13025) belongs to the model's latent format.
"""

from __future__ import annotations

import torch
from loom_sd15.vae import AutoencoderKL, SD15Vae


def safe_vae_dtype(device: torch.device) -> torch.dtype:
    """What to compute an SDXL VAE in instead of float16 on ``device``."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16
    return torch.float32


class SDXLVae(SD15Vae):
    """The VAE socket value for SDXL (see the module docstring for its dtype rule)."""

    def clone(self) -> SDXLVae:
        return SDXLVae(self.handle.clone(), self.config, self.memory)

    def _module(self, activation_bytes: int = 0) -> AutoencoderKL:
        self._avoid_float16()
        return super()._module(activation_bytes)

    def _avoid_float16(self) -> None:
        if self.memory is None or self.handle.compute_dtype is not None:
            return
        if self.memory.compute_dtype_for(self.handle) == torch.float16:
            self.handle.compute_dtype = safe_vae_dtype(self.handle.compute_device)
