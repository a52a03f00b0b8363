"""loom_samplers.brownian.BrownianTree gives bit for bit what torchsde.BrownianTree gives.

ComfyUI's SDE samplers take their noise from ``torchsde.BrownianTree(t0, w0, t1,
entropy=seed)``; the images stay identical only if every query returns the same bits. These
tests compare the two trees query by query (the query sequences of dpmpp_sde, dpmpp_2m_sde and
dpmpp_3m_sde over karras / normal / flow schedules, with and without a final 0, random orders,
point queries, clamping) and whole sampler runs, including the ``*_gpu`` variants (tree on the
latent's device, sigmas not converted to float32).
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from loom_samplers.brownian import BrownianTree
from loom_samplers.noise import BrownianTreeNoise, SeededNoise
from loom_samplers.samplers import SAMPLERS
from loom_samplers.schedulers import karras_sigmas, normal, simple

from loom.model_sampling import DiscreteEps, FlowMatching

torchsde = pytest.importorskip("torchsde")

SEEDS = (0, 1, 42, 2**32 + 5, 2**63 - 1, 2**64 - 1)
SDE_NAMES = ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde")


@pytest.fixture(autouse=True)
def _quiet_torchsde():
    # torchsde warns on every query that ends past its rounded t1 (ComfyUI's do too)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _schedules() -> dict[str, torch.Tensor]:
    karras = karras_sigmas(12, 0.0291675, 14.614642)
    return {
        "karras": karras,
        "karras_no_zero": karras[:-1],
        "karras_40": karras_sigmas(40, 0.0291675, 14.614642),
        "normal": normal(DiscreteEps(), 10),
        "normal_no_zero": normal(DiscreteEps(), 10)[:-1],
        "flow_simple": simple(FlowMatching(shift=3.0), 10),
    }


def _queries(sigmas: torch.Tensor, pattern: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sigma, sigma_next) pairs a sampler asks its noise sampler for, in order."""
    pairs = []
    for i in range(len(sigmas) - 1):
        if sigmas[i + 1] == 0:
            continue
        if pattern == "dpmpp_sde":  # the r = 1/2 midpoint, then the step
            lam_s, lam_t = -sigmas[i].log(), -sigmas[i + 1].log()
            pairs.append((sigmas[i], (-(lam_s + 0.5 * (lam_t - lam_s))).exp()))
        pairs.append((sigmas[i], sigmas[i + 1]))
    return pairs


def _trees(x, sigmas, seed, **options):
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    reference = torchsde.BrownianTree(sigma_min, x, sigma_max, entropy=seed)
    ours = BrownianTree(sigma_min, x, sigma_max, entropy=seed, **options)
    return reference, ours


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("schedule", list(_schedules()))
@pytest.mark.parametrize("pattern", ["dpmpp_sde", "dpmpp_2m_sde"])
@pytest.mark.parametrize("seed", SEEDS[:4])
def test_brownian_matches_torchsde_on_sampler_queries(schedule, pattern, seed):
    sigmas = _schedules()[schedule]
    x = torch.zeros(1, 4, 8, 8)
    reference, ours = _trees(x, sigmas, seed)
    for sigma, sigma_next in _queries(sigmas, pattern):
        a, b = (sigma_next, sigma) if sigma_next < sigma else (sigma, sigma_next)
        a, b = a.float(), b.float()
        assert _same(ours(a, b), reference(a, b)), (schedule, pattern, seed, float(a), float(b))


