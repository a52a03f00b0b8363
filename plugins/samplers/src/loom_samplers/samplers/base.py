"""What every sampler shares: the denoiser contract, the step callback and small helpers.

A sampler is ``sampler(denoiser, x, sigmas, *, noise, on_step=None, **options) -> x`` with
``denoiser(x, sigma) -> x0`` (Karras et al. 2022's D(x; σ); ``sigma`` has one value per batch
item). ``x`` starts at ``sigmas[0]`` already scaled (``latent + σ₀ ε`` for eps/v models).

Optional denoiser attributes the samplers read:

``model_sampling``
    a :class:`loom.sampling.ModelSampling`. Flow-matching models switch the ancestral and
    SDE samplers to their rectified-flow forms (ComfyUI's ``*_RF`` code); without it the
    k-diffusion (variance-exploding) forms are used.
``capture_uncond()``
    turns off the cfg=1 shortcut and makes later calls store the unconditional prediction in
    ``denoiser.uncond_denoised`` (the CFG++ samplers need it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from torch import Tensor

    from loom_samplers.noise import NoiseSource


class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...


@attrs.frozen
class Step:
    """What a sampler reports after each model evaluation of the main loop."""

    i: int
    x: Any
    sigma: Any
    sigma_hat: Any
    denoised: Any


StepCallback = Callable[[Step], None]


class Sampler(Protocol):
    def __call__(
        self,
        denoiser: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        *,
        noise: NoiseSource,
        on_step: StepCallback | None = None,
        **options: Any,
    ) -> Tensor: ...


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
    from loom.sampling import FlowMatching

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


def needs_uncond(denoiser: Any) -> None:
    """Ask a guided denoiser to keep the unconditional prediction (CFG++ samplers)."""
    capture = getattr(denoiser, "capture_uncond", None)
    if capture is None:
        raise TypeError("CFG++ samplers need a guided denoiser (one with capture_uncond())")
    capture()


def is_zero(value: Any) -> bool:
    return float(value) == 0.0


def isclose(a: Any, b: Any) -> bool:
    return math.isclose(float(a), float(b))
