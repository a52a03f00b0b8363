"""Hooked conditioning under guidance that evaluates it again: PerturbedAttentionGuidance's
second evaluation of the positive carries the entries' LoRA hook (ComfyUI patches the hook
weights whatever the call's model options), so a hook on every entry with PAG equals
LoraLoaderModelOnly with PAG.

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
    base_dir,  # noqa: F401
    base_prompt,
    executor,  # noqa: F401
    run,
    shapes,  # noqa: F401
    tiny_checkpoint,  # noqa: F401
    with_hook,
    with_lora_model_only,
)


def with_pag(prompt: dict, scale: float = 3.0) -> dict:
    """PerturbedAttentionGuidance on whatever MODEL the KSampler had."""
    prompt["60"] = {
        "class_type": "PerturbedAttentionGuidance",
        "inputs": {"model": prompt["3"]["inputs"]["model"], "scale": scale},
    }
    prompt["3"]["inputs"]["model"] = ["60", 0]
    return prompt


def test_pag_with_a_lora_hook_on_every_entry_equals_pag_on_the_lora_model(executor):  # noqa: F811
    hooked = run(executor, with_pag(with_hook(base_prompt(), on=("6", "7"))))
    loader = run(executor, with_pag(with_lora_model_only(base_prompt())))
    without_pag = run(executor, with_hook(base_prompt(), on=("6", "7")))
    assert (hooked - without_pag).abs().max() > 1e-3  # PAG did something
    assert torch.allclose(hooked, loader, atol=1e-5, rtol=0)


@pytest.fixture
def runtime(base_dir):  # noqa: F811
    from test_lora_sd15 import make_runtime

    return make_runtime(base_dir)


def test_pags_second_evaluation_of_a_hooked_positive_carries_the_hook(runtime):
    """Only the positive hooked: the perturbed evaluation runs the LoRA's weights too (by
    hand: the positive on LoraLoaderModelOnly's MODEL, perturbed and not)."""
    from loom_lora.hook_nodes import CreateHookLoraModelOnly
    from loom_lora.nodes import LoraLoaderModelOnly
    from loom_samplers.guiders import Guider
    from loom_sd15.pag import PerturbedAttentionGuidance, perturbed_model

    from loom.hooks import HOOKS
    from loom.nodes.builtin.loaders import CheckpointLoaderSimple
    from loom.testing import make_context

    ctx = make_context(runtime)
    memory = runtime.memory
    model = CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(ctx).model
    hooks = CreateHookLoraModelOnly(lora_name="a_kohya.safetensors", strength_model=1.0).run(ctx)
    lora = LoraLoaderModelOnly(
        model=model, lora_name="a_kohya.safetensors", strength_model=1.0
    ).run(ctx)
    gen = torch.Generator().manual_seed(7)
    dim = model.config.context_dim
    positive, negative = (torch.randn(1, 77, dim, generator=gen) for _ in range(2))
    conds = {"positive": [[positive, {HOOKS: hooks}]], "negative": [[negative, {}]]}
    scale, cfg = 2.0, 4.0
    guider = Guider(PerturbedAttentionGuidance(model=model, scale=scale).run(None), conds, cfg)
    x = torch.randn(1, 4, 8, 8, generator=gen) * 3.0
    sigma = torch.tensor([3.0])
    guider.prepare(x, torch.zeros_like(x), None, 0, torch.tensor([3.0, 0.0]))
    with torch.no_grad():
        out, _ = guider.predict(x, sigma, ctx=ctx)

        def predicted(handle, text):
            memory.load([handle])
            return handle.apply_model(x, sigma, {"c_crossattn": text})

        cond = predicted(lora, positive)
        perturbed = predicted(perturbed_model(lora), positive)
        uncond = predicted(model, negative)
    assert (cond - predicted(model, positive)).abs().max() > 1e-3  # the LoRA matters
    expected = uncond + (cond - uncond) * cfg + (cond - perturbed) * scale
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
