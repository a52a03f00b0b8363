"""DifferentialDiffusion in an SD1.5 inpainting prompt, through the executor with a tiny
checkpoint: the kept area stays the input latent, the soft band is denoised differently."""

from __future__ import annotations

import numpy as np
import torch
from sd15_markers import needs_samplers
from test_sd15_workflows import SIZE, run, txt2img

pytestmark = [needs_samplers]


def write_soft_mask_image(runtime, name: str) -> None:
    """Opaque left third (kept), transparent right third (inpainted), a ramp between."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (SIZE, SIZE, 4), dtype=np.uint8)
    alpha = np.clip(np.linspace(2.0, -1.0, SIZE), 0.0, 1.0)  # 1 up to x=21, 0 from x=42
    pixels[..., 3] = (alpha * 255).round().astype(np.uint8)[None, :]
    Image.fromarray(pixels, "RGBA").save(runtime.settings.input_dir / name)


def inpaint_prompt(differential: bool) -> dict:
    prompt = txt2img(steps=4)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "soft.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["12"] = {
        "class_type": "SetLatentNoiseMask",
        "inputs": {"samples": ["11", 0], "mask": ["10", 1]},
    }
    prompt["3"]["inputs"] |= {"latent_image": ["12", 0], "scheduler": "simple"}
    if differential:
        prompt["13"] = {"class_type": "DifferentialDiffusion", "inputs": {"model": ["4", 0]}}
        prompt["3"]["inputs"]["model"] = ["13", 0]
    return prompt


def test_differential_diffusion_changes_the_soft_band_only(runtime):
    write_soft_mask_image(runtime, "soft.png")
    plain = run(runtime, inpaint_prompt(False))
    differential = run(runtime, inpaint_prompt(True))
    original = plain.values["11"][0][0]["samples"]
    a, b = plain.values["3"][0][0]["samples"], differential.values["3"][0][0]["samples"]
    # latent columns 0-1 come from mask 0 only (bilinear 64 -> 8): kept as the input latent
    # (up to the latent scale's round trip)
    for out in (a, b):
        assert torch.allclose(out[..., :2], original[..., :2], atol=1e-5)
    band = (a[..., 3:5] - b[..., 3:5]).abs().mean()
    assert band > 1e-2, band  # soft mask: denoised for part of the steps only
