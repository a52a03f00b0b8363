"""Guidance-patch nodes (RescaleCFG, CFGZeroStar, CFGNorm, Mahiro, Epsilon Scaling) against a
hand computation of ComfyUI's formulas in ComfyUI's own terms (its ``args`` dicts, noise space
for ``sampler_cfg_function``), and the order the CFG guider applies model guidance hooks in."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from loom_samplers.guiders import Guider

from loom.executor.context import InterruptFlag, RunContext
from loom.samplers import CFGStep, GuidanceHooks, PostCFGStep, PreCFGStep, guidance_hooks_of

CFG = 6.0
SIGMA = torch.tensor([2.0, 3.0])


class _Runtime:
    def __init__(self, registry):
        self.registry = registry


def _run(registry, class_type, **inputs):
    ctx = RunContext(
        node_id="1",
        prompt_id="p",
        prompt={},
        extra_data={},
        runtime=_Runtime(registry),
        interrupt=InterruptFlag(),
    )
    node = registry.get_node(class_type)
    return node.impl.execute(node.impl.create(), inputs, ctx).values


PATTERN = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))


@pytest.fixture
def cloning_model(toy_model):
    """The toy MODEL with a real clone (own guidance hooks, shared everything else), its x0
    given a spatial pattern scaled by the prompt's value (the plain toy's v-prediction is a
    constant, whose standard deviation RescaleCFG would divide by)."""

    class Cloning(toy_model):
        def clone(self):
            return copy.copy(self)

        def apply_model(self, x, sigma, cond):
            mu = cond["c_crossattn"].mean(dim=(1, 2)).view(-1, 1, 1, 1)
            return super().apply_model(x, sigma, cond) + PATTERN * mu

    return Cloning


def _predict(model, cond, cfg=CFG):
    """``(guided x0, x, cond x0, uncond x0)`` for a batch of two at sigmas 2 and 3."""
    guider = Guider(model, {"positive": cond(1.0), "negative": cond(-0.5)}, cfg)
    shape = (2, 4, 8, 8)
    guider.prepare(torch.zeros(shape), torch.zeros(shape), None, 0)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7)) * 2.0
    plain = Guider(type(model)(), guider.conds, 1.0)
    plain.prepare(torch.zeros(shape), torch.zeros(shape), None, 0)
    c = plain.predict(x, SIGMA)[0]
    u = Guider(type(model)(), {"positive": cond(-0.5)}, 1.0)
    u.prepare(torch.zeros(shape), torch.zeros(shape), None, 0)
    return guider.predict(x, SIGMA)[0], x, c, u.predict(x, SIGMA)[0]


def comfy_rescale_cfg(x_orig, cond_pred, uncond_pred, sigma, cond_scale, multiplier):
    """ComfyUI's rescale_cfg as its sampler_cfg_function is called: noise in, noise out."""
    cond, uncond = x_orig - cond_pred, x_orig - uncond_pred
    sigma = sigma.view(-1, 1, 1, 1)
    x = x_orig / (sigma * sigma + 1.0)
    cond = ((x - (x_orig - cond)) * (sigma**2 + 1.0) ** 0.5) / sigma
    uncond = ((x - (x_orig - uncond)) * (sigma**2 + 1.0) ** 0.5) / sigma
    x_cfg = uncond + cond_scale * (cond - uncond)
    ro_pos = torch.std(cond, dim=(1, 2, 3), keepdim=True)
    ro_cfg = torch.std(x_cfg, dim=(1, 2, 3), keepdim=True)
    x_final = multiplier * x_cfg * (ro_pos / ro_cfg) + (1.0 - multiplier) * x_cfg
    noise = x_orig - (x - x_final * sigma / (sigma * sigma + 1.0) ** 0.5)
    return x_orig - noise  # cfg_function: cfg_result = x - sampler_cfg_function(args)


