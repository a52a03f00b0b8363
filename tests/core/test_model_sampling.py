"""Shared model-sampling math: DDPM sigmas, eps / v prediction, flow matching with shift."""

from __future__ import annotations

import math

import pytest
import torch

from loom.model_sampling import DiscreteEps, DiscreteV, FlowMatching, flux_shift, time_shift


def test_sd15_schedule_matches_the_known_sigma_range():
    sampling = DiscreteEps()
    assert sampling.sigmas.shape == (1000,)
    assert float(sampling.sigma_min) == pytest.approx(0.0291675, rel=1e-4)
    assert float(sampling.sigma_max) == pytest.approx(14.614642, rel=1e-5)
    assert torch.all(sampling.sigmas[1:] > sampling.sigmas[:-1])


def test_timestep_and_sigma_round_trip():
    sampling = DiscreteEps()
    t = torch.tensor([0.0, 10.0, 500.0, 999.0])
    assert torch.equal(sampling.timestep(sampling.sigma(t)), t.long())
    half = sampling.sigma(torch.tensor(10.5))
    assert (
        float(sampling.sigma(torch.tensor(10.0)))
        < float(half)
        < float(sampling.sigma(torch.tensor(11.0)))
    )
    assert sampling.percent_to_sigma(0.0) > 1e6 and sampling.percent_to_sigma(1.0) == 0.0
    assert sampling.percent_to_sigma(0.5) == pytest.approx(
        float(sampling.sigma(torch.tensor(499.5))), rel=1e-5
    )


def test_eps_and_v_prediction_recover_x0_from_an_exact_prediction():
    torch.manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8)
    noise = torch.randn_like(x0)
    sigma = torch.tensor([0.5, 3.0])
    noisy = x0 + noise * sigma.view(-1, 1, 1, 1)
    eps = DiscreteEps()
    assert torch.allclose(eps.calculate_denoised(sigma, noise, noisy), x0, atol=1e-5)
    # v = alpha * eps - sigma_vp * x0, in the network's scaled input space
    v_model = DiscreteV()
    s = sigma.view(-1, 1, 1, 1)
    alpha, sigma_vp = 1 / torch.sqrt(s**2 + 1), s / torch.sqrt(s**2 + 1)
    v = alpha * noise - sigma_vp * x0
    assert torch.allclose(v_model.calculate_denoised(sigma, v, noisy), x0, atol=1e-5)
    assert torch.allclose(eps.calculate_input(sigma, noisy), noisy * alpha)


def test_noise_scaling():
    eps = DiscreteEps()
    latent, noise = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 2.0)
    sigma = torch.tensor([3.0])
    assert torch.allclose(eps.noise_scaling(sigma, noise, latent), latent + 6.0)
    assert torch.allclose(
        eps.noise_scaling(sigma, noise, latent, max_denoise=True), latent + 2 * math.sqrt(10)
    )


def test_flow_matching_with_shift():
    flow = FlowMatching(shift=3.0)
    assert float(flow.sigmas[-1]) == pytest.approx(1.0)
    assert float(time_shift(3.0, 0.5)) == pytest.approx(0.75)
    x0, noise = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 4, 4)
    sigma = torch.tensor([0.75])
    noisy = flow.noise_scaling(sigma, noise, x0)
    assert torch.allclose(noisy, 0.75 * noise + 0.25 * x0)
    assert torch.allclose(flow.calculate_denoised(sigma, noise - x0, noisy), x0, atol=1e-5)
    assert float(flow.timestep(sigma)) == pytest.approx(750.0)
    # As ComfyUI: sigma(t) maps the unshifted time t to the shifted sigma (the table's function).
    assert float(flow.sigma(torch.tensor(500.0))) == pytest.approx(0.75)
    assert flow.percent_to_sigma(0.5) == pytest.approx(0.75)
    assert flux_shift(256) == pytest.approx(math.exp(0.5)) and flux_shift(4096) == pytest.approx(
        math.exp(1.15)
    )


def test_discrete_log_sigmas_are_the_float64_logs_cast_to_float32():
    # ComfyUI: log_sigmas = log(float64 sigmas).float(), not log(float32 sigmas).
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    sigmas64 = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    sampling = DiscreteEps()
    assert sampling.sigmas.dtype == torch.float32 and sampling.log_sigmas.dtype == torch.float32
    assert torch.equal(sampling.sigmas, sigmas64.float())
    assert torch.equal(sampling.log_sigmas, sigmas64.log().float())
    assert not torch.equal(sampling.log_sigmas, sampling.sigmas.log())
