"""CFG++ samplers: the step direction uses the unconditional prediction, the anchor the guided one.

Chung, Kim, Park, Nam, Ye (2024), "CFG++: Manifold-constrained Classifier Free Guidance for
Diffusion Models", arXiv:2406.08070. They are registered with ``SamplerInfo(needs_uncond=True)``,
so a sampling run gives them an :class:`~loom.types.UncondDenoiser` (the cfg = 1 shortcut off,
as in ComfyUI) whose ``uncond_denoised`` they read after each call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loom_samplers.samplers.base import (
    ancestral_step,
    half_log_snr,
    is_flow,
    is_zero,
    noise_scale,
    ones_batch,
    report,
    require_uncond,
    to_d,
)
from loom_samplers.samplers.multistep import gradient_estimation, res_multistep

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSource, StepCallback


def euler_ancestral_cfg_pp(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Ancestral Euler steps with CFG++ (DDIM-style renoising with the unconditional ε)."""
    guided = require_uncond(denoiser)
    draw = noise.sampler(x)
    flow = is_flow(denoiser)
    s_noise = s_noise * noise_scale(denoiser)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        uncond = guided.uncond_denoised
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigmas[i + 1]):
            x = denoised
            continue
        alpha_s = sigmas[i] * half_log_snr(sigmas[i], flow).exp()
        alpha_t = sigmas[i + 1] * half_log_snr(sigmas[i + 1], flow).exp()
        d = to_d(x, sigmas[i], alpha_s * uncond)
        sigma_down, sigma_up = ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta=eta)
        x = alpha_t * denoised + alpha_t * sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * draw(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def euler_cfg_pp(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
) -> Tensor:
    """Euler steps with CFG++ (the deterministic case of :func:`euler_ancestral_cfg_pp`)."""
    return euler_ancestral_cfg_pp(
        denoiser, x, sigmas, noise=noise, on_step=on_step, eta=0.0, s_noise=0.0
    )


def dpmpp_2m_cfg_pp(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) with CFG++."""
    guided = require_uncond(denoiser)
    s_in = ones_batch(x)
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        uncond = guided.uncond_denoised
        report(on_step, i, x, sigmas[i], denoised)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        if old_uncond is None or is_zero(sigmas[i + 1]):
            mix = -(-h).exp() * uncond
        else:
            r = (t - sigmas[i - 1].log().neg()) / h
            mix = -(-h).exp() * uncond - (-h).expm1() * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + (-h).exp() * x
        old_uncond = uncond
    return x


def dpmpp_2s_ancestral_cfg_pp(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2S) ancestral with CFG++, ComfyUI 0.8's form (for every model type).

    With ``g = D(x) - u`` the guidance of the step's first call: the midpoint is
    ``x_2 = (σ_s/σ)(x + g) - expm1(-h/2) D(x)`` and the step
    ``x' = (σ_down/σ)(x + D(x) - u_2) - expm1(-h) D(x_2)``, where ``u_2`` is the unconditional
    prediction of the **second** call (ComfyUI keeps only the latest one). The last step
    (``σ_down = 0``) returns ``D(x)``.
    """
    guided = require_uncond(denoiser)
    draw = noise.sampler(x)
    s_noise = s_noise * noise_scale(denoiser)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(on_step, i, x, sigmas[i], denoised)
        if is_zero(sigma_down):
            x = denoised
        else:
            t, t_next = sigmas[i].log().neg(), sigma_down.log().neg()
            h = t_next - t
            s = t + 0.5 * h
            uncond = guided.uncond_denoised
            x_2 = ((-s).exp() / (-t).exp()) * (x + (denoised - uncond)) - (
                -h * 0.5
            ).expm1() * denoised
            denoised_2 = denoiser(x_2, (-s).exp() * s_in)
            uncond_2 = guided.uncond_denoised
            x = ((-t_next).exp() / (-t).exp()) * (x + (denoised - uncond_2)) - (
                -h
            ).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + draw(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def res_multistep_cfg_pp(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    s_noise: float = 1.0,
) -> Tensor:
    """RES multistep with CFG++."""
    return res_multistep(
        denoiser, x, sigmas, noise=noise, on_step=on_step, s_noise=s_noise, eta=0.0, cfg_pp=True
    )


def res_multistep_ancestral_cfg_pp(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Ancestral RES multistep with CFG++."""
    return res_multistep(
        denoiser, x, sigmas, noise=noise, on_step=on_step, s_noise=s_noise, eta=eta, cfg_pp=True
    )


def gradient_estimation_cfg_pp(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    ge_gamma: float = 2.0,
) -> Tensor:
    """Gradient estimation with CFG++."""
    return gradient_estimation(
        denoiser, x, sigmas, noise=noise, on_step=on_step, ge_gamma=ge_gamma, cfg_pp=True
    )
