"""Small helpers every sampler shares.

The sampler contract itself (:class:`~loom.types.Sampler`, :class:`~loom.types.Denoiser`,
:class:`~loom.types.UncondDenoiser`, :class:`~loom.types.NoiseSource`, :class:`~loom.types.Step`,
:class:`~loom.types.SamplerInfo`) is core's, in :mod:`loom.samplers`, so that a sampler plugin
needs only core. A sampler is ``sampler(denoiser, x, sigmas, *, noise, on_step=None,
**options) -> x`` with ``denoiser(x, sigma) -> x0``; the samplers read the denoiser's optional
``model_sampling`` (flow-matching models switch the ancestral and SDE samplers to their
rectified-flow forms, ComfyUI's ``*_RF`` code).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from loom.types import Step, UncondDenoiser

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, StepCallback


def report(
    on_step: StepCallback | None,
    i: int,
    x: Tensor,
    sigma: Tensor,
    denoised: Tensor,
    sigma_hat: Tensor | None = None,
) -> None:
    if on_step is not None:
        on_step(Step(i, x, sigma, sigma if sigma_hat is None else sigma_hat, denoised))


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """The Karras ODE derivative ``(x - D(x; σ)) / σ``."""
    return (x - denoised) / _append_dims(sigma, x.ndim)


def _append_dims(t: Tensor, ndim: int) -> Tensor:
    return t[(...,) + (None,) * (ndim - t.ndim)]


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Any, Any]:
    """``(sigma_down, sigma_up)`` of an ancestral step (k-diffusion ``get_ancestral_step``)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def model_sampling_of(denoiser: Any) -> Any:
    return getattr(denoiser, "model_sampling", None)


def is_flow(denoiser: Any) -> bool:
    """Whether the denoiser's model is a rectified-flow (CONST) model."""
    from loom.model_sampling import FlowMatching

    return isinstance(model_sampling_of(denoiser), FlowMatching)


def noise_scale(denoiser: Any) -> float:
    return float(getattr(model_sampling_of(denoiser), "noise_scale", 1.0))


def half_log_snr(sigma: Tensor, flow: bool) -> Tensor:
    """``λ = log(α/σ)``: ``-log σ`` for VE models, ``log((1-σ)/σ)`` for flow models."""
    return sigma.logit().neg() if flow else sigma.log().neg()


def sigma_from_half_log_snr(lam: Tensor, flow: bool) -> Tensor:
    return lam.neg().sigmoid() if flow else lam.neg().exp()


def offset_first_sigma(sigmas: Tensor, denoiser: Any, percent_offset: float = 1e-4) -> Tensor:
    """Flow models: move a first sigma of 1 off the singular point (λ = -inf)."""
    if len(sigmas) <= 1 or not is_flow(denoiser):
        return sigmas
    if sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = model_sampling_of(denoiser).percent_to_sigma(percent_offset)
    return sigmas


def ones_batch(x: Tensor) -> Tensor:
    return x.new_ones([x.shape[0]])


def require_uncond(denoiser: Denoiser) -> UncondDenoiser:
    """``denoiser`` as an :class:`~loom.types.UncondDenoiser`: what a CFG++ sampler (registered
    with ``SamplerInfo(needs_uncond=True)``) is given by a sampling run."""
    if not isinstance(denoiser, UncondDenoiser):
        raise TypeError(
            "CFG++ samplers need a guided denoiser that keeps the unconditional prediction "
            "(uncond_denoised); they are registered with SamplerInfo(needs_uncond=True)"
        )
    return denoiser


def is_zero(value: Any) -> bool:
    return float(value) == 0.0


def isclose(a: Any, b: Any) -> bool:
    return math.isclose(float(a), float(b))
