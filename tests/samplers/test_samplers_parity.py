"""Parity with k-diffusion (PyPI): same sigmas, noise and denoiser give the same result.

The denoiser is the exact one for Gaussian data, so the runs also land near the known answer
(checked in test_samplers_convergence.py).
"""

from __future__ import annotations

import pytest
import torch
from loom_samplers.noise import BrownianTreeNoise, FunctionNoise
from loom_samplers.samplers import SAMPLERS

SHAPE = (2, 4, 8, 8)
TOL = 1e-5

#: every sampler the k-diffusion package has, and the options both are called with.
KDIFF_SAMPLERS = {
    "euler": {},
    "euler_ancestral": {},
    "heun": {},
    "dpm_2": {},
    "dpm_2_ancestral": {},
    "lms": {},
    "dpm_fast": {},
    "dpm_adaptive": {},
    "dpmpp_2s_ancestral": {},
    "dpmpp_sde": {},
    "dpmpp_2m": {},
    "dpmpp_2m_sde": {},
    "dpmpp_2m_sde_heun": {"solver_type": "heun"},
    "dpmpp_3m_sde": {},
}
SDE = {"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"}


def _setup(kdiff, gaussian, steps: int = 12, final_zero: bool = True):
    torch.manual_seed(0)
    mu = torch.randn(SHAPE) * 0.5
    sigmas = kdiff.get_sigmas_karras(steps, 0.0291675, 14.614642)
    if not final_zero:
        sigmas = sigmas[:-1]
    x = torch.randn(SHAPE) * sigmas[0]
    return gaussian(mu, 0.8), x, sigmas


def _reference(kdiff, name: str, denoiser, x, sigmas, noise_fn, options):
    kname = "dpmpp_2m_sde" if name == "dpmpp_2m_sde_heun" else name
    fn = getattr(kdiff, f"sample_{kname}")
    extra = dict(options)
    if name in {
        "euler_ancestral",
        "dpm_2_ancestral",
        "dpmpp_2s_ancestral",
        "dpmpp_sde",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_heun",
        "dpmpp_3m_sde",
    }:
        extra["noise_sampler"] = noise_fn
    if name == "dpm_fast":
        return fn(denoiser, x, sigmas[-2], sigmas[0], len(sigmas) - 1, disable=True)
    if name == "dpm_adaptive":
        return fn(denoiser, x, sigmas[-2], sigmas[0], disable=True)
    return fn(denoiser, x, sigmas, disable=True, **extra)


@pytest.mark.parametrize("final_zero", [True, False], ids=["to_zero", "to_sigma_min"])
@pytest.mark.parametrize("name", sorted(KDIFF_SAMPLERS))
def test_samplers_match_k_diffusion(kdiff, gaussian, noise_for, name, final_zero):
    if name == "lms" and final_zero:
        pytest.skip("ComfyUI's lms returns x0 on the last step; k-diffusion extrapolates (below)")
    if name in {"dpm_fast", "dpm_adaptive"} and not final_zero:
        pytest.skip("dpm_fast/adaptive only use the schedule's ends")
    denoiser, x, sigmas = _setup(kdiff, gaussian, final_zero=final_zero)
    options = KDIFF_SAMPLERS[name]
    reference_noise = loom_noise = noise_for(SHAPE)
    expected = _reference(kdiff, name, denoiser, x.clone(), sigmas, reference_noise, options)
    got = SAMPLERS[name](denoiser, x.clone(), sigmas, noise=FunctionNoise(loom_noise), **options)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=TOL, rtol=0), (name, (got - expected).abs().max())


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde"])
def test_samplers_match_k_diffusion_with_eta(kdiff, gaussian, noise_for, name):
    denoiser, x, sigmas = _setup(kdiff, gaussian, steps=8)

    def make():
        return noise_for(SHAPE)

    options = {"eta": 0.5, "s_noise": 0.9}
    expected = getattr(kdiff, f"sample_{name}")(
        denoiser, x.clone(), sigmas, disable=True, noise_sampler=make(), **options
    )
    got = SAMPLERS[name](denoiser, x.clone(), sigmas, noise=FunctionNoise(make()), **options)
    assert torch.allclose(got, expected, atol=TOL, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"])
def test_samplers_match_k_diffusion_with_brownian_noise(kdiff, gaussian, name):
    """Same Brownian tree (seeded) in both: these samplers query it at the same sigmas."""
    denoiser, x, sigmas = _setup(kdiff, gaussian)
    options = KDIFF_SAMPLERS[name]

    def tree():
        return kdiff.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=7)

    expected = _reference(kdiff, name, denoiser, x.clone(), sigmas, tree(), options)
    got = SAMPLERS[name](denoiser, x.clone(), sigmas, noise=FunctionNoise(tree()), **options)
    assert torch.allclose(got, expected, atol=TOL, rtol=0), (got - expected).abs().max()


def test_samplers_lms_orders_match_k_diffusion(kdiff, gaussian):
    denoiser, x, sigmas = _setup(kdiff, gaussian, steps=10, final_zero=False)
    for order in (1, 2, 3, 5):
        expected = kdiff.sample_lms(denoiser, x.clone(), sigmas, disable=True, order=order)
        got = SAMPLERS["lms"](denoiser, x.clone(), sigmas, noise=FunctionNoise(None), order=order)
        assert torch.allclose(got, expected, atol=TOL, rtol=0), order


def test_samplers_lms_last_step_is_the_denoised_estimate(kdiff, gaussian):
    """ComfyUI's lms (unlike k-diffusion's) ends with x = D(x; σ_last) when the schedule hits 0."""
    denoiser, x, sigmas = _setup(kdiff, gaussian, steps=10)
    before_last = SAMPLERS["lms"](denoiser, x.clone(), sigmas[:-1], noise=FunctionNoise(None))
    got = SAMPLERS["lms"](denoiser, x.clone(), sigmas, noise=FunctionNoise(None))
    expected = denoiser(before_last, sigmas[-2].expand(SHAPE[0]))
    assert torch.allclose(got, expected, atol=TOL, rtol=0)


def test_samplers_brownian_tree_matches_k_diffusion(kdiff):
    x = torch.zeros(SHAPE)
    sigma_min, sigma_max = torch.tensor(0.03), torch.tensor(14.6)
    ours = BrownianTreeNoise(x, sigma_min, sigma_max, seed=1234)
    theirs = kdiff.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=1234)
    for a, b in [(14.6, 9.0), (9.0, 2.5), (2.5, 0.03), (5.0, 4.0)]:
        sa, sb = torch.tensor(a), torch.tensor(b)
        assert torch.allclose(ours(sa, sb), theirs(sa, sb), atol=1e-6)