def test_rescale_cfg_is_comfyuis_rule(samplers_registry, cloning_model, cond):
    base = cloning_model()
    (model,) = _run(samplers_registry, "RescaleCFG", model=base, multiplier=0.7)
    assert model is not base and guidance_hooks_of(base) == GuidanceHooks()
    out, x, c, u = _predict(model, cond)
    expected = comfy_rescale_cfg(x, c, u, SIGMA, CFG, 0.7)
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(out, u + (c - u) * CFG, atol=1e-2)
    (off,) = _run(samplers_registry, "RescaleCFG", model=base, multiplier=0.0)
    assert torch.allclose(_predict(off, cond)[0], u + (c - u) * CFG, atol=1e-4)


def test_cfg_zero_star_is_comfyuis_rule(samplers_registry, cloning_model, cond):
    (model,) = _run(samplers_registry, "CFGZeroStar", model=cloning_model())
    out, x, c, u = _predict(model, cond)
    pos, neg = (x - c).reshape(2, -1), (x - u).reshape(2, -1)
    alpha = ((pos * neg).sum(1) / ((neg**2).sum(1) + 1e-8)).view(2, 1, 1, 1)
    cfg = u + (c - u) * CFG
    assert torch.allclose(out, cfg + u * (alpha - 1.0) + CFG * u * (1.0 - alpha), atol=1e-5)
    assert not torch.allclose(out, cfg, atol=1e-3)


def test_cfg_norm_is_comfyuis_rule(samplers_registry, cloning_model, cond):
    (model,) = _run(samplers_registry, "CFGNorm", model=cloning_model(), strength=0.8)
    out, _x, c, u = _predict(model, cond)
    cfg = u + (c - u) * CFG
    scale = (c.norm(dim=1, keepdim=True) / (cfg.norm(dim=1, keepdim=True) + 1e-8)).clamp(0, 1)
    assert torch.allclose(out, cfg * scale * 0.8, atol=1e-5)
    assert float(scale.min()) < 1.0  # the rule really scales some pixels down


def test_mahiro_is_comfyuis_rule(samplers_registry, cloning_model, cond):
    (model,) = _run(samplers_registry, "Mahiro", model=cloning_model())
    out, _x, c, u = _predict(model, cond)
    cfg = u + (c - u) * CFG
    leap, u_leap = c * CFG, u * CFG
    merge = (leap + cfg) / 2
    sim = F.cosine_similarity(
        u_leap.abs().sqrt() * u_leap.sign(), merge.abs().sqrt() * merge.sign()
    )
    weight = 2 * (sim.mean() + 1)
    assert torch.allclose(out, (weight * cfg + (4 - weight) * leap) / 4, atol=1e-5)


def test_epsilon_scaling_then_cfg_norm_apply_in_the_order_added(
    samplers_registry, cloning_model, cond
):
    (eps,) = _run(samplers_registry, "Epsilon Scaling", model=cloning_model(), scaling_factor=1.2)
    out, x, c, u = _predict(eps, cond)
    cfg = u + (c - u) * CFG
    scaled = x - (x - cfg) / 1.2
    assert torch.allclose(out, scaled, atol=1e-5)
    (both,) = _run(samplers_registry, "CFGNorm", model=eps, strength=1.0)
    assert eps.guidance.post_cfg == both.guidance.post_cfg[:1]  # the input keeps its hooks
    scale = (c.norm(dim=1, keepdim=True) / (scaled.norm(dim=1, keepdim=True) + 1e-8)).clamp(0, 1)
    assert torch.allclose(_predict(both, cond)[0], scaled * scale, atol=1e-5)


def test_pre_cfg_runs_first_and_cfg1_shortcut_can_be_disabled(cloning_model, cond):
    seen: list[PreCFGStep] = []

    def swap(step: PreCFGStep):
        seen.append(step)
        cond_x0, uncond_x0 = step.outputs
        return uncond_x0, cond_x0

    model = cloning_model()
    model.guidance = GuidanceHooks().with_pre_cfg(swap, disable_cfg1_optimization=True)
    out, _x, _c, u = _predict(model, cond, cfg=1.0)
    assert [call[0][0] for call in model.calls] == [4]  # negative evaluated at cfg 1
    assert torch.allclose(out, u, atol=1e-6)  # swapped before CFG: cfg 1 gives the negative
    assert seen[0].cond_scale == 1.0 and torch.equal(seen[0].sigma, SIGMA)

    model = cloning_model()
    model.guidance = GuidanceHooks().with_pre_cfg(swap)
    out, *_ = _predict(model, cond, cfg=1.0)
    assert [call[0][0] for call in model.calls] == [2]
    assert torch.equal(out, torch.zeros_like(out))  # ComfyUI: a skipped negative is zeros


