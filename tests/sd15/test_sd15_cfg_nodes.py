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
    prompt["3"]["inputs"]["model"] = ["20", 0]
    return prompt


@pytest.mark.parametrize(
    ("class_type", "inputs"),
    [
        ("RescaleCFG", {"multiplier": 0.7}),
        ("CFGZeroStar", {}),
        ("CFGNorm", {"strength": 0.9}),
        ("Mahiro", {}),
        ("EpsilonScaling", {"scaling_factor": 1.2}),
        ("TCFG", {}),
        ("APG", {"eta": 0.5, "norm_threshold": 5.0, "momentum": 0.5}),
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
