"""SA-Solver: stochastic Adams predictor-corrector in data prediction and λ time.

Xue, Yi, Liu, et al. (2023), "SA-Solver: Stochastic Adams Solver for Fast Sampling of
Diffusion Models", NeurIPS 2023, arXiv:2309.05019 (eqs. 15 and 18; the simple order-2
coefficients of its Appendix D). With ``τ`` the stochastic strength on the step and
``k = 1 + τ²``, a step from ``λ_s`` to ``λ_t`` (``h = λ_t - λ_s``) is

    x_t = (σ_t/σ_s)·e^{-τ²h}·x_s + Σ_j b_j·D_j + σ_t·√(1 - e^{-2τ²h})·ξ,
    b_j = α_t·k·∫_{λ_s}^{λ_t} e^{-k(λ_t - λ)}·ℓ_j(λ) dλ,

with ``ℓ_j`` the Lagrange basis over the λ of the last x0 estimates ``D_j``. The predictor
extrapolates from the estimates so far; the corrector re-does the step with the new estimate
included (and PECE evaluates the model again on the corrected state). ``τ`` is ``eta`` while
σ lies in ``[sde_end_sigma, sde_start_sigma]`` and 0 outside (ComfyUI's SDE interval, by
default 20 % to 80 % of the schedule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom_samplers.samplers.base import (
    half_log_snr,
    is_flow,
    is_zero,
    model_sampling_of,
    noise_scale,
    offset_first_sigma,
    ones_batch,
    report,
)

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSource, StepCallback

DEFAULT_SDE_START_PERCENT = 0.2
DEFAULT_SDE_END_PERCENT = 0.8


def _torch():
    import torch

    return torch


def exponential_moments(lam_s: Tensor, lam_t: Tensor, order: int, tau: float) -> Tensor:
    """``m_p = k·∫_{λ_s}^{λ_t} e^{-k(λ_t - λ)}·λ^p dλ`` for ``p < order`` (``k = 1 + τ²``).

    Integration by parts gives ``m_p = (λ_t^p - λ_s^p·e^{-kh}) - (p/k)·m_{p-1}``.
    """
    k = 1 + tau**2
    decay = (-k * (lam_t - lam_s)).exp()
    moments = []
    for p in range(order):
        m = lam_t**p - lam_s**p * decay
        if p:
            m = m - (p / k) * moments[-1]
        moments.append(m)
    return _torch().stack(moments)


def adams_coefficients(
    sigma_t: Tensor,
    nodes: Tensor,
    lam_s: Tensor,
    lam_t: Tensor,
    tau: float,
    *,
    simple_order_2: bool = False,
    corrector: bool = False,
) -> Tensor:
    """The ``b_j`` of a step from ``λ_s`` to ``λ_t`` for x0 estimates at the λ ``nodes``
    (oldest first), or the paper's simpler order-2 pair when ``simple_order_2``."""
    torch = _torch()
    k = 1 + tau**2
    h = lam_t - lam_s
    alpha_t = sigma_t * lam_t.exp()
    if simple_order_2 and nodes.shape[0] == 2:
        whole = alpha_t * (-k * h).expm1().neg()
        if corrector:
            newest = alpha_t * 0.5 * k * h
            return torch.stack([whole - newest, newest])
        oldest = alpha_t * 0.5 * k * h**2 / (nodes[-2] - lam_s)
        return torch.stack([oldest, whole - oldest])
    moments = exponential_moments(lam_s, lam_t, nodes.shape[0], tau)
    # Σ_j ℓ_j(λ)·λ_j^p = λ^p: the Lagrange weights solve Vᵀ w = m.
    vandermonde_t = torch.vander(nodes, nodes.shape[0], increasing=True).T
    return alpha_t * torch.linalg.solve(vandermonde_t, moments)


def _combine(estimates: list[Tensor], coefficients: Tensor) -> Tensor:
    out = estimates[0] * coefficients[0].to(estimates[0].dtype)
    for estimate, b in zip(estimates[1:], coefficients[1:], strict=True):
        out = out + estimate * b.to(estimate.dtype)
    return out


