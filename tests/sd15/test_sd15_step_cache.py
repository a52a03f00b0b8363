"""EasyCache and LazyCache on a tiny SD1.5 checkpoint through the executor: threshold 0 gives
the plain image bitwise; a large threshold makes fewer UNet calls (counted)."""

from __future__ import annotations

import pytest
import torch
from sd15_markers import needs_samplers
from test_sd15_cfg_nodes import samples_of
from test_sd15_workflows import run, txt2img

pytestmark = needs_samplers


def cached_prompt(node: str, threshold: float, steps: int = 8) -> dict:
    prompt = txt2img(steps=steps)
    prompt["20"] = {
        "class_type": node,
        "inputs": {
            "model": ["4", 0],
            "reuse_threshold": threshold,
            "start_percent": 0.0,
            "end_percent": 1.0,
            "verbose": False,
        },
    }
    prompt["3"]["inputs"]["model"] = ["20", 0]
    return prompt


@pytest.mark.parametrize("node", ["EasyCache", "LazyCache"])
def test_step_cache_on_sd15(runtime, monkeypatch, node):
    from loom_sd15.model import SD15Model

    calls: list[int] = []
    original = SD15Model.apply_model

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SD15Model, "apply_model", counting)
    plain = samples_of(run(runtime, txt2img(steps=8)))
    plain_calls = len(calls)
    assert plain_calls == 8  # cond and uncond batched: one call a step
    calls.clear()
    exact = samples_of(run(runtime, cached_prompt(node, 0.0)))
    assert torch.equal(exact, plain) and len(calls) == plain_calls
    calls.clear()
    loose = samples_of(run(runtime, cached_prompt(node, 3.0)))
    assert 2 <= len(calls) < plain_calls
    assert torch.isfinite(loose).all() and not torch.equal(loose, plain)
