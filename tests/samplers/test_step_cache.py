"""EasyCache and LazyCache: ComfyUI's reuse rule step by step by hand, threshold 0 giving the
plain result bitwise, a large threshold skipping model calls (counted), the nodes and
/object_info."""

from __future__ import annotations

import pytest
import torch
from loom_samplers.guiders import Guider
from loom_samplers.ksampler import SamplerChoice, sample
from loom_samplers.step_cache import (
    EASY_CACHE,
    LAZY_CACHE,
    ChangeTracker,
    LazyCacheRun,
    StepCache,
    network_output,
)
from loom_samplers.step_cache_nodes import EasyCache, LazyCache

from loom.errors import LoomError
from loom.model_sampling import DiscreteEps, DiscreteV
from loom.types import RegisteredSampler


def mean_abs(t):
    return t.flatten().abs().mean()


def test_lazy_cache_follows_comfyuis_reuse_rule_by_hand():
    settings = StepCache(LAZY_CACHE, 0.5, 0.0, 1.0, subsample=2)
    run = LazyCacheRun(settings, 1e9, 0.0, ChangeTracker(settings))
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(1, 2, 4, 4, generator=g) for _ in range(4)]
    xs[2] = xs[1] + 0.01  # a small input change: predicted to change the output little
    outs = [torch.randn(1, 2, 4, 4, generator=g) for _ in range(4)]
    sigma = torch.tensor([5.0])
    calls = []

    def call(i):
        def run_model():
            calls.append(i)
            return outs[i]

        return run_model

    sub = lambda t: t[..., ::2, ::2]  # noqa: E731
    assert run.predict(xs[0], sigma, call(0)) is outs[0]  # nothing to compare with yet
    assert run.predict(xs[1], sigma, call(1)) is outs[1]  # no rate yet
    rate = mean_abs(sub(outs[1]) - sub(outs[0])) / mean_abs(sub(xs[1]) - sub(xs[0]))
    predicted = rate * mean_abs(sub(xs[2]) - sub(xs[1])) / mean_abs(outs[1])
    assert predicted < 0.5
    skipped = run.predict(xs[2], sigma, call(2))  # under the threshold: reuse
    assert calls == [0, 1] and run.tracker.skipped == 1
    assert torch.equal(skipped, xs[2] + (outs[1] - xs[1]))
    assert torch.isclose(torch.as_tensor(run.tracker.cumulative), predicted)
    # a large change: the sum passes the threshold, is reset, and the model runs
    big = xs[1] + 10.0
    assert run.predict(big, sigma, call(3)) is outs[3]
    assert calls == [0, 1, 3] and run.tracker.cumulative == 0.0
    # before the start sigma and from the end sigma the model always runs
    late = LazyCacheRun(settings, 1.0, 0.0, ChangeTracker(settings))
    for i in range(3):
        late.predict(xs[i], sigma, call(i))
    assert calls[-3:] == [0, 1, 2] and late.tracker.skipped == 0


@pytest.mark.parametrize("sampling", [DiscreteEps(), DiscreteV()])
def test_network_output_inverts_calculate_denoised(sampling):
    g = torch.Generator().manual_seed(1)
    x, out = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    sigma = torch.tensor([3.0, 0.5])
    x0 = sampling.calculate_denoised(sigma, out, x)
    assert torch.allclose(network_output(sampling, sigma, x0, x), out, atol=1e-5)


class CountingToy:
    """The samplers' toy model (a Gaussian-data denoiser) counting its calls."""

    def __init__(self, toy_model):
        self.inner = toy_model()
        self.model_sampling = self.inner.model_sampling
        self.latent_format = self.inner.latent_format
        self.rows = 0
        self.calls = 0

    def clone(self):
        twin = CountingToy.__new__(CountingToy)
        twin.__dict__.update(self.__dict__)
        return twin

    def apply_model(self, x, sigma, cond):
        self.calls += 1
        return self.inner.apply_model(x, sigma, cond) + 0.05 * torch.sin(3 * x)


