"""LatentApplyOperationCFG: its operation rewrites the guidance direction ``cond - uncond``
before CFG combines the predictions (the pre-CFG hook of the CFG guider)."""

from __future__ import annotations

import copy

import torch
from loom_samplers.guiders import Guider

from loom.executor.context import InterruptFlag, RunContext
from loom.nodes.builtin.latent_operations import TonemapReinhard
from loom.samplers import guidance_hooks_of


def _apply_cfg_node(registry, model, operation):
    node = registry.get_node("LatentApplyOperationCFG")
    ctx = RunContext(
        node_id="1",
        prompt_id="p",
        prompt={},
        extra_data={},
        runtime=None,
        interrupt=InterruptFlag(),
    )
    inputs = {"model": model, "operation": operation}
    (out,) = node.impl.execute(node.impl.create(), inputs, ctx).values
    return out


def _predict(model, cond, cfg):
    guider = Guider(model, {"positive": cond(1.0), "negative": cond(-1.0)}, cfg)
    noise = torch.zeros(1, 4, 4, 4)
    guider.prepare(noise, noise, None, 0)
    x = torch.linspace(-1, 1, 64).reshape(1, 4, 4, 4)
    return x, guider.predict(x, torch.tensor([2.0]))[0]


def test_operation_scales_the_guidance_direction(samplers_registry, toy_model, cond):
    class Cloning(toy_model):
        def clone(self):
            return copy.copy(self)

    base = Cloning()
    doubled = _apply_cfg_node(samplers_registry, base, lambda latent: 2.0 * latent)
    assert doubled is not base and guidance_hooks_of(base).pre_cfg == ()
    x, out = _predict(doubled, cond, cfg=3.0)
    d = lambda mu: (x + 4.0 * mu) / 5.0  # noqa: E731 - the toy model's answer at σ = 2
    # cond' = 2 (cond - uncond) + uncond, then uncond + (cond' - uncond) * 3
    assert torch.allclose(out, d(-1.0) + 2.0 * (d(1.0) - d(-1.0)) * 3.0, atol=1e-5)
    # chained: applied in order, each on the previous one's direction
    tonemapped = _apply_cfg_node(samplers_registry, doubled, TonemapReinhard(1.0))
    assert len(guidance_hooks_of(tonemapped).pre_cfg) == 2
    assert len(guidance_hooks_of(doubled).pre_cfg) == 1
    _, chained = _predict(tonemapped, cond, cfg=3.0)
    direction = TonemapReinhard(1.0)(2.0 * (d(1.0) - d(-1.0)))
    assert torch.allclose(chained, d(-1.0) + direction * 3.0, atol=1e-5)


def test_at_cfg_one_the_operation_sees_the_conditional_prediction(
    samplers_registry, toy_model, cond
):
    class Cloning(toy_model):
        def clone(self):
            return copy.copy(self)

    model = _apply_cfg_node(samplers_registry, Cloning(), lambda latent: 0.5 * latent)
    x, out = _predict(model, cond, cfg=1.0)
    # the negative is not evaluated: uncond is zeros, as in ComfyUI
    assert torch.allclose(out, 0.5 * (x + 4.0) / 5.0, atol=1e-6)
