"""Samplers that keep nothing between steps but the latent: DDPM and LCM.

* DDPM: Ho, Jain, Abbeel (2020), arXiv:2006.11239 (ancestral posterior step).
* LCM: Luo et al. (2023), "Latent Consistency Models", arXiv:2310.04378.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loom_samplers.samplers.base import is_zero, model_sampling_of, ones_batch, report

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSource, StepCallback


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
