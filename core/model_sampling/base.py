"""The base every parameterisation extends: sigmas <-> timesteps, network output -> x0."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import torch


def _torch():
    import torch

    return torch


@attrs.define(eq=False)
class ModelSampling:
    """Base: maps between sigmas and timesteps and converts network outputs to x0."""

    sigmas: torch.Tensor = attrs.field(init=False, repr=False)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the schedule (0 = start, noisiest; 1 = end)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(_torch().tensor(self._percent_to_t(percent))))

    def _percent_to_t(self, percent: float) -> float:
        return (1.0 - percent) * 999.0

    def calculate_input(self, sigma: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """Scale the noisy latent to what the network expects."""
        sigma = _broadcast(sigma, noisy)
        return noisy / (sigma**2 + 1.0) ** 0.5

    def calculate_denoised(
        self, sigma: torch.Tensor, output: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def noise_scaling(
        self,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        latent: torch.Tensor,
        max_denoise: bool = False,
    ) -> torch.Tensor:
        """The starting point of sampling from ``latent`` with ``noise`` at ``sigma``."""
        sigma = _broadcast(sigma, noise)
        if max_denoise:
            return latent + noise * (sigma**2 + 1.0) ** 0.5
        return latent + noise * sigma

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return latent


def _broadcast(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    sigma = sigma.to(like.dtype) if sigma.is_floating_point() else sigma
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1)) if sigma.ndim else sigma
