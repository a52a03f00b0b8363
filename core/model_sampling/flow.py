"""Rectified flow with a time shift (SD3, Flux)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

from loom.model_sampling.base import ModelSampling, _broadcast, _torch

if TYPE_CHECKING:
    import torch


def time_shift(shift: float, t: float | torch.Tensor) -> float | torch.Tensor:
    """Flow-matching time shift ``α t / (1 + (α-1) t)`` (SD3 / Flux)."""
    return shift * t / (1 + (shift - 1) * t)


@attrs.define(eq=False)
class FlowMatching(ModelSampling):
    """Rectified flow with shift: ``x_t = (1-σ) x0 + σ ε``, the network predicts ``ε - x0``."""

    shift: float = 1.0
    multiplier: float = 1000.0
    timesteps: int = 1000

    def __attrs_post_init__(self) -> None:
        torch = _torch()
        ts = torch.arange(1, self.timesteps + 1, dtype=torch.float64) / self.timesteps
        self.sigmas = time_shift(self.shift, ts).float()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * self.multiplier

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return time_shift(self.shift, timestep / self.multiplier)

    def _percent_to_t(self, percent: float) -> float:
        return (1.0 - percent) * self.multiplier

    def calculate_input(self, sigma: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        return noisy

    def calculate_denoised(
        self, sigma: torch.Tensor, output: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        return noisy - output * _broadcast(sigma, output)

    def noise_scaling(
        self,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        latent: torch.Tensor,
        max_denoise: bool = False,
    ) -> torch.Tensor:
        sigma = _broadcast(sigma, noise)
        return sigma * noise + (1.0 - sigma) * latent

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return latent / (1.0 - _broadcast(sigma, latent))


def flux_shift(
    image_seq_len: int,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
) -> float:
    """Flux's resolution-dependent shift: ``exp(μ)`` with μ linear in the token count."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    mu = base_shift + slope * (image_seq_len - base_seq_len)
    return math.exp(mu)
