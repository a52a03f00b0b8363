"""Exponential-integrator and extrapolating multistep samplers: RES multistep, gradient
estimation and ER-SDE. Each step reuses the previous step's x0 estimate or derivative.

* RES multistep: Zhang et al. (2023), "Improved Order Analysis and Design of Exponential
  Integrator for Diffusion Models Sampling", arXiv:2308.02157.
* Gradient estimation: Permenter & Yuan (2024), "Interpreting and Improving Diffusion Models
  from an Optimization Perspective", ICML (openreview o2ND9v0CeK).
* ER-SDE: Cui et al. (2023), "Elucidating the Solution Space of Extended Reverse-Time SDE for
  Diffusion Models", arXiv:2309.06169 (VP ER-SDE-Solver-3).

iPNDM and DEIS are in :mod:`.adams_bashforth`, DDPM and LCM in :mod:`.one_shot`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom_samplers.samplers.base import (
    ancestral_step,
    half_log_snr,
    is_flow,
    is_zero,
    noise_scale,
    offset_first_sigma,
    ones_batch,
    report,
    require_uncond,
    to_d,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import Tensor

    from loom.types import Denoiser, NoiseSource, StepCallback


def _torch() -> Any:
    import torch

    return torch


def res_multistep(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    s_noise: float = 1.0,
    eta: float = 0.0,
    cfg_pp: bool = False,
) -> Tensor:
    """RES second-order multistep exponential integrator (``eta > 0``: ancestral form)."""
    torch = _torch()
    draw = noise.sampler(x)
    s_noise = s_noise * noise_scale(denoiser)
    guided = require_uncond(denoiser) if cfg_pp else None
    s_in = ones_batch(x)
    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        uncond = guided.uncond_denoised if guided is not None else None
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigma_down) or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old = sigmas[i].log().neg(), old_sigma_down.log().neg()
            t_next, t_prev = sigma_down.log().neg(), sigmas[i - 1].log().neg()
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
                x = (-h).exp() * x + h * (b1 * uncond + b2 * old_denoised)
            else:
                x = (-h).exp() * x + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + draw(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = uncond if cfg_pp else denoised
        old_sigma_down = sigma_down
    return x


def res_multistep_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """RES multistep with ancestral noise."""
    return res_multistep(
        denoiser, x, sigmas, noise=noise, on_step=on_step, s_noise=s_noise, eta=eta
    )


def gradient_estimation(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    ge_gamma: float = 2.0,
    cfg_pp: bool = False,
) -> Tensor:
    """Euler with a gradient-estimation correction from the previous derivative."""
    guided = require_uncond(denoiser) if cfg_pp else None
    s_in = ones_batch(x)
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        target = guided.uncond_denoised if guided is not None else denoised
        d = to_d(x, sigmas[i], target)
        report(on_step, i, x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if is_zero(sigmas[i + 1]):
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def _er_sde_noise_scaler(x: Tensor) -> Tensor:
    return x * ((x**0.3).exp() + 10.0)


def er_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    s_noise: float = 1.0,
    noise_scaler: Callable[[Tensor], Tensor] | None = None,
    max_stage: int = 3,
) -> Tensor:
    """Extended reverse-time SDE solver (VP ER-SDE-Solver-3), up to three stages."""
    torch = _torch()
    draw = noise.sampler(x)
    s_noise = s_noise * noise_scale(denoiser)
    scaler = noise_scaler or _er_sde_noise_scaler
    points = 200.0
    point_index = torch.arange(0, points, dtype=torch.float32, device=x.device)
    sigmas = offset_first_sigma(sigmas, denoiser)
    lambdas = half_log_snr(sigmas, is_flow(denoiser)).neg().exp()  # σ_t / α_t
    s_in = ones_batch(x)
    old_denoised = old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if is_zero(sigmas[i + 1]):
            x = denoised
        else:
            lam_s, lam_t = lambdas[i], lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / lam_s, sigmas[i + 1] / lam_t
            r = scaler(lam_t) / scaler(lam_s)
            x = (alpha_t / alpha_s) * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                dt = lam_t - lam_s
                step = -dt / points
                pos = lam_t + point_index * step
                scaled = scaler(pos)
                s = torch.sum(1 / scaled) * step
                denoised_d = (denoised - old_denoised) / (lam_s - lambdas[i - 1])
                x = x + alpha_t * (dt + s * scaler(lam_t)) * denoised_d
                if stage >= 3:
                    s_u = torch.sum((pos - lam_s) / scaled) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((lam_s - lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt**2) / 2 + s_u * scaler(lam_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                spread = (lam_t**2 - lam_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * draw(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old_denoised = denoised
    return x