def test_tcfg_damps_the_negative_as_comfyui_does(samplers_registry, cloning_model, cond):
    (model,) = _run(samplers_registry, "TCFG", model=cloning_model())
    out, x, c, u = _predict(model, cond)
    # the uncond score projected on the first right singular vector of [uncond; cond] scores
    damped = torch.empty_like(u)
    for i in range(2):
        matrix = torch.stack([(x - u)[i].flatten(), (x - c)[i].flatten()]).double()
        v1 = torch.linalg.svd(matrix, full_matrices=False).Vh[0]
        damped[i] = ((matrix[0] @ v1) * v1).view_as(u[i]).float()
    new_u = x - damped
    assert torch.allclose(out, new_u + (c - new_u) * CFG, atol=1e-4)
    assert not torch.allclose(new_u, u, atol=1e-3)
    # at cfg 1 the negative is not evaluated: TCFG leaves the zeros ComfyUI passes
    plain, *_ = _predict(model, cond, cfg=1.0)
    assert torch.allclose(plain, c, atol=1e-6)


def comfy_apg_positive(c, u, cond_scale, eta, norm_threshold, guidance):
    if norm_threshold > 0:
        norm = guidance.norm(p=2, dim=[-1, -2, -3], keepdim=True)
        guidance = guidance * torch.minimum(torch.ones_like(norm), norm_threshold / norm)
    unit = c / c.norm(p=2, dim=[-1, -2, -3], keepdim=True)
    parallel = (guidance * unit).sum(dim=[-1, -2, -3], keepdim=True) * unit
    return u + (guidance - parallel) + eta * parallel + (c - u) / cond_scale


def test_apg_projects_the_guidance_with_momentum(samplers_registry, cloning_model, cond):
    (model,) = _run(
        samplers_registry, "APG", model=cloning_model(), eta=0.5, norm_threshold=3.0, momentum=0.5
    )
    out, _x, c, u = _predict(model, cond)  # first call: the running average is the guidance
    pos = comfy_apg_positive(c, u, CFG, 0.5, 3.0, c - u)
    assert torch.allclose(out, u + (pos - u) * CFG, atol=1e-4)
    assert not torch.allclose(out, u + (c - u) * CFG, atol=1e-2)
    second, *_ = _predict(model, cond)  # same sigma, not higher: the average goes on
    pos = comfy_apg_positive(c, u, CFG, 0.5, 3.0, 0.5 * (c - u) + (c - u))
    assert torch.allclose(second, u + (pos - u) * CFG, atol=1e-4)
    (fresh,) = _run(
        samplers_registry, "APG", model=cloning_model(), eta=1.0, norm_threshold=0.0, momentum=0.0
    )
    plain, *_ = _predict(fresh, cond)
    # eta 1, no clip, no momentum: ComfyUI's rule is CFG at cond_scale + 1
    assert torch.allclose(plain, u + (c - u) * (CFG + 1), atol=1e-4)


def _alone(model_class, cond, value, x):
    guider = Guider(model_class(), {"positive": cond(value)}, 1.0)
    guider.prepare(torch.zeros_like(x), torch.zeros_like(x), None, 0)
    return guider.predict(x, SIGMA)[0]