@pytest.mark.parametrize("shape", [(1, 4, 64, 64), (2, 4, 16, 16), (4, 3, 5), (7,), ()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_brownian_matches_torchsde_for_shapes_and_dtypes(shape, dtype):
    if shape == (1, 4, 64, 64) and dtype not in (torch.float32, torch.float16):
        pytest.skip("the large shape in two dtypes is enough")
    sigmas = karras_sigmas(10, 0.0291675, 14.614642)
    x = torch.zeros(shape, dtype=dtype)
    reference, ours = _trees(x, sigmas, 1234)
    for sigma, sigma_next in _queries(sigmas, "dpmpp_2m_sde"):
        a, b = sigma_next.float(), sigma.float()
        assert _same(ours(a, b), reference(a, b))


@pytest.mark.parametrize("cache_size", [None, 1, 3, 20])
def test_brownian_random_queries_and_small_caches(cache_size):
    """Any order, overlapping and repeated intervals, evictions: still the same bits."""
    rng = random.Random(cache_size or 0)
    sigmas = karras_sigmas(15, 0.0291675, 14.614642)
    points = [float(s) for s in sigmas[:-1]] + [
        rng.uniform(0.0291675, 14.614642) for _ in range(15)
    ]
    x = torch.zeros(2, 4, 8, 8)
    reference, ours = _trees(x, sigmas, 77, cache_size=cache_size)
    for _ in range(60):
        a, b = sorted(rng.sample(points, 2))
        assert _same(ours(a, b), reference(a, b)), (a, b)


@pytest.mark.parametrize("seed", SEEDS)
def test_brownian_point_queries_clamping_and_empty_intervals(seed):
    x = torch.randn(3, 5)  # w0 is added to point queries
    sigma_min, sigma_max = torch.tensor(0.03), torch.tensor(14.6)
    reference = torchsde.BrownianTree(sigma_min, x, sigma_max, entropy=seed)
    ours = BrownianTree(sigma_min, x, sigma_max, entropy=seed)
    for t in (5.0, 0.03, 14.6, 0.5, 20.0, 0.0):
        assert _same(ours(t), reference(t))
    for a, b in ((0.0, 3.0), (3.0, 99.0), (-1.0, 99.0), (2.0, 2.0), (0.0300001, 0.0300004)):
        assert _same(ours(a, b), reference(a, b)), (a, b)
    with pytest.raises(RuntimeError):
        ours(3.0, 2.0)


def test_brownian_terminal_value_and_default_t1():
    x = torch.zeros(2, 3)
    w1 = torch.randn(2, 3)
    reference = torchsde.BrownianTree(0.0, x, 2.0, w1=w1, entropy=5)
    ours = BrownianTree(0.0, x, 2.0, w1=w1, entropy=5)
    for a, b in ((0.0, 2.0), (0.5, 1.25), (1.0, 2.0)):
        assert _same(ours(a, b), reference(a, b))
    reference, ours = torchsde.BrownianTree(0.0, x, entropy=9), BrownianTree(0.0, x, entropy=9)
    assert _same(ours(0.25, 0.75), reference(0.25, 0.75))
    with pytest.raises(ValueError):
        BrownianTree(2.0, x, 1.0, entropy=1)


def test_brownian_draws_far_fewer_normals_than_torchsde():
    sigmas = karras_sigmas(20, 0.0291675, 14.614642)
    x = torch.zeros(1, 4, 8, 8)
    _, ours = _trees(x, sigmas, 0)
    for sigma, sigma_next in _queries(sigmas, "dpmpp_2m_sde"):
        ours(sigma_next.float(), sigma.float())
    # torchsde draws 1024 (+2 at construction) for this sequence: each child re-draws its
    # parent's noise and the 45-entry cache cannot hold the 24-level paths
    assert ours.draws <= 330


def test_brownian_noise_is_k_diffusions_bit_for_bit(kdiff):
    """BrownianTreeNoise against k-diffusion's BrownianTreeNoiseSampler over torchsde, both ways."""
    sigmas = karras_sigmas(12, 0.0291675, 14.614642)
    x = torch.zeros(1, 4, 16, 16)
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    ours = BrownianTreeNoise(x, sigma_min, sigma_max, seed=11)
    theirs = kdiff.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=11)
    for sigma, sigma_next in _queries(sigmas, "dpmpp_sde"):
        assert torch.equal(ours(sigma, sigma_next), theirs(sigma, sigma_next))
    assert torch.equal(ours(sigmas[3], sigmas[1]), theirs(sigmas[3], sigmas[1]))


def _run(name, x, sigmas, noise):
    def denoiser(x, sigma, **_):
        return x * 0.5 + 0.1

    return SAMPLERS[name](denoiser, x.clone(), sigmas, noise=noise)


@pytest.mark.parametrize("name", [*SDE_NAMES, *(f"{n}_gpu" for n in SDE_NAMES)])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("schedule", ["karras", "normal_no_zero"])
def test_brownian_sde_samplers_are_bit_identical(name, batch, schedule):
    sigmas = _schedules()[schedule]
    x = torch.randn(batch, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    for seed in (0, 2**64 - 1):
        ours = _run(name, x, sigmas, SeededNoise(seed))
        reference = _run(name, x, sigmas, SeededNoise(seed, brownian_backend="torchsde"))
        assert torch.equal(ours, reference), (name, seed)


def test_brownian_gpu_variant_semantics_with_float64_sigmas():
    """``cpu=False``: the sigmas reach the tree in their own dtype (here float64)."""
    sigmas = karras_sigmas(8, 0.0291675, 14.614642).double()
    x = torch.randn(1, 4, 8, 8) * 14.6
    for cpu in (True, False):
        ours = BrownianTreeNoise(x, sigmas[-2], sigmas[0], seed=3, cpu=cpu)
        reference = BrownianTreeNoise(x, sigmas[-2], sigmas[0], seed=3, cpu=cpu, backend="torchsde")
        for i in range(len(sigmas) - 2):
            assert torch.equal(ours(sigmas[i], sigmas[i + 1]), reference(sigmas[i], sigmas[i + 1]))


def test_brownian_one_tree_per_seed_in_a_list():
    sigmas = karras_sigmas(8, 0.0291675, 14.614642)
    x = torch.zeros(3, 4, 8, 8)
    ours = BrownianTreeNoise(x, sigmas[-2], sigmas[0], seed=[5, 6, 7])
    reference = BrownianTreeNoise(x, sigmas[-2], sigmas[0], seed=[5, 6, 7], backend="torchsde")
    for i in range(len(sigmas) - 2):
        assert torch.equal(ours(sigmas[i], sigmas[i + 1]), reference(sigmas[i], sigmas[i + 1]))
    with pytest.raises(ValueError):
        BrownianTreeNoise(x, sigmas[-2], sigmas[0], backend="nope")


def test_brownian_answers_are_the_callers_to_change():
    """A query's result is a new tensor: changing it in place changes no later answer."""
    sigmas = karras_sigmas(8, 0.0291675, 14.614642)
    x = torch.zeros(1, 4, 8, 8)
    reference, ours = _trees(x, sigmas, 21)
    node = ours(sigmas[1].float(), sigmas[0].float())  # one tree node: [mid, end]
    node.mul_(0.0).add_(99.0)
    for a, b in ((sigmas[1], sigmas[0]), (sigmas[2], sigmas[0]), (sigmas[2], sigmas[1])):
        assert _same(ours(a.float(), b.float()), reference(a.float(), b.float()))
