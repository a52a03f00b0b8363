"""A hook on the positive only: each step switches between the hook group's clone and the
MODEL, and the run merges the LoRA into the weights once per (group, strength), not at every
switch (ComfyUI's hook mode MaxSpeed); the image is bitwise the one of re-merging at every
switch, which a budget with no room for the merged copies falls back to.

Skips unless loom-sd15 and loom-samplers are installed.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("loom_sd15", "loom_samplers")),
    reason="needs loom-sd15 and loom-samplers",
)

from test_lora_hooks_sd15 import (  # noqa: E402  (same-folder helpers and fixtures)
    STEPS,
    base_dir,  # noqa: F401
    base_prompt,
    run,
    shapes,  # noqa: F401
    tiny_checkpoint,  # noqa: F401
    with_hook,
)
from test_lora_sd15 import UNET_LAYERS, make_runtime  # noqa: E402

KEYS = len(UNET_LAYERS)  # the test LoRA patches one weight per layer


@pytest.fixture
def merges(monkeypatch):
    import loom.memory.placement as placement

    counted = []
    original = placement.patched_weight

    def counting(*args, **kwargs):
        counted.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(placement, "patched_weight", counting)
    return counted


def sampled(base_dir, prompt, budget=None):  # noqa: F811
    from loom.executor.executor import Executor

    runtime = make_runtime(base_dir)
    if budget is not None:
        runtime.memory.explicit_budget_bytes = budget
    return run(Executor(runtime), prompt)


def keyframed(prompt: dict) -> dict:
    """The hook at strength 1, then 0.5 from 45% of the run."""
    prompt["40"] = {
        "class_type": "CreateHookKeyframe",
        "inputs": {"strength_mult": 1.0, "start_percent": 0.0},
    }
    prompt["41"] = {
        "class_type": "CreateHookKeyframe",
        "inputs": {"strength_mult": 0.5, "start_percent": 0.45, "prev_hook_kf": ["40", 0]},
    }
    prompt["42"] = {
        "class_type": "SetHookKeyframes",
        "inputs": {"hooks": ["30", 0], "hook_kf": ["41", 0]},
    }
    prompt["31"]["inputs"]["hooks"] = ["42", 0]
    return prompt


@pytest.mark.parametrize(
    ("scheduled", "strengths"), [(False, 1), (True, 2)], ids=["one_strength", "keyframed"]
)
def test_a_hooked_positive_merges_once_per_strength_with_the_same_image(
    base_dir,  # noqa: F811
    merges,
    scheduled,
    strengths,
):
    prompt = with_hook(base_prompt(), on=("6",))
    if scheduled:
        prompt = keyframed(prompt)
    cached = sampled(base_dir, prompt)
    assert len(merges) == strengths * KEYS
    merges.clear()
    remerged = sampled(base_dir, prompt, budget=1)  # no room for any kept copy
    assert len(merges) == STEPS * KEYS  # every step loads the hooked clone afresh
    assert torch.equal(cached, remerged)