def test_perp_neg_guider_is_comfyuis_rule(samplers_registry, cloning_model, cond):
    model = cloning_model()
    (guider,) = _run(
        samplers_registry,
        "PerpNegGuider",
        model=model,
        positive=cond(1.0),
        negative=cond(-0.5),
        empty_conditioning=cond(0.2),
        cfg=CFG,
        neg_scale=0.7,
    )
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    guider.prepare(torch.zeros_like(x), torch.zeros_like(x), None, 0)
    out, uncond = guider.predict(x, SIGMA)
    assert [call[0][0] for call in model.calls] == [6]  # the three prompts in one batch
    c, u, e = (_alone(cloning_model, cond, v, x) for v in (1.0, -0.5, 0.2))
    pos, neg = c - e, u - e
    perp = neg - ((neg * pos).sum() / pos.norm() ** 2) * pos
    assert torch.allclose(out, e + CFG * (pos - perp * 0.7), atol=1e-5)
    assert torch.allclose(uncond, u, atol=1e-6)

    (only,) = _run(
        samplers_registry,
        "PerpNegGuider",
        model=model,
        positive=cond(1.0),
        negative=cond(-0.5),
        empty_conditioning=cond(0.2),
        cfg=1.0,
        neg_scale=0.0,
    )
    only.prepare(torch.zeros_like(x), torch.zeros_like(x), None, 0)
    out, _ = only.predict(x, SIGMA)
    assert [call[0][0] for call in model.calls][1:] == [2]  # neg_scale 0, cfg 1: positive only
    assert torch.allclose(out, c, atol=1e-6)


def test_perp_neg_node_evaluates_the_empty_prompt_in_its_cfg_function(
    samplers_registry, cloning_model, cond
):
    model = cloning_model()
    (patched,) = _run(
        samplers_registry, "PerpNeg", model=model, empty_conditioning=cond(0.2), neg_scale=0.7
    )
    out, x, c, u = _predict(patched, cond)
    # one batch for positive and negative, then the empty prompt alone
    assert [call[0][0] for call in patched.calls] == [4, 2]
    e = _alone(cloning_model, cond, 0.2, x)
    pos, neg = c - e, u - e
    perp = neg - ((neg * pos).sum() / pos.norm() ** 2) * pos
    assert torch.allclose(out, e + CFG * (pos - perp * 0.7), atol=1e-5)


def _dual_hooks(seen: list):
    """A CFG function (CFG at twice the scale), a post-CFG function (halves the result) and a
    pre-CFG function that would zero everything: ComfyUI's dual guider never runs it."""

    def cfg_function(step: CFGStep):
        seen.append(("cfg", step))
        return step.uncond_denoised + (step.cond_denoised - step.uncond_denoised) * (
            2 * step.cond_scale
        )

    def post(step: PostCFGStep):
        seen.append(("post", step))
        return step.denoised * 0.5

    def pre(step: PreCFGStep):
        seen.append(("pre", step))
        return tuple(torch.zeros_like(o) for o in step.outputs)

    return GuidanceHooks().with_pre_cfg(pre).with_cfg_function(cfg_function).with_post_cfg(post)


@pytest.mark.parametrize("style", ["regular", "nested"])
def test_dual_cfg_guider_applies_cfg_and_post_cfg_hooks_as_comfyui(
    samplers_registry, cloning_model, cond, style
):
    seen: list = []
    model = cloning_model()
    model.guidance = _dual_hooks(seen)
    (guider,) = _run(
        samplers_registry,
        "DualCFGGuider",
        model=model,
        cond1=cond(1.0),
        cond2=cond(0.3),
        negative=cond(-0.5),
        cfg_conds=3.0,
        cfg_cond2_negative=5.0,
        style=style,
    )
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(9))
    guider.prepare(torch.zeros_like(x), torch.zeros_like(x), None, 0)
    out, uncond = guider.predict(x, SIGMA)
    p, m, n = (_alone(cloning_model, cond, v, x) for v in (1.0, 0.3, -0.5))
    assert [kind for kind, _ in seen] == ["cfg", "post"]  # no pre-CFG, as in ComfyUI
    (_, cfg_step), (_, post_step) = seen
    if style == "regular":
        inner = (n + (m - n) * 2 * 5.0) * 0.5  # the hooks on (cond2 vs negative, cfg2)
        assert torch.allclose(out, inner + (p - m) * 3.0, atol=1e-4)
        assert torch.allclose(uncond, n, atol=1e-6)
        pair, scale = (m, n), 5.0
    else:
        text = (m + (p - m) * 2 * 3.0) * 0.5  # the hooks on (cond1 vs cond2, cfg1)
        assert torch.allclose(out, n + 5.0 * (text - n), atol=1e-4)
        assert torch.allclose(uncond, m, atol=1e-6)  # the pair's negative, as ComfyUI's
        pair, scale = (p, m), 3.0
    assert cfg_step.cond_scale == post_step.cond_scale == scale
    assert torch.allclose(cfg_step.cond_denoised, pair[0], atol=1e-6)
    assert torch.allclose(post_step.uncond_denoised, pair[1], atol=1e-6)
    assert torch.equal(cfg_step.sigma, SIGMA) and torch.equal(post_step.x, x)


