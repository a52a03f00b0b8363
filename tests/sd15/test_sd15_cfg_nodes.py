"""Guidance-patch nodes in an SD1.5 txt2img prompt, through the executor with a tiny
checkpoint: each changes the sampled latent, the same way on every run."""

from __future__ import annotations

import pytest
import torch
from sd15_markers import needs_samplers
from test_sd15_workflows import image_of, run, txt2img

pytestmark = [needs_samplers]


def samples_of(result) -> torch.Tensor:
    return result.values["3"][0][0]["samples"]


def patched_prompt(class_type: str, **inputs) -> dict:
    prompt = txt2img(steps=2)
    prompt["20"] = {"class_type": class_type, "inputs": {"model": ["4", 0], **inputs}}
    prompt["33"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}}
    prompt["3"]["inputs"]["model"] = ["20", 0]
    return prompt


@pytest.mark.parametrize(
    ("class_type", "inputs"),
    [
        ("RescaleCFG", {"multiplier": 0.7}),
        ("CFGZeroStar", {}),
        ("CFGNorm", {"strength": 0.9}),
        ("Mahiro", {}),
        ("Epsilon Scaling", {"scaling_factor": 1.2}),
        ("TemporalScoreRescaling", {"tsr_k": 0.3, "tsr_sigma": 4.0}),
        ("TCFG", {}),
        ("APG", {"eta": 0.5, "norm_threshold": 5.0, "momentum": 0.5}),
        ("PerpNeg", {"empty_conditioning": ["33", 0], "neg_scale": 1.0}),
    ],
)
def test_guidance_node_changes_the_image_deterministically(runtime, class_type, inputs):
    plain = run(runtime, txt2img(steps=2))
    first = run(runtime, patched_prompt(class_type, **inputs))
    again = run(runtime, patched_prompt(class_type, **inputs))
    assert torch.equal(image_of(first), image_of(again))
    # the sampled latent (the tiny random VAE flattens differences in the decoded image)
    changed = (samples_of(first) - samples_of(plain)).abs().mean()
    assert changed > 1e-3 * samples_of(plain).abs().mean(), changed


def custom_prompt(guider: dict) -> dict:
    prompt = txt2img(steps=2)
    del prompt["3"]
    prompt |= {
        "30": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
        "31": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "32": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": 2, "denoise": 1.0},
        },
        "33": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "34": guider,
        "3": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["30", 0],
                "guider": ["34", 0],
                "sampler": ["31", 0],
                "sigmas": ["32", 0],
                "latent_image": ["5", 0],
            },
        },
    }
    return prompt


def test_perp_neg_guider_changes_the_image_deterministically(runtime):
    conds = {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "cfg": 8.0}
    plain = run(runtime, custom_prompt({"class_type": "CFGGuider", "inputs": conds}))
    perp = {
        "class_type": "PerpNegGuider",
        "inputs": conds | {"empty_conditioning": ["33", 0], "neg_scale": 1.0},
    }
    first = run(runtime, custom_prompt(perp))
    again = run(runtime, custom_prompt(perp))
    assert torch.equal(image_of(first), image_of(again))
    changed = (samples_of(first) - samples_of(plain)).abs().mean()
    assert changed > 1e-3 * samples_of(plain).abs().mean(), changed
