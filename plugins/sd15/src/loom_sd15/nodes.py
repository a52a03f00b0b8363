"""Nodes this plugin adds: ``VAEEncodeForInpaint`` (ComfyUI's, which core does not ship)."""

from __future__ import annotations

import math

import loom
from loom.errors import LoomError
from loom.input_checks import check_batches, check_vae_pixels
from loom.types import Image, Latent, Mask, Vae


@loom.node(
    "VAEEncodeForInpaint", category="latent/inpaint", display_name="VAE Encode (for Inpainting)"
)
class VAEEncodeForInpaint:
    pixels: Image
    vae: Vae
    mask: Mask
    grow_mask_by: int = loom.ui.int(6, min=0, max=64, step=1)

    def run(self, ctx: loom.RunContext) -> Latent:
        import torch
        import torch.nn.functional as F

        if self.vae is None:
            raise LoomError("ERROR: VAE is invalid: None")
        check_vae_pixels("VAEEncodeForInpaint", self.pixels, self.vae)
        pixels, mask, r = self.pixels, self.mask, getattr(self.vae, "downscale_ratio", 8)
        h, w = (pixels.shape[1] // r) * r, (pixels.shape[2] // r) * r
        mask = F.interpolate(
            mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(),
            size=(pixels.shape[1], pixels.shape[2]),
            mode="bilinear",
        )
        check_batches("VAEEncodeForInpaint", {"pixels": pixels, "mask": mask}, broadcast=("mask",))
        pixels = pixels.clone()
        if pixels.shape[1] != h or pixels.shape[2] != w:
            dy, dx = (pixels.shape[1] % r) // 2, (pixels.shape[2] % r) // 2
            pixels = pixels[:, dy : h + dy, dx : w + dx, :]
            mask = mask[:, :, dy : h + dy, dx : w + dx]
        if self.grow_mask_by == 0:
            grown = mask
        else:
            kernel = torch.ones((1, 1, self.grow_mask_by, self.grow_mask_by))
            padding = math.ceil((self.grow_mask_by - 1) / 2)
            grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)
        keep = (1.0 - mask.round()).squeeze(1)
        for c in range(3):
            pixels[:, :, :, c] -= 0.5
            pixels[:, :, :, c] *= keep
            pixels[:, :, :, c] += 0.5
        samples = self.vae.encode(pixels[:, :, :, :3])
        return {"samples": samples, "noise_mask": grown[:, :, :h, :w].round()}


NODES = (VAEEncodeForInpaint,)
