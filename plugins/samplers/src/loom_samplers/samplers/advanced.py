"""The samplers of ComfyUI's ``nodes_advanced_samplers``, reachable only through their nodes
(SamplerLCMUpscale, SamplerEulerCFGpp "alternative"), not in the sampler list."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loom_samplers.samplers.base import ones_batch, report, require_uncond, to_d

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSource, StepCallback


def upscale_ratios(total_upscale: float, upscale_steps: int | None, sigma_count: int) -> list:
    """The size factor after each of the first steps: evenly from 1 to ``total_upscale``.

    ``upscale_steps`` None spreads it over about half the steps."""
    import numpy as np

    if upscale_steps is None:
        points = max(sigma_count // 2 + 1, 2)
    else:
        points = min(upscale_steps + 1, sigma_count + 1)
    return np.linspace(1.0, total_upscale, points)[1:].tolist()


def lcm_upscale(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    total_upscale: float = 2.0,
    upscale_method: str = "bislerp",
    upscale_steps: int | None = None,
) -> Tensor:
    """LCM steps that enlarge the denoised latent between steps, then renoise it to σ_next.

    ComfyUI draws the renoising from torch's global generator; here it comes from the run's
    seeded noise, one stream per latent size."""
    from loom.resample import common_upscale

    ratios = upscale_ratios(total_upscale, upscale_steps, len(sigmas))
    height, width = x.shape[-2], x.shape[-1]
    draws: dict[tuple[int, ...], object] = {}
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        report(on_step, i, x, sigmas[i], denoised)
        x = denoised
        if i < len(ratios):
            size = (round(width * ratios[i]), round(height * ratios[i]))
            x = common_upscale(x, size[0], size[1], upscale_method, "disabled")
        if sigmas[i + 1] > 0:
            shape = tuple(x.shape)
            if shape not in draws:
                draws[shape] = noise.sampler(x)
            x = x + sigmas[i + 1] * draws[shape](sigmas[i], sigmas[i + 1])
    return x


def euler_cfg_pp_alternative(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
) -> Tensor:
    """SamplerEulerCFGpp's "alternative" Euler CFG++: the direction is
    ``(x - 2·D(x) + u) / σ`` with ``u`` the unconditional prediction (no final-step shortcut)."""
    guided = require_uncond(denoiser)
    s_in = ones_batch(x)
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i] * s_in)
        d = to_d(x - denoised + guided.uncond_denoised, sigmas[i], denoised)
        report(on_step, i, x, sigmas[i], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x