def _sde_interval(
    denoiser: Denoiser, start: float | None, end: float | None
) -> tuple[float, float]:
    if start is not None and end is not None:
        return start, end
    model_sampling = model_sampling_of(denoiser)
    if model_sampling is None:
        raise TypeError(
            "sa_solver needs the model's sampling schedule to place its SDE interval "
            "(or explicit sde_start_sigma and sde_end_sigma)"
        )
    if start is None:
        start = model_sampling.percent_to_sigma(DEFAULT_SDE_START_PERCENT)
    if end is None:
        end = model_sampling.percent_to_sigma(DEFAULT_SDE_END_PERCENT)
    return float(start), float(end)


def sa_solver(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    sde_start_sigma: float | None = None,
    sde_end_sigma: float | None = None,
    s_noise: float = 1.0,
    predictor_order: int = 3,
    corrector_order: int = 4,
    use_pece: bool = False,
    simple_order_2: bool = False,
) -> Tensor:
    """Stochastic Adams predictor-corrector; one model call per step (two with PECE)."""
    if len(sigmas) <= 1:
        return x
    start_sigma, end_sigma = _sde_interval(denoiser, sde_start_sigma, sde_end_sigma)

    def tau_at(sigma: Tensor) -> float:
        if eta <= 0:
            return 0.0
        return eta if start_sigma >= float(sigma) >= end_sigma else 0.0

    draw = noise.sampler(x)
    s_noise = s_noise * noise_scale(denoiser)
    sigmas = offset_first_sigma(sigmas, denoiser)
    lambdas = half_log_snr(sigmas, is_flow(denoiser))
    s_in = ones_batch(x)
    keep = max(predictor_order, corrector_order)
    # the last steps lower the order when the schedule ends at 0 (stability)
    taper = is_zero(sigmas[-1])
    n = len(sigmas)

    x_pred = x
    h = lambdas.new_zeros(())
    tau = 0.0
    step_noise = None
    estimates: list[Tensor] = []
    for i in range(n - 1):
        denoised = denoiser(x_pred, sigmas[i] * s_in)
        report(on_step, i, x_pred, sigmas[i], denoised)
        estimates = [*estimates, denoised][-keep:]
        p_order = min(predictor_order, len(estimates))
        last = is_zero(sigmas[i + 1])
        c_order = 0 if i == 0 or (last and not use_pece) else min(corrector_order, len(estimates))
        if taper:
            p_order = min(p_order, n - 2 - i)
            c_order = min(c_order, n - 1 - i)

        if c_order == 0:
            x = x_pred
        else:
            b = adams_coefficients(
                sigmas[i],
                lambdas[i - c_order + 1 : i + 1],
                lambdas[i - 1],
                lambdas[i],
                tau,
                simple_order_2=simple_order_2,
                corrector=True,
            )
            decay = (sigmas[i] / sigmas[i - 1]) * (-(tau**2) * h).exp()
            x = decay * x + _combine(estimates[-c_order:], b)
            if step_noise is not None:
                x = x + step_noise
            if use_pece:
                denoised = denoiser(x, sigmas[i] * s_in)
                estimates[-1] = denoised

        if last:
            x_pred = denoised
            continue
        tau = tau_at(sigmas[i + 1])
        b = adams_coefficients(
            sigmas[i + 1],
            lambdas[i - p_order + 1 : i + 1],
            lambdas[i],
            lambdas[i + 1],
            tau,
            simple_order_2=simple_order_2,
        )
        h = lambdas[i + 1] - lambdas[i]
        x_pred = (sigmas[i + 1] / sigmas[i]) * (-(tau**2) * h).exp() * x + _combine(
            estimates[-p_order:], b
        )
        step_noise = None
        if tau > 0 and s_noise > 0:
            spread = (-2 * tau**2 * h).expm1().neg().sqrt()
            step_noise = draw(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * spread * s_noise
            x_pred = x_pred + step_noise
    return x_pred


def sa_solver_pece(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    **options: Any,
) -> Tensor:
    """SA-Solver in PECE mode: the corrected state is evaluated again."""
    options["use_pece"] = True
    return sa_solver(denoiser, x, sigmas, noise=noise, on_step=on_step, **options)
