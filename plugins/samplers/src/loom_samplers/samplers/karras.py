"""Euler, Heun and DPM-2 steps on the Karras ODE, their ancestral forms, and LMS.

Karras, Aittala, Aila, Laine (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models", arXiv:2206.00364 — Algorithm 2 (Euler/Heun steps with churn).
DPM-2 follows Lu et al. (2022), "DPM-Solver", arXiv:2206.00927, as adapted in k-diffusion.
Rectified-flow ancestral forms follow ComfyUI (``sample_euler_ancestral_RF``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom_samplers.samplers.base import (
    ancestral_step,
    is_flow,
    is_zero,
    noise_scale,
    ones_batch,
    report,
    to_d,
)

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSource, StepCallback


def _churn(
    noise: NoiseSource,
    x: Tensor,
    sigmas: Tensor,
    i: int,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
) -> tuple[Tensor, Any]:
    """Karras' stochastic churn: raise σ to σ̂ = σ(1+γ) by adding fresh noise."""
    if s_churn <= 0:
        return x, sigmas[i]
    gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + noise.randn_like(x) * s_noise * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


def euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Euler steps on the probability-flow ODE: Algorithm 2 of Karras et al. (2022)."""
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(noise, x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoiser(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        report(on_step, i, x, sigmas[i], denoised, sigma_hat)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


def ddim(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
) -> Tensor:
    """DDIM (Song et al. 2020, arXiv:2010.02502) is the Euler step in σ; ComfyUI runs it as
    euler with fresh inpainting noise (``SamplerInfo.inpaint_random_noise``)."""
    return euler(denoiser, x, sigmas, noise=noise, on_step=on_step)


def euler_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Ancestral sampling with Euler steps (k-diffusion; Ho et al. 2020's ancestral noise)."""
    if is_flow(denoiser):
        return _euler_ancestral_rf(
            denoiser, x, sigmas, noise=noise, on_step=on_step, eta=eta, s_noise=s_noise
        )
    draw = noise.sampler(x)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigma_down):
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            x = (
                x
                + d * (sigma_down - sigmas[i])
                + draw(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
            )
    return x


def _rf_ancestral(sigma: Tensor, sigma_next: Tensor, eta: float) -> tuple[Any, Any, Any]:
    """Rectified-flow ancestral step: ``(sigma_down, alpha ratio, renoise coefficient)``."""
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
    renoise = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2) ** 0.5
    return sigma_down, alpha_next / alpha_down, renoise


def _euler_ancestral_rf(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None,
    eta: float,
    s_noise: float,
) -> Tensor:
    draw = noise.sampler(x)
    s_noise = s_noise * noise_scale(denoiser)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigmas[i + 1]):
            x = denoised
            continue
        sigma_down, alpha_ratio, renoise = _rf_ancestral(sigmas[i], sigmas[i + 1], eta)
        ratio = sigma_down / sigmas[i]
        x = ratio * x + (1 - ratio) * denoised
        if eta > 0:
            x = alpha_ratio * x + draw(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's second-order method: Algorithm 2 of Karras et al. (2022)."""
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(noise, x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoiser(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        report(on_step, i, x, sigmas[i], denoised, sigma_hat)
        dt = sigmas[i + 1] - sigma_hat
        if is_zero(sigmas[i + 1]):
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], denoiser(x_2, sigmas[i + 1] * s_in))
            x = x + (d + d_2) / 2 * dt
    return x


def heunpp2(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun++: a three-point weighted Heun step (Carzit/sd-webui-samplers-scheduler, MIT)."""
    s_in = ones_batch(x)
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(noise, x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoiser(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        report(on_step, i, x, sigmas[i], denoised, sigma_hat)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], denoiser(x_2, sigmas[i + 1] * s_in))
        if sigmas[i + 2] == s_end:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], denoiser(x_3, sigmas[i + 2] * s_in))
            w = 3 * sigmas[0]
            w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def dpm_2(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver-2 steps (midpoint in log σ) with Karras' churn (k-diffusion)."""
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(noise, x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = denoiser(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        report(on_step, i, x, sigmas[i], denoised, sigma_hat)
        if is_zero(sigmas[i + 1]):
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, denoiser(x_2, sigma_mid * s_in))
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


def dpm_2_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Ancestral sampling with DPM-Solver-2 steps (k-diffusion)."""
    flow = is_flow(denoiser)
    draw = noise.sampler(x)
    if flow:
        s_noise = s_noise * noise_scale(denoiser)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        if flow:
            sigma_down, alpha_ratio, sigma_up = _rf_ancestral(sigmas[i], sigmas[i + 1], eta)
        else:
            (sigma_down, sigma_up), alpha_ratio = ancestral_step(sigmas[i], sigmas[i + 1], eta), 1.0
        report(on_step, i, x, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if is_zero(sigma_down):
            x = x + d * (sigma_down - sigmas[i])
            continue
        sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
        x_2 = x + d * (sigma_mid - sigmas[i])
        d_2 = to_d(x_2, sigma_mid, denoiser(x_2, sigma_mid * s_in))
        x = x + d_2 * (sigma_down - sigmas[i])
        x = alpha_ratio * x + draw(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


#: 4-point Gauss–Legendre rule: exact for polynomials of degree <= 7 (LMS basis: < order).
_GAUSS_NODES = (-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526)
_GAUSS_WEIGHTS = (0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538)


def lms_coefficient(order: int, t: list[float], i: int, j: int) -> float:
    """∫ from t[i] to t[i+1] of the Lagrange basis polynomial ``j`` through t[i], …, t[i-order+1].

    Exact Gauss–Legendre quadrature (degree < order <= 8), where k-diffusion uses scipy's
    adaptive quadrature, which is exact for these polynomials to round-off.
    """
    if order > 8:
        return _lms_coefficient_poly(order, t, i, j)
    a, b = t[i], t[i + 1]
    half, mid = (b - a) / 2, (a + b) / 2
    total = 0.0
    for node, weight in zip(_GAUSS_NODES, _GAUSS_WEIGHTS, strict=True):
        tau = mid + half * node
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        total += weight * prod
    return total * half


def _lms_coefficient_poly(order: int, t: list[float], i: int, j: int) -> float:
    import numpy as np

    poly = np.poly1d([1.0])
    for k in range(order):
        if k != j:
            poly = poly * np.poly1d([1.0, -t[i - k]]) / (t[i - j] - t[i - k])
    integral = poly.integ()
    return float(integral(t[i + 1]) - integral(t[i]))


def lms(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    order: int = 4,
) -> Tensor:
    """Linear multistep (Adams–Bashforth in σ) over the last ``order`` derivatives."""
    s_in = ones_batch(x)
    sigmas_list = [float(s) for s in sigmas.detach().cpu().double()]
    ds: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigmas[i + 1]):
            x = denoised
        else:
            cur_order = min(i + 1, order)
            coeffs = [lms_coefficient(cur_order, sigmas_list, i, j) for j in range(cur_order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=False))
    return x
