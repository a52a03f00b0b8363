"""The denoiser a sampler calls: a guider's prediction with inpainting and LazyCache applied."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loom import RunContext
from loom.samplers import DenoiseMaskStep, denoise_mask_function_of
from loom_samplers.step_cache import LazyCacheRun

if TYPE_CHECKING:
    from torch import Tensor

    from loom_samplers.guiders import Guider


class GuidedDenoiser:
    """``D(x, σ)`` for the samplers: a guider's prediction, with inpainting applied.

    With a ``denoise_mask`` (1 = denoise), the kept area of ``x`` is replaced by the original
    latent noised to σ before the call and by the original latent after it (ComfyUI's
    ``KSamplerX0Inpaint``); a model with a ``denoise_mask_function`` (DifferentialDiffusion)
    rewrites that mask for each call from σ and the whole schedule ``sigmas``. With
    ``keep_uncond`` (samplers registered with ``SamplerInfo(needs_uncond=True)``) the
    unconditional prediction is always evaluated and kept in ``uncond_denoised``: it is then
    a :class:`loom.types.UncondDenoiser`.
    """

    def __init__(
        self,
        guider: Guider,
        *,
        latent_image: Tensor,
        noise: Tensor,
        denoise_mask: Tensor | None = None,
        sigmas: Tensor | None = None,
        keep_uncond: bool = False,
        ctx: RunContext | None = None,
    ) -> None:
        self.guider = guider
        self.model_sampling = guider.model.model_sampling
        self.latent_image = latent_image
        self.noise = noise
        self.denoise_mask = denoise_mask
        self.sigmas = sigmas
        self.mask_function = denoise_mask_function_of(guider.model)
        self.ctx = ctx
        self.keep_uncond = keep_uncond
        if keep_uncond:
            self.uncond_denoised: Tensor | None = None

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        mask = self.denoise_mask
        if mask is not None and self.mask_function is not None:
            mask = self.mask_function(
                DenoiseMaskStep(sigma, mask, self.sigmas, self.model_sampling)
            )
        if mask is not None:
            kept = 1.0 - mask
            sigma_b = sigma.reshape([sigma.shape[0]] + [1] * (self.noise.ndim - 1))
            x = (
                x * mask
                + self.model_sampling.noise_scaling(sigma_b, self.noise, self.latent_image) * kept
            )
        lazy = getattr(self.guider, "cache_run", None)
        if isinstance(lazy, LazyCacheRun):
            found: list[Tensor | None] = [None]

            def call() -> Tensor:
                out, found[0] = self.guider.predict(
                    x, sigma, need_uncond=self.keep_uncond, ctx=self.ctx
                )
                return out

            out, uncond = lazy.predict(x, sigma, call), found[0]
        else:
            out, uncond = self.guider.predict(x, sigma, need_uncond=self.keep_uncond, ctx=self.ctx)
        if self.keep_uncond and uncond is not None:
            self.uncond_denoised = uncond
        if mask is not None:
            out = out * mask + self.latent_image * kept
        return out
