"""EasyCache under every guider: it wraps each batched model call of a run, as ComfyUI's
wraps the diffusion model, so DualCFGGuider, PerpNegGuider, the PerpNeg node's extra
empty-prompt evaluation and a group evaluation on another handle (SkipLayerGuidanceDiTSimple's
kind) are cached too: threshold 0 gives the uncached result bitwise, a positive threshold cuts
model calls (counted)."""

from __future__ import annotations

import pytest
import torch
from loom_samplers.cfg_nodes import PerpNeg
from loom_samplers.guiders import DualCFGGuider, Guider, PerpNegGuider
from loom_samplers.ksampler import SamplerChoice, sample
from loom_samplers.step_cache_nodes import EasyCache

from loom.samplers import CondBatchStep, guidance_hooks_of
from loom.types import RegisteredSampler

STEPS = 12


class CountingToy:
    """The samplers' toy model (a Gaussian-data denoiser) counting its calls in a counter its
    clones share; ``bent`` changes its output (a stand-in for a patched clone)."""

    def __init__(self, toy_model):
        self.inner = toy_model()
        self.model_sampling = self.inner.model_sampling
        self.latent_format = self.inner.latent_format
        self.counter = {"calls": 0, "rows": 0}
        self.bent = 0.0

    def clone(self):
        twin = CountingToy.__new__(CountingToy)
        twin.__dict__.update(self.__dict__)
        return twin

    @property
    def calls(self):
        return self.counter["calls"]

    def apply_model(self, x, sigma, cond):
        self.counter["calls"] += 1
        self.counter["rows"] += x.shape[0]
        out = self.inner.apply_model(x, sigma, cond) + 0.05 * torch.sin(3 * x)
        return out + self.bent * torch.cos(x)


def run(guider):
    from loom_samplers.samplers import SAMPLERS

    model = guider.model
    sigmas = torch.cat(
        [model.model_sampling.sigmas.flip(0)[:: 1000 // STEPS][:STEPS], torch.zeros(1)]
    )
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    choice = SamplerChoice(RegisteredSampler("euler", SAMPLERS["euler"]))
    return sample(guider, noise, torch.zeros_like(noise), choice, sigmas, seed=0)


def dual(model, cond, nested=False):
    conds = {"positive": cond(1.0), "middle": cond(0.4), "negative": cond(-0.5)}
    return DualCFGGuider(model, conds, 3.0, cfg2=2.0, nested=nested)


def perp_neg_guider(model, cond):
    conds = {
        "positive": cond(1.0),
        "negative": cond(-0.5),
        "empty_negative_prompt": cond(0.1),
    }
    return PerpNegGuider(model, conds, 4.0, neg_scale=0.7)


def perp_neg_node(model, cond):
    patched = PerpNeg(model=model, empty_conditioning=cond(0.1), neg_scale=0.7).run(None)
    return Guider(patched, {"positive": cond(1.0), "negative": cond(-0.5)}, 4.0)


class BentUncond:
    """A group evaluation like SkipLayerGuidanceDiTSimple's: the positive by the MODEL, the
    negative by a fresh clone of it with another output."""

    def __call__(self, step: CondBatchStep):
        positive, negative = step.groups
        bent = step.model.clone()
        bent.bent = 0.3
        cond = step.evaluate(step.model, (positive, None))[0]
        return [cond, step.evaluate(bent, (None, negative))[1]]


def bent_uncond(model, cond):
    patched = model.clone()
    patched.guidance = guidance_hooks_of(patched).with_cond_batch_function(BentUncond())
    return Guider(patched, {"positive": cond(1.0), "negative": cond(-0.5)}, 4.0)


GUIDERS = {
    "dual_regular": dual,
    "dual_nested": lambda model, cond: dual(model, cond, nested=True),
    "perp_neg_guider": perp_neg_guider,
    "perp_neg_node": perp_neg_node,
    "uncond_on_a_clone": bent_uncond,
}


def cached(model, threshold):
    return EasyCache(
        model=model, reuse_threshold=threshold, start_percent=0.0, end_percent=1.0
    ).run(None)


@pytest.mark.parametrize("name", list(GUIDERS))
def test_easy_cache_threshold_zero_is_bitwise_and_a_positive_one_cuts_calls(name, toy_model, cond):
    make = GUIDERS[name]
    plain_model = CountingToy(toy_model)
    plain = run(make(plain_model, cond))
    plain_calls = plain_model.calls
    assert plain_calls >= STEPS

    zero = cached(CountingToy(toy_model), 0.0)
    assert torch.equal(run(make(zero, cond)), plain)
    assert zero.calls == plain_calls

    loose = cached(CountingToy(toy_model), 3.0)
    result = run(make(loose, cond))
    assert loose.calls < plain_calls  # every call of the run is cached, skipped ones too
    assert torch.isfinite(result).all() and not torch.equal(result, plain)


def test_the_skip_decision_starts_afresh_at_each_evaluation(toy_model, cond):
    """The PerpNeg node's empty prompt is evaluated apart from the CFG pair, in an evaluation
    of its own. ComfyUI's skip flag is reset at each ``calc_cond_batch`` and only the first
    entry of the run (the pair's negative) sets it, so on a skipped step the pair reuses its
    cached changes but the empty prompt still runs: one call per step for it, one for the
    pair on the steps that were not skipped."""
    loose = cached(CountingToy(toy_model), 3.0)
    guider = perp_neg_node(loose, cond)
    run(guider)
    skipped = guider.cache_run.tracker.skipped
    assert 0 < skipped < STEPS
    assert loose.calls == STEPS + (STEPS - skipped)
