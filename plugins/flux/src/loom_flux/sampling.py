"""Flux's flow-matching schedule, as ComfyUI's ``ModelSamplingFlux`` computes it.

``sigma(t) = e^mu / (e^mu + 1/t - 1)``, read from a 10,000-entry float32 table; the model
receives sigma itself as its timestep. ``mu`` grows linearly with the number of 2x2 latent
patches (256 -> ``base_shift``, 4096 -> ``max_shift``) when the ``ModelSamplingFlux`` node
sets it; without the node a dev-style model uses mu = 1.15 at every size and a schnell-style
one mu = 0 (shift 1).
"""

from __future__ import annotations

import math

import attrs
import torch

from loom.model_sampling import FlowMatching

DEV_MU = 1.15
SCHNELL_MU = 0.0
TIMESTEPS = 10_000


def flux_time_shift(mu: float, t: torch.Tensor) -> torch.Tensor:
    return math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))


def mu_for_size(width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """ComfyUI's ``ModelSamplingFlux`` node: mu linear in ``width*height/256`` patches."""
    x1, x2 = 256, 4096
    slope = (max_shift - base_shift) / (x2 - x1)
    return (width * height / (8 * 8 * 2 * 2)) * slope + (base_shift - slope * x1)


@attrs.define(eq=False)
class FluxSampling(FlowMatching):
    """Flow matching with Flux's shift ``mu`` (``shift`` here is mu, not e^mu)."""

    shift: float = DEV_MU
    multiplier: float = 1.0
    timesteps: int = TIMESTEPS

    def __attrs_post_init__(self) -> None:
        ts = torch.arange(1, self.timesteps + 1, 1) / self.timesteps
        self.sigmas = flux_time_shift(self.shift, ts)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return flux_time_shift(self.shift, timestep)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(flux_time_shift(self.shift, torch.tensor(1.0 - percent)))
