"""Multistep and one-shot samplers: iPNDM, DEIS, RES multistep, gradient estimation, ER-SDE,
DDPM and LCM.

* iPNDM / iPNDM-v: Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential
  Integrator", arXiv:2204.13902, as in zju-pi/diff-sampler (Apache-2.0).
* DEIS: same paper, the "tab" coefficients (:mod:`.deis`).
* RES multistep: Zhang et al. (2023), "Improved Order Analysis and Design of Exponential
  Integrator for Diffusion Models Sampling", arXiv:2308.02157.
* Gradient estimation: Permenter & Yuan (2024), "Interpreting and Improving Diffusion Models
  from an Optimization Perspective", ICML (openreview o2ND9v0CeK).
* ER-SDE: Cui et al. (2023), "Elucidating the Solution Space of Extended Reverse-Time SDE for
  Diffusion Models", arXiv:2309.06169 (VP ER-SDE-Solver-3).
* DDPM: Ho, Jain, Abbeel (2020), arXiv:2006.11239 (ancestral posterior step).
* LCM: Luo et al. (2023), "Latent Consistency Models", arXiv:2310.04378.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom_samplers.samplers.base import (
    ancestral_step,
    half_log_snr,
    is_flow,
    is_zero,
    model_sampling_of,
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


def _push(buffer: list[Tensor], value: Tensor, max_order: int) -> None:
    buffer.append(value)
    if len(buffer) > max_order - 1:
        buffer.pop(0)


def ipndm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    max_order: int = 4,
) -> Tensor:
    """Improved PNDM: Adams–Bashforth with fixed coefficients (orders 1–4) in σ."""
    s_in = ones_batch(x)
    buffer: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur * s_in)
        report(on_step, i, x, t_cur, denoised)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        x_cur = x
        if is_zero(t_next):
            x = denoised
        elif order == 1:
            x = x_cur + (t_next - t_cur) * d_cur
        elif order == 2:
            x = x_cur + (t_next - t_cur) * (3 * d_cur - buffer[-1]) / 2
        elif order == 3:
            x = x_cur + (t_next - t_cur) * (23 * d_cur - 16 * buffer[-1] + 5 * buffer[-2]) / 12
        else:
            x = (
                x_cur
                + (t_next - t_cur)
                * (55 * d_cur - 59 * buffer[-1] + 37 * buffer[-2] - 9 * buffer[-3])
                / 24
            )
        _push(buffer, d_cur, max_order)
    return x


def _ipndm_v_coefficients(order: int, sigmas: Tensor, i: int) -> list[Any]:
    """Variable-step iPNDM coefficients for the current and previous derivatives."""
    h_n = sigmas[i + 1] - sigmas[i]
    h_n_1 = sigmas[i] - sigmas[i - 1]
    if order == 2:
        return [(2 + h_n / h_n_1) / 2, -(h_n / h_n_1) / 2]
    h_n_2 = sigmas[i - 1] - sigmas[i - 2]
    temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        return [
            (2 + h_n / h_n_1) / 2 + temp1,
            -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1,
            temp1 * h_n_1 / h_n_2,
        ]
    h_n_3 = sigmas[i - 2] - sigmas[i - 3]
    temp2 = (
        (
            (1 - h_n / (3 * (h_n + h_n_1))) / 2
            + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))
        )
        * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
        / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
    )
    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    return [
        (2 + h_n / h_n_1) / 2 + temp1 + temp2,
        -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + h_n_1 / h_n_2 + ratio) * temp2,
        temp1 * h_n_1 / h_n_2 + (h_n_1 / h_n_2 + ratio * (1 + h_n_2 / h_n_3)) * temp2,
        -temp2 * ratio * h_n_1 / h_n_2,
    ]


def ipndm_v(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    max_order: int = 4,
) -> Tensor:
    """iPNDM with variable-step coefficients (orders 1–4) in σ."""
    s_in = ones_batch(x)
    buffer: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur * s_in)
        report(on_step, i, x, t_cur, denoised)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if is_zero(t_next):
            x = denoised
        elif order == 1:
            x = x + (t_next - t_cur) * d_cur
        else:
            coeffs = _ipndm_v_coefficients(order, sigmas, i)
            total = coeffs[0] * d_cur
            for k, c in enumerate(coeffs[1:], start=1):
                total = total + c * buffer[-k]
            x = x + (t_next - t_cur) * total
        _push(buffer, d_cur, max_order)
    return x


def deis(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    max_order: int = 3,
    deis_mode: str = "tab",
) -> Tensor:
    """DEIS multistep (orders 1–4) with integrated Lagrange coefficients."""
    from loom_samplers.samplers.deis import deis_coefficients

    s_in = ones_batch(x)
    coeff_list = deis_coefficients(sigmas, max_order, deis_mode=deis_mode)
    buffer: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur * s_in)
        report(on_step, i, x, t_cur, denoised)
        d_cur = (x - denoised) / t_cur
        order = 1 if float(t_next) <= 0 else min(max_order, i + 1)
        if order == 1:
            x = x + (t_next - t_cur) * d_cur
        else:
            coeffs = coeff_list[i]
            total = x + coeffs[0] * d_cur
            for k, c in enumerate(coeffs[1:], start=1):
                total = total + c * buffer[-k]
            x = total
        _push(buffer, d_cur, max_order)
    return x


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


def ddpm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
) -> Tensor:
    """DDPM ancestral steps (Algorithm 2 of Ho et al. 2020) on the VP-scaled latent."""
    draw = noise.sampler(x)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma * s_in)
        report(on_step, i, x, sigma, denoised)
        eps = (x - denoised) / sigma
        x_vp = x / (1.0 + sigma**2.0).sqrt()
        alpha_cumprod = 1 / (sigma * sigma + 1)
        alpha_cumprod_prev = 1 / (sigma_prev * sigma_prev + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        mu = (1.0 / alpha).sqrt() * (x_vp - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        if sigma_prev > 0:
            mu = mu + (
                (1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)
            ).sqrt() * draw(sigma, sigma_prev)
        x = mu
        if not is_zero(sigma_prev):
            x = x * (1.0 + sigma_prev**2.0).sqrt()
    return x


def lcm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    s_noise: float = 1.0,
    s_noise_end: float | None = None,
    noise_clip_std: float = 0.0,
) -> Tensor:
    """Latent consistency sampling: jump to x0, then re-noise to the next sigma."""
    from loom.model_sampling import DiscreteEps

    draw = noise.sampler(x)
    sampling = model_sampling_of(denoiser) or DiscreteEps()
    s_in = ones_batch(x)
    n_steps = max(1, len(sigmas) - 1)
    s_start = float(s_noise)
    s_end = s_start if s_noise_end is None else float(s_noise_end)
    for i in range(n_steps):
        denoised = denoiser(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            fresh = draw(sigmas[i], sigmas[i + 1])
            if noise_clip_std > 0:
                clip = noise_clip_std * fresh.std()
                fresh = fresh.clamp(min=-clip, max=clip)
            t = (i / (n_steps - 1)) if n_steps > 1 else 0.0
            scale = s_start + (s_end - s_start) * t
            if scale != 1.0:
                fresh = fresh * scale
            x = sampling.noise_scaling(sigmas[i + 1], fresh, x)
    return x
