"""The 9-channel SDXL inpainting UNet: ComfyUI's concat conditioning (mask ‖ masked-image
latent) from InpaintModelConditioning, VAEEncodeForInpaint's noise mask, or neither."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sdxl_markers import needs_samplers
from test_sdxl_workflows import SIZE, base_prompt, image_of, run

from loom.safetensors_header import read_header
from loom.types import LoadRequest

LATENT = SIZE // 8


def _inpaint_model(tiny_files):
    from loom_sdxl.family import SDXLFamily

    header = read_header(tiny_files["inpaint"])
    return SDXLFamily().load(header, "checkpoint", LoadRequest()).model


def _text_options(**extra) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "pooled_output": torch.randn(1, 64, generator=generator),
        "cross_attn": torch.randn(1, 77, 96, generator=generator),
        **extra,
    }


def test_concat_is_rounded_mask_then_the_image_in_model_space(tiny_files):
    model = _inpaint_model(tiny_files)
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(2, 4, LATENT, LATENT, generator=generator)
    image = torch.randn(1, 4, LATENT, LATENT, generator=generator)
    mask = torch.rand(1, 1, SIZE, SIZE, generator=generator)
    options = _text_options(concat_latent_image=image, concat_mask=mask)
    concat = model.extra_conds(options, noise=noise, latent_image=torch.zeros_like(noise))[
        "c_concat"
    ]
    small = F.interpolate(mask, size=(LATENT, LATENT), mode="bilinear").round()
    fmt = model.latent_format
    expected = torch.cat([small, (image - fmt.shift_factor) * fmt.scale_factor], dim=1)
    assert concat.shape == (2, 5, LATENT, LATENT)
    torch.testing.assert_close(concat, expected.expand(2, -1, -1, -1), rtol=0, atol=1e-6)


def test_without_a_concat_image_the_sampled_latent_and_its_noise_mask_are_used(tiny_files):
    model = _inpaint_model(tiny_files)
    noise = torch.randn(1, 4, LATENT, LATENT)
    latent = torch.randn(1, 4, LATENT, LATENT)  # model space already, as the sampler passes it
    mask = (torch.arange(LATENT) < LATENT // 2).float().expand(1, 4, LATENT, LATENT)
    concat = model.extra_conds(
        _text_options(), noise=noise, latent_image=latent, denoise_mask=mask
    )["c_concat"]
    torch.testing.assert_close(concat, torch.cat([mask[:, :1], latent], dim=1))


def test_without_any_mask_the_model_inpaints_everything(tiny_files):
    """ComfyUI's rule: a mask of ones and the latent of a blank image (not a refusal)."""
    model = _inpaint_model(tiny_files)
    noise = torch.randn(1, 4, LATENT, LATENT)
    concat = model.extra_conds(
        _text_options(concat_latent_image=torch.randn(1, 4, LATENT, LATENT)),
        noise=noise,
        latent_image=torch.zeros_like(noise),
    )["c_concat"]
    blank = torch.tensor([0.8223, -0.6876, 0.6364, 0.1380]).reshape(1, 4, 1, 1)
    torch.testing.assert_close(concat[:, :1], torch.ones(1, 1, LATENT, LATENT))
    torch.testing.assert_close(concat[:, 1:], blank.expand(1, 4, LATENT, LATENT))


def _write_rgba(runtime, name: str, transparent_left: bool) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (SIZE, SIZE, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    if transparent_left:
        pixels[:, : SIZE // 2, 3] = 0  # LoadImage's mask: 1 where transparent
    Image.fromarray(pixels, "RGBA").save(runtime.settings.input_dir / name)


def inpaint_prompt(image: str) -> dict:
    prompt = base_prompt()
    prompt["4"]["inputs"]["ckpt_name"] = "sdxl-inpaint.safetensors"
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    prompt["12"] = {
        "class_type": "InpaintModelConditioning",
        "inputs": {
            "positive": ["6", 0],
            "negative": ["7", 0],
            "vae": ["4", 2],
            "pixels": ["10", 0],
            "mask": ["10", 1],
            "noise_mask": True,
        },
    }
    prompt["3"]["inputs"] |= {
        "positive": ["12", 0],
        "negative": ["12", 1],
        "latent_image": ["12", 2],
    }
    return prompt


@needs_samplers
def test_inpaint_model_conditioning_workflow(runtime):
    _write_rgba(runtime, "half.png", transparent_left=True)
    _write_rgba(runtime, "none.png", transparent_left=False)
    half = image_of(run(runtime, inpaint_prompt("half.png")))
    assert half.shape == (1, SIZE, SIZE, 3) and torch.isfinite(half).all()
    assert torch.equal(half, image_of(run(runtime, inpaint_prompt("half.png"))))
    # the mask reaches the UNet: another mask, another image
    assert not torch.equal(half, image_of(run(runtime, inpaint_prompt("none.png"))))


@needs_samplers
def test_vae_encode_for_inpaint_workflow_and_an_unmasked_latent(runtime):
    _write_rgba(runtime, "half.png", transparent_left=True)
    prompt = base_prompt()
    prompt["4"]["inputs"]["ckpt_name"] = "sdxl-inpaint.safetensors"
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "half.png"}}
    prompt["11"] = {
        "class_type": "VAEEncodeForInpaint",
        "inputs": {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["10", 1], "grow_mask_by": 6},
    }
    prompt["3"]["inputs"]["latent_image"] = ["11", 0]
    masked = image_of(run(runtime, prompt))
    assert masked.shape == (1, SIZE, SIZE, 3) and torch.isfinite(masked).all()
    # txt2img on the inpainting UNet (no mask anywhere) runs, as in ComfyUI
    plain = base_prompt()
    plain["4"]["inputs"]["ckpt_name"] = "sdxl-inpaint.safetensors"
    assert torch.isfinite(image_of(run(runtime, plain))).all()
