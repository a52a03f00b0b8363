"""DPM-Solver++ samplers: 2S ancestral, SDE, 2M, 2M SDE, 3M SDE.

Lu, Zhou, Bao, Chen, Li, Zhu (2022), "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", arXiv:2211.01095 (data prediction, multistep 2M); the SDE
forms follow k-diffusion (Crowson) and the 3M SDE form follows ComfyUI. Time is the
half-log-SNR λ = log(α/σ), so the same code serves VE (α = 1) and flow (α = 1 - σ) models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loom_samplers.samplers.base import (
    ancestral_step,
    half_log_snr,
    is_flow,
    is_zero,
    noise_scale,
    offset_first_sigma,
    ones_batch,
    report,
    sigma_from_half_log_snr,
    to_d,
)

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSource, StepCallback


def dpmpp_2s_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Ancestral sampling with DPM-Solver++(2S) second-order single steps."""
    if is_flow(denoiser):
        return _dpmpp_2s_ancestral_rf(
            denoiser, x, sigmas, noise=noise, on_step=on_step, eta=eta, s_noise=s_noise
        )
    draw = noise.sampler(x)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigma_down):
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = sigmas[i].log().neg(), sigma_down.log().neg()
            h = t_next - t
            s = t + 0.5 * h
            x_2 = ((-s).exp() / (-t).exp()) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = denoiser(x_2, (-s).exp() * s_in)
            x = ((-t_next).exp() / (-t).exp()) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + draw(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _dpmpp_2s_ancestral_rf(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None,
    eta: float,
    s_noise: float,
) -> Tensor:
    from loom_samplers.samplers.karras import _rf_ancestral

    draw = noise.sampler(x)
    s_noise = s_noise * noise_scale(denoiser)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        sigma_down, alpha_ratio, renoise = _rf_ancestral(sigmas[i], sigmas[i + 1], eta)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigmas[i + 1]):
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            if float(sigmas[i]) == 1.0:
                sigma_s = 0.9999
            else:
                lam_i, lam_down = half_log_snr(sigmas[i], True), half_log_snr(sigma_down, True)
                sigma_s = sigma_from_half_log_snr(lam_i + 0.5 * (lam_down - lam_i), True)
            ratio_s = sigma_s / sigmas[i]
            u = ratio_s * x + (1 - ratio_s) * denoised
            denoised_2 = denoiser(u, sigma_s * s_in)
            ratio_down = sigma_down / sigmas[i]
            x = ratio_down * x + (1 - ratio_down) * denoised_2
        if sigmas[i + 1] > 0 and eta > 0:
            x = alpha_ratio * x + draw(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def _brownian(noise: NoiseSource, x: Tensor, sigmas: Tensor, cpu: bool):
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return noise.brownian(x, sigma_min, sigma_max, cpu=cpu)


def dpmpp_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
    noise_on_cpu: bool = True,
) -> Tensor:
    """DPM-Solver++ (stochastic), two evaluations per step with Brownian-tree noise."""
    if len(sigmas) <= 1:
        return x
    draw = _brownian(noise, x, sigmas, noise_on_cpu)
    flow = is_flow(denoiser)
    sigmas = offset_first_sigma(sigmas, denoiser)
    s_noise = s_noise * noise_scale(denoiser)
    s_in = ones_batch(x)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigmas[i + 1]):
            x = denoised
            continue
        lam_s, lam_t = half_log_snr(sigmas[i], flow), half_log_snr(sigmas[i + 1], flow)
        h = lam_t - lam_s
        lam_s1 = lam_s + r * h
        sigma_s1 = sigma_from_half_log_snr(lam_s1, flow)
        alpha_s = sigmas[i] * lam_s.exp()
        alpha_s1 = sigma_s1 * lam_s1.exp()
        alpha_t = sigmas[i + 1] * lam_t.exp()
        # Step 1
        sd, su = ancestral_step(lam_s.neg().exp(), lam_s1.neg().exp(), eta)
        h_ = sd.log().neg() - lam_s
        x_2 = (alpha_s1 / alpha_s) * (-h_).exp() * x - alpha_s1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s1 * draw(sigmas[i], sigma_s1) * s_noise * su
        denoised_2 = denoiser(x_2, sigma_s1 * s_in)
        # Step 2
        sd, su = ancestral_step(lam_s.neg().exp(), lam_t.neg().exp(), eta)
        h_ = sd.log().neg() - lam_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * draw(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
) -> Tensor:
    """DPM-Solver++(2M): Algorithm 2 of Lu et al. (2022b), multistep, second order."""
    s_in = ones_batch(x)
    old_denoised = None
    t_prev = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], denoised)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        ratio = sigmas[i + 1] / sigmas[i]
        if old_denoised is None or is_zero(sigmas[i + 1]):
            x = ratio * x - (-h).expm1() * denoised
        else:
            r = (t - t_prev) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = ratio * x - (-h).expm1() * denoised_d
        old_denoised = denoised
        t_prev = t
    return x


