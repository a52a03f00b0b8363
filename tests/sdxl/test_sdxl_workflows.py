"""SDXL workflows end to end with tiny SDXL-layout files through the real executor."""

from __future__ import annotations

import copy

import numpy as np
import torch
from sdxl_markers import needs_samplers

from loom.testing import txt2img_prompt

pytestmark = [needs_samplers]

SIZE = 64


def base_prompt(batch: int = 1, seed: int = 42, sdxl_encode: bool = False) -> dict:
    if sdxl_encode:
        positive = {
            "class_type": "CLIPTextEncodeSDXL",
            "inputs": {
                "clip": ["4", 1],
                "width": 1024,
                "height": 1024,
                "crop_w": 0,
                "crop_h": 0,
                "target_width": 1024,
                "target_height": 1024,
                "text_g": "a (glass:1.2) bottle on a table",
                "text_l": "studio photo",
            },
        }
    else:
        positive = "a (glass:1.2) bottle"
    return txt2img_prompt(
        "sdxl.safetensors",
        positive=positive,
        negative="blurry",
        width=SIZE,
        height=SIZE,
        batch=batch,
        seed=seed,
        steps=3,
        cfg=6.0,
        sampler_name="dpmpp_2m",
        scheduler="karras",
        filename_prefix="x",
    )


def run(runtime, prompt: dict):
    """One prompt on a fresh executor (empty cache), so repeated runs really recompute."""
    from loom.executor.executor import Executor

    executor = Executor(runtime)
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is None, result.error.get("exception_message")
    return result


def run_error(runtime, prompt: dict) -> str:
    from loom.executor.executor import Executor

    executor = Executor(runtime)
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, {})
    assert result.error is not None
    return result.error["exception_message"]


def image_of(result, node: str = "8") -> torch.Tensor:
    return result.values[node][0][0]


def test_txt2img_plain_clip_text_encode_is_deterministic(runtime):
    a = image_of(run(runtime, base_prompt()))
    assert a.shape == (1, SIZE, SIZE, 3) and torch.isfinite(a).all()
    assert torch.equal(a, image_of(run(runtime, base_prompt())))
    assert not torch.equal(a, image_of(run(runtime, base_prompt(seed=43))))


def test_plain_encode_takes_its_size_from_the_latent(runtime):
    """Plain CLIPTextEncode == CLIPTextEncodeSDXL with the latent's size, crop 0, same text."""
    plain = base_prompt()
    explicit = base_prompt()
    explicit["6"] = {
        "class_type": "CLIPTextEncodeSDXL",
        "inputs": {
            "clip": ["4", 1],
            "width": SIZE,
            "height": SIZE,
            "crop_w": 0,
            "crop_h": 0,
            "target_width": SIZE,
            "target_height": SIZE,
            "text_g": "a (glass:1.2) bottle",
            "text_l": "a (glass:1.2) bottle",
        },
    }
    a = image_of(run(runtime, plain))
    assert torch.equal(a, image_of(run(runtime, explicit)))
    explicit["6"]["inputs"]["width"] = 1024
    assert not torch.equal(a, image_of(run(runtime, explicit)))


def test_txt2img_with_clip_text_encode_sdxl_and_batch_two(runtime):
    result = run(runtime, base_prompt(batch=2, sdxl_encode=True))
    images = image_of(result)
    assert images.shape == (2, SIZE, SIZE, 3) and torch.isfinite(images).all()
    assert not torch.equal(images[0], images[1])
    assert len(result.outputs["9"]["images"]) == 2


def _refiner_stage(prompt: dict) -> dict:
    """Base 3 of 4 steps, refiner the last one: two KSamplerAdvanced, ComfyUI's template."""
    prompt = copy.deepcopy(prompt)
    del prompt["3"]
    common = {"noise_seed": 42, "steps": 4, "cfg": 6.0}
    common |= {"sampler_name": "dpmpp_2m", "scheduler": "karras"}
    prompt["10"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": common
        | {
            "add_noise": "enable",
            "start_at_step": 0,
            "end_at_step": 3,
            "return_with_leftover_noise": "enable",
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    }
    prompt["12"] = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "sdxl-refiner.safetensors"},
    }
    for node, text, score in (("13", "a glass bottle", 6.0), ("14", "blurry", 2.5)):
        prompt[node] = {
            "class_type": "CLIPTextEncodeSDXLRefiner",
            "inputs": {"ascore": score, "width": 1024, "height": 1024, "text": text}
            | {"clip": ["12", 1]},
        }
    prompt["11"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": common
        | {
            "add_noise": "disable",
            "start_at_step": 3,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
            "model": ["12", 0],
            "positive": ["13", 0],
            "negative": ["14", 0],
            "latent_image": ["10", 0],
        },
    }
    prompt["8"]["inputs"]["samples"] = ["11", 0]
    return prompt


def test_base_then_refiner_through_two_ksampler_advanced(runtime):
    prompt = _refiner_stage(base_prompt(sdxl_encode=True))
    result = run(runtime, prompt)
    image = image_of(result)
    assert image.shape == (1, SIZE, SIZE, 3) and torch.isfinite(image).all()
    base_latent = result.values["10"][0][0]["samples"]
    refined = result.values["11"][0][0]["samples"]
    assert not torch.equal(base_latent, refined)
    assert torch.equal(image, image_of(run(runtime, prompt)))


def test_img2img(runtime):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(runtime.settings.input_dir / "in.png")
    prompt = base_prompt()
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"] |= {"latent_image": ["11", 0], "denoise": 0.6}
    a = image_of(run(runtime, prompt))
    assert a.shape == (1, SIZE, SIZE, 3) and torch.equal(a, image_of(run(runtime, prompt)))


def test_refiner_conditioning_on_the_base_model_is_a_clear_error(runtime):
    prompt = _refiner_stage(base_prompt(sdxl_encode=True))
    prompt["11"]["inputs"]["model"] = ["4", 0]  # refiner prompts into the base UNet
    message = run_error(runtime, prompt)
    assert message.startswith("KSamplerAdvanced: input positive holds conditioning")
    assert "sdxl.safetensors" in message and "text encoder" in message


def test_clip_text_encode_sdxl_on_a_refiner_clip_is_a_clear_error(runtime):
    prompt = base_prompt(sdxl_encode=True)
    prompt["12"] = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "sdxl-refiner.safetensors"},
    }
    prompt["6"]["inputs"]["clip"] = ["12", 1]
    message = run_error(runtime, prompt)
    assert "CLIPTextEncodeSDXL" in message and "'clip'" in message and "refiner" in message
