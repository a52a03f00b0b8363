"""The issue's workflows, end to end with a tiny checkpoint through the real executor."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sd15_markers import needs_samplers

from loom.testing import txt2img_prompt

pytestmark = [needs_samplers]

SIZE = 64


def txt2img(batch: int = 1, seed: int = 42, steps: int = 3) -> dict:
    return txt2img_prompt(
        "tiny.safetensors", width=SIZE, height=SIZE, batch=batch, seed=seed, steps=steps
    )


def run(runtime, prompt: dict, extra: dict | None = None):
    """One prompt on a fresh executor (empty cache), so repeated runs really recompute."""
    from loom.executor.executor import Executor

    executor = Executor(runtime)
    validated = executor.validate(copy.deepcopy(prompt))
    result = executor.execute("test", validated.prompt, validated.outputs, extra or {})
    assert result.error is None, result.error.get("exception_message")
    return result


def image_of(result, node: str = "8") -> torch.Tensor:
    return result.values[node][0][0]


def write_input_image(runtime, name: str, alpha: bool = False) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (SIZE, SIZE, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        pixels[..., 3] = 255
        pixels[16:48, 16:48, 3] = 0  # transparent square = area to inpaint
    Image.fromarray(pixels, "RGBA" if alpha else "RGB").save(runtime.settings.input_dir / name)


def test_txt2img_runs_and_is_bitwise_deterministic(runtime):
    first = run(runtime, txt2img())
    image = image_of(first)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert torch.isfinite(image).all()
    saved = first.outputs["9"]["images"]
    assert (runtime.settings.output_dir / saved[0]["filename"]).is_file()
    second = run(runtime, txt2img(seed=42))
    assert torch.equal(image, image_of(second))
    other_seed = run(runtime, txt2img(seed=43))
    assert not torch.equal(image, image_of(other_seed))


def test_txt2img_in_a_fresh_runtime_is_bitwise_identical(runtime, base_dir):
    from loom.testing import make_runtime

    a = image_of(run(runtime, txt2img()))
    fresh = make_runtime("sd15", "samplers", settings=runtime.settings)
    b = image_of(run(fresh, txt2img()))
    assert torch.equal(a, b)


def test_batch_of_four_first_item_matches_single_noise_stream(runtime):
    result = run(runtime, txt2img(batch=4))
    images = image_of(result)
    assert images.shape == (4, SIZE, SIZE, 3)
    assert len(result.outputs["9"]["images"]) == 4
    assert not torch.equal(images[0], images[1])


def test_img2img(runtime):
    write_input_image(runtime, "in.png")
    prompt = txt2img()
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"] |= {"latent_image": ["11", 0], "denoise": 0.6}
    a, b = image_of(run(runtime, prompt)), image_of(run(runtime, prompt))
    assert a.shape == (1, SIZE, SIZE, 3) and torch.equal(a, b)


@pytest.mark.parametrize("how", ["SetLatentNoiseMask", "VAEEncodeForInpaint"])
def test_inpainting(runtime, how):
    write_input_image(runtime, "rgba.png", alpha=True)
    prompt = txt2img()
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "rgba.png"}}
    if how == "SetLatentNoiseMask":
        prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        prompt["12"] = {
            "class_type": "SetLatentNoiseMask",
            "inputs": {"samples": ["11", 0], "mask": ["10", 1]},
        }
    else:
        prompt["12"] = {
            "class_type": "VAEEncodeForInpaint",
            "inputs": {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["10", 1], "grow_mask_by": 6},
        }
    prompt["3"]["inputs"]["latent_image"] = ["12", 0]
    result = run(runtime, prompt)
    latent = result.values["12"][0][0]
    assert latent["noise_mask"].shape[-2:] == (SIZE, SIZE)
    image = image_of(result)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert torch.equal(image, image_of(run(runtime, prompt)))


def test_hires_fix(runtime):
    prompt = txt2img()
    prompt["20"] = {
        "class_type": "LatentUpscale",
        "inputs": {
            "samples": ["3", 0],
            "upscale_method": "nearest-exact",
            "width": SIZE * 2,
            "height": SIZE * 2,
            "crop": "disabled",
        },
    }
    prompt["21"] = {
        "class_type": "KSampler",
        "inputs": {
            "seed": 7,
            "steps": 2,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 0.5,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["20", 0],
        },
    }
    prompt["8"]["inputs"]["samples"] = ["21", 0]
    image = image_of(run(runtime, prompt))
    assert image.shape == (1, SIZE * 2, SIZE * 2, 3)


def test_area_composition(runtime):
    prompt = txt2img()
    prompt["5"]["inputs"]["width"] = SIZE * 2
    prompt["30"] = {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "a red sky", "clip": ["4", 1]},
    }
    prompt["31"] = {
        "class_type": "ConditioningSetArea",
        "inputs": {
            "conditioning": ["30", 0],
            "width": SIZE,
            "height": SIZE,
            "x": SIZE,
            "y": 0,
            "strength": 1.0,
        },
    }
    prompt["32"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["31", 0]},
    }
    prompt["3"]["inputs"]["positive"] = ["32", 0]
    a = image_of(run(runtime, prompt))
    assert a.shape == (1, SIZE, SIZE * 2, 3)
    assert not torch.equal(a, image_of(run(runtime, txt2img() | {"5": prompt["5"]})))


def test_ui_format_workflow_gives_the_api_result(runtime):
    from loom_sd15.demo import bundled_workflow, set_widget

    from loom.workflow import convert_workflow

    workflow = bundled_workflow()
    set_widget(workflow, "CheckpointLoaderSimple", 0, "tiny.safetensors")
    set_widget(workflow, "EmptyLatentImage", 0, SIZE)
    set_widget(workflow, "EmptyLatentImage", 1, SIZE)
    set_widget(workflow, "KSampler", 0, 42)
    set_widget(workflow, "KSampler", 2, 3)
    prompt = convert_workflow(workflow, runtime.registry)
    assert prompt["3"]["inputs"]["steps"] == 3 and prompt["3"]["inputs"]["seed"] == 42
    ui_image = image_of(run(runtime, prompt, {"extra_pnginfo": {"workflow": workflow}}))
    api = txt2img()
    api["6"]["inputs"]["text"] = workflow["nodes"][1]["widgets_values"][0]
    api["7"]["inputs"]["text"] = "text, watermark"
    assert torch.equal(ui_image, image_of(run(runtime, api)))


def test_clip_set_last_layer_changes_the_result(runtime):
    prompt = txt2img()
    prompt["40"] = {
        "class_type": "CLIPSetLastLayer",
        "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2},
    }
    prompt["6"]["inputs"]["clip"] = ["40", 0]
    assert not torch.equal(image_of(run(runtime, prompt)), image_of(run(runtime, txt2img())))