def test_dual_cfg_guider_cfg1_shortcut_follows_the_hooks(samplers_registry, cloning_model, cond):
    def build(model):
        (guider,) = _run(
            samplers_registry,
            "DualCFGGuider",
            model=model,
            cond1=cond(1.0),
            cond2=cond(0.3),
            negative=cond(-0.5),
            cfg_conds=1.0,
            cfg_cond2_negative=1.0,
            style="regular",
        )
        x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(2))
        guider.prepare(torch.zeros_like(x), torch.zeros_like(x), None, 0)
        return guider.predict(x, SIGMA)[0], x

    plain = cloning_model()
    out, x = build(plain)
    assert [call[0][0] for call in plain.calls] == [2]  # both scales 1: positive only
    assert torch.allclose(out, _alone(cloning_model, cond, 1.0, x), atol=1e-6)

    kept = cloning_model()
    kept.guidance = GuidanceHooks().with_post_cfg(
        lambda step: step.denoised, disable_cfg1_optimization=True
    )
    out, x = build(kept)
    assert [call[0][0] for call in kept.calls] == [6]  # a CFG++-style hook: all three
    assert torch.allclose(out, _alone(cloning_model, cond, 1.0, x), atol=1e-5)


def _tsr_by_hand(x, guided, sigma: float, k: float, s: float, *, flow: bool):
    """arXiv:2510.01184 eq. 6 as ComfyUI's TemporalScoreRescaling applies it to the guided x0."""
    alpha = 1.0 - sigma if flow else 1.0
    snr = (alpha / sigma) ** 2
    r = (snr * s * s + 1) / (snr * s * s / k + 1)
    return x / alpha + r * (guided - x / alpha)


def test_temporal_score_rescaling_is_comfyuis_rule_on_an_eps_model(
    samplers_registry, cloning_model, cond
):
    (model,) = _run(
        samplers_registry, "TemporalScoreRescaling", model=cloning_model(), tsr_k=0.8, tsr_sigma=1.5
    )
    out, x, c, u = _predict(model, cond)
    guided = u + (c - u) * CFG
    # one rescale factor per step, from the batch's first sigma (2.0), as ComfyUI
    assert torch.allclose(out, _tsr_by_hand(x, guided, 2.0, 0.8, 1.5, flow=False), atol=1e-5)
    assert not torch.allclose(out, guided, atol=1e-3)


def test_temporal_score_rescaling_at_k_1_leaves_the_image_alone(
    samplers_registry, cloning_model, cond
):
    (model,) = _run(
        samplers_registry, "TemporalScoreRescaling", model=cloning_model(), tsr_k=1.0, tsr_sigma=3.0
    )
    assert torch.equal(_predict(model, cond)[0], _predict(cloning_model(), cond)[0])


def test_temporal_score_rescaling_uses_the_flow_snr_on_a_flow_model(
    samplers_registry, cloning_model, cond
):
    from loom.model_sampling import FlowMatching

    (model,) = _run(
        samplers_registry,
        "TemporalScoreRescaling",
        model=cloning_model(FlowMatching()),
        tsr_k=1.3,
        tsr_sigma=0.5,
    )
    shape = (2, 4, 8, 8)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(5)) * 0.6
    sigma = torch.tensor([0.6, 0.6])
    predictions = []
    for patched in (model, cloning_model(FlowMatching())):
        guider = Guider(patched, {"positive": cond(1.0), "negative": cond(-0.5)}, CFG)
        guider.prepare(torch.zeros(shape), torch.zeros(shape), None, 0)
        predictions.append(guider.predict(x, sigma)[0])
    out, guided = predictions
    assert torch.allclose(out, _tsr_by_hand(x, guided, 0.6, 1.3, 0.5, flow=True), atol=1e-5)
