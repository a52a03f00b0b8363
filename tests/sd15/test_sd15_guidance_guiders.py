"""SelfAttentionGuidance and PerturbedAttentionGuidance under DualCFGGuider and PerpNegGuider,
against a hand computation on the tiny SD1.5 model: ComfyUI's post-CFG function gets the pair
the guider's ``cfg_function`` call names (DualCFG regular: ``cond2`` vs the negative; nested:
``cond1`` vs ``cond2``; PerpNeg: the positive vs the negative) and re-evaluates that pair's
conditioning; SAG's attention map is the one of conditioning group 1 of the batched call
(ComfyUI's ``cond_or_uncond`` index 1: ``cond2`` under DualCFG, the negative under PerpNeg)."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.pag import PerturbedAttentionGuidance, identity_attention
from loom_sd15.sag import RECORDED_BLOCK, AttentionRecorder, SelfAttentionGuidance, degraded_x0
from sd15_markers import needs_samplers

from loom.nodes.builtin.loaders import CheckpointLoaderSimple
from loom.testing import make_context

pytestmark = needs_samplers

SAG_SCALE, BLUR = 0.8, 2.0
PAG_SCALE = 1.5
CFG, CFG2, NEG_SCALE = 3.0, 2.0, 0.7


@pytest.fixture
def model(runtime):
    return CheckpointLoaderSimple(ckpt_name="tiny.safetensors").run(make_context(runtime)).model


def text(model, seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, model.config.context_dim, generator=gen), {}]]


def prepared(guider, x, sigma):
    guider.prepare(x, torch.zeros_like(x), None, 0, torch.stack([sigma[0], torch.tensor(0.0)]))
    return guider.resolved


def predict(model, entries, x, sigma, **extra):
    (entry,) = entries
    return model.apply_model(x, sigma, {**entry.model_conds, **extra})


def attention_of(model, entries, x, sigma):
    """The middle block's self-attention map of ``entries`` recorded as group 1."""
    recorder = AttentionRecorder()
    recording = model.clone()
    recording.self_attention_replacements = {RECORDED_BLOCK: recorder}
    predict(recording, entries, x, sigma, cond_or_uncond=(1,))
    return recorder.scores


def sag_by_hand(model, guided, uncond_entries, uncond, recorded_map, x, sigma):
    degraded = degraded_x0(uncond, recorded_map, BLUR)
    sag = predict(model, uncond_entries, degraded + x - uncond, sigma)
    return guided + (degraded - sag) * SAG_SCALE


def pag_by_hand(model, guided, cond_entries, cond, x, sigma):
    perturbed_model = model.clone()
    perturbed_model.self_attention_replacements = {("middle", 0): identity_attention}
    perturbed = predict(perturbed_model, cond_entries, x, sigma)
    return guided + (cond - perturbed) * PAG_SCALE


def inputs():
    gen = torch.Generator().manual_seed(11)
    return torch.randn(1, 4, 16, 16, generator=gen) * 3.0, torch.tensor([3.0])


@pytest.mark.parametrize("nested", [False, True], ids=["regular", "nested"])
@pytest.mark.parametrize("patch", ["sag", "pag"])
def test_dual_cfg_guider_gives_the_pair_to_the_post_cfg_function(model, nested, patch):
    from loom_samplers.guiders import DualCFGGuider

    if patch == "sag":
        patched = SelfAttentionGuidance(model=model, scale=SAG_SCALE, blur_sigma=BLUR).run(None)
    else:
        patched = PerturbedAttentionGuidance(model=model, scale=PAG_SCALE).run(None)
    conds = {"positive": text(model, 1), "middle": text(model, 2), "negative": text(model, 3)}
    guider = DualCFGGuider(patched, conds, CFG, cfg2=CFG2, nested=nested)
    x, sigma = inputs()
    r = prepared(guider, x, sigma)
    with torch.no_grad():
        out, _ = guider.predict(x, sigma)
        n, m, p = (predict(model, r[name], x, sigma) for name in ("negative", "middle", "positive"))
        recorded = attention_of(model, r["middle"], x, sigma)  # group 1: cond2, either style
        if nested:  # the pair: cond1 vs cond2
            pair = m + (p - m) * CFG
            if patch == "sag":
                pair = sag_by_hand(model, pair, r["middle"], m, recorded, x, sigma)
            else:
                pair = pag_by_hand(model, pair, r["positive"], p, x, sigma)
            expected = n + CFG2 * (pair - n)
        else:  # the pair: cond2 vs the negative
            pair = n + (m - n) * CFG2
            if patch == "sag":
                pair = sag_by_hand(model, pair, r["negative"], n, recorded, x, sigma)
            else:
                pair = pag_by_hand(model, pair, r["middle"], m, x, sigma)
            expected = pair + (p - m) * CFG
        unguided = n + (m - n) * CFG2 + (p - m) * CFG if not nested else None
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    if unguided is not None:
        assert (out - unguided).abs().max() > 1e-3  # the patch did something


@pytest.mark.parametrize("patch", ["sag", "pag"])
def test_perp_neg_guider_gives_positive_and_negative_to_the_post_cfg_function(model, patch):
    from loom_samplers.guiders import PerpNegGuider, perp_neg

    if patch == "sag":
        patched = SelfAttentionGuidance(model=model, scale=SAG_SCALE, blur_sigma=BLUR).run(None)
    else:
        patched = PerturbedAttentionGuidance(model=model, scale=PAG_SCALE).run(None)
    conds = {
        "positive": text(model, 1),
        "negative": text(model, 3),
        "empty_negative_prompt": text(model, 4),
    }
    guider = PerpNegGuider(patched, conds, CFG, neg_scale=NEG_SCALE)
    x, sigma = inputs()
    r = prepared(guider, x, sigma)
    with torch.no_grad():
        out, _ = guider.predict(x, sigma)
        names = ("positive", "negative", "empty_negative_prompt")
        p, n, e = (predict(model, r[name], x, sigma) for name in names)
        plain = perp_neg(p, n, e, NEG_SCALE, CFG)
        if patch == "sag":
            recorded = attention_of(model, r["negative"], x, sigma)  # group 1: the negative
            expected = sag_by_hand(model, plain, r["negative"], n, recorded, x, sigma)
        else:
            expected = pag_by_hand(model, plain, r["positive"], p, x, sigma)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert (out - plain).abs().max() > 1e-3
