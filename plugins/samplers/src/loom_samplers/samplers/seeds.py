"""SEEDS: stochastic explicit exponential derivative-free solvers, and exponential Heun.

Gonzalez, Fernandez, Szpruch, Zhang et al. (2023), "SEEDS: Exponential SDE Solvers for Fast
High-Quality Sampling from Diffusion Models", NeurIPS 2023, arXiv:2305.14267; data
prediction, in half-log-SNR time ``λ = log(α/σ)``. With ``eta`` the SDE's stochastic strength,
a sub-step from ``λ_s`` to ``λ_u = λ_s + c·h`` is the exponential integrator

    x_u = (σ_u/σ_s)·e^{-c·h·η}·x - α_u·(h·φ-weighted x0 estimates) + σ_u·√(1 - e^{-2c·h·η})·ξ

and the noise of the sub-steps is chained so that each end point has the SDE's variance.
``exp_heun_2_x0`` is the deterministic full-step (``r = 1``) case of SEEDS-2 with the φ₂
corrector (Heun's method on the data prediction), ``exp_heun_2_x0_sde`` its stochastic form.
Flow models use their own ``λ`` (``log((1-σ)/σ)``), as ComfyUI does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loom_samplers.samplers.base import (
    half_log_snr,
    is_flow,
    is_zero,
    noise_scale,
    offset_first_sigma,
    ones_batch,
    report,
    sigma_from_half_log_snr,
)

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSampler, NoiseSource, StepCallback

SOLVER_TYPES = ("phi_1", "phi_2")


def h_phi_1(z: Tensor) -> Tensor:
    """``z·φ₁(z) = e^z - 1``."""
    return z.expm1()


def h_phi_2(z: Tensor) -> Tensor:
    """``z·φ₂(z) = (e^z - 1 - z)/z``."""
    return (z.expm1() - z) / z


class _ChainedNoise:
    """The SDE noise of one step, carried across its sub-steps: at the end of a sub-step
    from ``c_a`` to ``c_b`` (fractions of ``h``) it is ``ξ_a·e^{(c_a-c_b)hη} + √(1-e^{2(c_a-c_b)hη})·ξ``,
    so its variance is always ``1 - e^{-2·c_b·h·η}``."""

    def __init__(self, draw: NoiseSampler, h_times_eta: Tensor) -> None:
        self.draw = draw
        self.h_times_eta = h_times_eta
        self.value: Tensor | None = None
        self.at = 0.0

    def advance(self, to: float, sigma_from: Tensor, sigma_to: Tensor) -> Tensor:
        segment = (self.at - to) * self.h_times_eta
        fresh = segment.mul(2).expm1().neg().sqrt() * self.draw(sigma_from, sigma_to)
        self.value = fresh if self.value is None else self.value * segment.exp() + fresh
        self.at = to
        return self.value


def seeds_2(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
    solver_type: str = "phi_1",
) -> Tensor:
    """SEEDS-2: two model calls per step, the second at ``λ_s + r·h``.

    ``phi_1`` combines the two x0 estimates linearly (weight ``1/(2r)`` on the second) under
    one φ₁ step; ``phi_2`` is the φ₁/φ₂ exponential-integrator pair (``r = 1``: exponential
    Heun).
    """
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type must be one of {SOLVER_TYPES}, not {solver_type!r}")
    flow = is_flow(denoiser)
    draw = noise.sampler(x)
    s_noise = s_noise * noise_scale(denoiser)
    inject = eta > 0 and s_noise > 0
    sigmas = offset_first_sigma(sigmas, denoiser)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma * s_in)
        report(on_step, i, x, sigma, denoised)
        if is_zero(sigma_next):
            x = denoised
            continue
        lam_s, lam_t = half_log_snr(sigma, flow), half_log_snr(sigma_next, flow)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        lam_1 = lam_s.lerp(lam_t, r)
        sigma_1 = sigma_from_half_log_snr(lam_1, flow)
        alpha_1, alpha_t = sigma_1 * lam_1.exp(), sigma_next * lam_t.exp()
        chain = _ChainedNoise(draw, h * eta)

        x_2 = (sigma_1 / sigma) * (-r * h * eta).exp() * x - alpha_1 * h_phi_1(
            -r * h_eta
        ) * denoised
        if inject:
            x_2 = x_2 + chain.advance(r, sigma, sigma_1) * sigma_1 * s_noise
        denoised_2 = denoiser(x_2, sigma_1 * s_in)

        decay = (sigma_next / sigma) * (-h * eta).exp() * x
        if solver_type == "phi_1":
            mixed = denoised.lerp(denoised_2, 1 / (2 * r))
            x = decay - alpha_t * h_phi_1(-h_eta) * mixed
        else:
            b2 = h_phi_2(-h_eta) / r
            b1 = h_phi_1(-h_eta) - b2
            x = decay - alpha_t * (b1 * denoised + b2 * denoised_2)
        if inject:
            x = x + chain.advance(1.0, sigma_1, sigma_next) * sigma_next * s_noise
    return x


def exp_heun_2_x0(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    solver_type: str = "phi_2",
) -> Tensor:
    """Deterministic exponential Heun in data prediction and λ time (SEEDS-2, r = 1, η = 0)."""
    return seeds_2(
        denoiser,
        x,
        sigmas,
        noise=noise,
        on_step=on_step,
        eta=0.0,
        s_noise=0.0,
        r=1.0,
        solver_type=solver_type,
    )


def exp_heun_2_x0_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "phi_2",
) -> Tensor:
    """Stochastic exponential Heun (SEEDS-2 with r = 1)."""
    return seeds_2(
        denoiser,
        x,
        sigmas,
        noise=noise,
        on_step=on_step,
        eta=eta,
        s_noise=s_noise,
        r=1.0,
        solver_type=solver_type,
    )


def seeds_3(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r_1: float = 1.0 / 3,
    r_2: float = 2.0 / 3,
) -> Tensor:
    """SEEDS-3: three model calls per step, at ``λ_s``, ``λ_s + r₁h`` and ``λ_s + r₂h``."""
    flow = is_flow(denoiser)
    draw = noise.sampler(x)
    s_noise = s_noise * noise_scale(denoiser)
    inject = eta > 0 and s_noise > 0
    sigmas = offset_first_sigma(sigmas, denoiser)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma * s_in)
        report(on_step, i, x, sigma, denoised)
        if is_zero(sigma_next):
            x = denoised
            continue
        lam_s, lam_t = half_log_snr(sigma, flow), half_log_snr(sigma_next, flow)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        lam_1, lam_2 = lam_s.lerp(lam_t, r_1), lam_s.lerp(lam_t, r_2)
        sigma_1 = sigma_from_half_log_snr(lam_1, flow)
        sigma_2 = sigma_from_half_log_snr(lam_2, flow)
        alpha_1, alpha_2 = sigma_1 * lam_1.exp(), sigma_2 * lam_2.exp()
        alpha_t = sigma_next * lam_t.exp()
        chain = _ChainedNoise(draw, h * eta)

        x_2 = (sigma_1 / sigma) * (-r_1 * h * eta).exp() * x - alpha_1 * h_phi_1(
            -r_1 * h_eta
        ) * denoised
        if inject:
            x_2 = x_2 + chain.advance(r_1, sigma, sigma_1) * sigma_1 * s_noise
        denoised_2 = denoiser(x_2, sigma_1 * s_in)

        a2 = r_2 / r_1 * h_phi_2(-r_2 * h_eta)
        a1 = h_phi_1(-r_2 * h_eta) - a2
        x_3 = (sigma_2 / sigma) * (-r_2 * h * eta).exp() * x - alpha_2 * (
            a1 * denoised + a2 * denoised_2
        )
        if inject:
            x_3 = x_3 + chain.advance(r_2, sigma_1, sigma_2) * sigma_2 * s_noise
        denoised_3 = denoiser(x_3, sigma_2 * s_in)

        b3 = h_phi_2(-h_eta) / r_2
        b1 = h_phi_1(-h_eta) - b3
        x = (sigma_next / sigma) * (-h * eta).exp() * x - alpha_t * (
            b1 * denoised + b3 * denoised_3
        )
        if inject:
            x = x + chain.advance(1.0, sigma_2, sigma_next) * sigma_next * s_noise
    return x