def run_sampling(model, cond, steps=12, cfg=4.0):
    from loom_samplers.samplers import SAMPLERS

    guider = Guider(model, {"positive": cond(1.0), "negative": cond(-0.5)}, cfg)
    sigmas = torch.cat(
        [model.model_sampling.sigmas.flip(0)[:: 1000 // steps][:steps], torch.zeros(1)]
    )
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    choice = SamplerChoice(RegisteredSampler("euler", SAMPLERS["euler"]))
    return sample(guider, noise, torch.zeros_like(noise), choice, sigmas, seed=0)


@pytest.mark.parametrize("node", [EasyCache, LazyCache])
def test_threshold_zero_is_the_plain_result_and_a_large_one_skips_calls(node, toy_model, cond):
    plain_model = CountingToy(toy_model)
    plain = run_sampling(plain_model, cond)
    exact = node(model=plain_model, reuse_threshold=0.0, start_percent=0.0, end_percent=1.0)
    cached_zero = exact.run(None)
    cached_zero.calls = 0
    assert torch.equal(run_sampling(cached_zero, cond), plain)
    assert cached_zero.calls == plain_model.calls == 12

    loose = node(model=plain_model, reuse_threshold=3.0, start_percent=0.0, end_percent=1.0)
    cached = loose.run(None)
    cached.calls = 0
    result = run_sampling(cached, cond)
    assert 2 <= cached.calls < 12  # the first two calls always run, then reuse
    assert torch.isfinite(result).all()
    assert not torch.equal(result, plain)  # reused outputs are an approximation


def test_nodes_clone_the_model_and_bad_input_names_the_node(toy_model):
    model = CountingToy(toy_model)
    patched = EasyCache(model=model, reuse_threshold=0.3).run(None)
    assert patched is not model and not hasattr(model, "step_cache")
    assert patched.step_cache == StepCache(EASY_CACHE, 0.3, 0.15, 0.95, False)
    with pytest.raises(LoomError, match=r"LazyCache: start_percent 0\.9 is after end_percent 0\.5"):
        LazyCache(model=model, start_percent=0.9, end_percent=0.5).run(None)
    with pytest.raises(LoomError, match="EasyCache: input model"):
        EasyCache(model=object()).run(None)


def test_object_info_is_comfyuis(samplers_registry):
    from loom.nodes.object_info import object_info

    info = object_info(samplers_registry)
    for name in ("EasyCache", "LazyCache"):
        entry = info[name]
        assert entry["input"]["required"] == {
            "model": ["MODEL", {}],
            "reuse_threshold": ["FLOAT", {"default": 0.2, "min": 0.0, "max": 3.0, "step": 0.01}],
            "start_percent": ["FLOAT", {"default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01}],
            "end_percent": ["FLOAT", {"default": 0.95, "min": 0.0, "max": 1.0, "step": 0.01}],
            "verbose": ["BOOLEAN", {"default": False}],
        }
        assert (entry["category"], entry["output"]) == ("advanced/debug/model", ["MODEL"])
        assert entry["python_module"] == "comfy_extras.nodes_easycache"
        assert entry["display_name"] == name and entry["experimental"]


def test_easy_cache_reuses_each_entrys_network_space_change_by_hand():
    from loom_samplers.step_cache import EasyCacheRun

    sampling = DiscreteEps()
    settings = StepCache(EASY_CACHE, 0.5, 0.0, 1.0, subsample=1)
    run = EasyCacheRun(settings, 1e9, 0.0, ChangeTracker(settings))
    g = torch.Generator().manual_seed(4)
    weights = torch.randn(2, 1, 2, 1, 1, generator=g)

    class Scripted:
        model_sampling = sampling
        calls = 0

        def apply_model(self, x, sigma, cond):
            Scripted.calls += 1
            return torch.tanh(x * weights.reshape(-1, *x.shape[1:2], 1, 1)[: x.shape[0]])

    model = Scripted()
    keys = [(1, 0), (0, 0)]  # negative first, as the guider batches
    sigma = torch.tensor([2.0, 2.0])
    x1 = torch.randn(2, 2, 4, 4, generator=g)
    x2 = x1 * 0.9
    x3 = x2 + 1e-3
    outs = []
    for x in (x1, x2):
        run.new_evaluation()
        outs.append(run(model, x, sigma, {}, keys))
    assert Scripted.calls == 2 and run.first_key == (1, 0)
    run.new_evaluation()
    reused = run(model, x3, sigma, {}, keys)
    assert Scripted.calls == 2 and run.skip_this_step and run.tracker.skipped == 1
    xc2, xc3 = sampling.calculate_input(sigma, x2), sampling.calculate_input(sigma, x3)
    out2 = network_output(sampling, sigma, outs[1], x2)
    expected = sampling.calculate_denoised(sigma, xc3 + (out2 - xc2), x3)
    assert torch.allclose(reused, expected, atol=1e-5)
    # the rate came from the first entry's rows: |out2 - out1| / |xc2 - xc1| over row 0
    out1 = network_output(sampling, sigma, outs[0], x1)
    xc1 = sampling.calculate_input(sigma, x1)
    rate = mean_abs(out2[:1] - out1[:1]) / mean_abs(xc2[:1] - xc1[:1])
    assert torch.isclose(run.tracker.rate, rate, rtol=1e-4)


def test_a_new_latent_shape_starts_the_cache_over():
    settings = StepCache(LAZY_CACHE, 3.0, 0.0, 1.0)
    run = LazyCacheRun(settings, 1e9, 0.0, ChangeTracker(settings))
    sigma = torch.tensor([1.0])
    calls = []

    def model(x):
        return lambda: (calls.append(x.shape), x * 0.5)[1]

    for scale in (1.0, 0.9, 0.8):
        run.predict(torch.ones(1, 4, 8, 8) * scale, sigma, model(torch.ones(1, 4, 8, 8)))
    assert len(calls) == 2  # the third call reused the cached change
    bigger = torch.ones(1, 4, 16, 16)
    out = run.predict(bigger, sigma, model(bigger))  # no stale change of another shape
    assert len(calls) == 3 and out.shape == bigger.shape