def dpmpp_2m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "midpoint",
    noise_on_cpu: bool = True,
) -> Tensor:
    """DPM-Solver++(2M) SDE (k-diffusion), ``solver_type`` "midpoint" or "heun"."""
    if len(sigmas) <= 1:
        return x
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    draw = _brownian(noise, x, sigmas, noise_on_cpu)
    flow = is_flow(denoiser)
    sigmas = offset_first_sigma(sigmas, denoiser)
    s_noise = s_noise * noise_scale(denoiser)
    s_in = ones_batch(x)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigmas[i + 1]):
            x = denoised
        else:
            lam_s, lam_t = half_log_snr(sigmas[i], flow), half_log_snr(sigmas[i + 1], flow)
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lam_t.exp()
            phi_1 = (-h_eta).expm1().neg()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * phi_1 * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * (phi_1 / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * phi_1 * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                scale = sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
                x = x + draw(sigmas[i], sigmas[i + 1]) * scale
        old_denoised = denoised
        h_last = h
    return x


def dpmpp_2m_sde_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: str = "heun",
    noise_on_cpu: bool = True,
) -> Tensor:
    """DPM-Solver++(2M) SDE with the Heun-type correction."""
    return dpmpp_2m_sde(
        denoiser,
        x,
        sigmas,
        noise=noise,
        on_step=on_step,
        eta=eta,
        s_noise=s_noise,
        solver_type=solver_type,
        noise_on_cpu=noise_on_cpu,
    )


def dpmpp_3m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_on_cpu: bool = True,
) -> Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep with Brownian-tree noise."""
    if len(sigmas) <= 1:
        return x
    draw = _brownian(noise, x, sigmas, noise_on_cpu)
    flow = is_flow(denoiser)
    sigmas = offset_first_sigma(sigmas, denoiser)
    s_noise = s_noise * noise_scale(denoiser)
    s_in = ones_batch(x)
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigmas[i + 1]):
            x = denoised
        else:
            lam_s, lam_t = half_log_snr(sigmas[i], flow), half_log_snr(sigmas[i + 1], flow)
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lam_t.exp()
            x = (
                sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x
                + alpha_t * (-h_eta).expm1().neg() * denoised
            )
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * d
            if eta > 0 and s_noise > 0:
                scale = sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
                x = x + draw(sigmas[i], sigmas[i + 1]) * scale
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def _on_device(sampler):
    """ComfyUI's ``*_gpu`` variants: the Brownian tree lives on the latent's device."""

    def on_device(
        denoiser: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        *,
        noise: NoiseSource,
        on_step: StepCallback | None = None,
        **options,
    ) -> Tensor:
        return sampler(
            denoiser, x, sigmas, noise=noise, on_step=on_step, noise_on_cpu=False, **options
        )

    on_device.__name__ = f"{sampler.__name__}_gpu"
    on_device.__doc__ = f"{sampler.__doc__}\n\nBrownian tree on the latent's device."
    return on_device


dpmpp_sde_gpu = _on_device(dpmpp_sde)
dpmpp_2m_sde_gpu = _on_device(dpmpp_2m_sde)
dpmpp_2m_sde_heun_gpu = _on_device(dpmpp_2m_sde_heun)
dpmpp_3m_sde_gpu = _on_device(dpmpp_3m_sde)
