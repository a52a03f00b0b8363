"""Continuous-time sigmas: v-prediction and EDM (ComfyUI's ``ModelSamplingContinuousV`` /
``ModelSamplingContinuousEDM``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

from loom.model_sampling.base import ModelSampling, _broadcast, _torch

if TYPE_CHECKING:
    import torch


@attrs.define(eq=False)
class ContinuousV(ModelSampling):
    """Continuous-time v-prediction (ComfyUI's ``ModelSamplingContinuousV``): 1,000 sigmas
    log-spaced from ``sigma_min`` to ``sigma_max``, timestep ``atan(σ)·2/π``."""

    sigma_min_value: float = 0.03
    sigma_max_value: float = 500.0

    def __attrs_post_init__(self) -> None:
        torch = _torch()
        low, high = math.log(self.sigma_min_value), math.log(self.sigma_max_value)
        self.sigmas = torch.linspace(low, high, 1000).exp()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.atan() / math.pi * 2

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (timestep * math.pi / 2).tan()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        low, high = math.log(self.sigma_min_value), math.log(self.sigma_max_value)
        return math.exp((high - low) * (1.0 - percent) + low)

    def calculate_denoised(
        self, sigma: torch.Tensor, output: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        sigma = _broadcast(sigma, output)
        return noisy / (sigma**2 + 1.0) - output * sigma / (sigma**2 + 1.0) ** 0.5


#: What a continuous-EDM network predicts (ComfyUI's ``ModelSamplingContinuousEDM`` types).
EDM_PREDICTIONS = ("eps", "v_prediction", "edm", "cosmos_rflow")


@attrs.define(eq=False)
class ContinuousEDM(ContinuousV):
    """Continuous EDM sigmas (Karras et al. 2022): the 1,000 log-spaced sigmas of
    :class:`ContinuousV`, timestep ``log(σ)/4``, with the preconditioning of ``prediction``
    around ``sigma_data`` (σd):

    * ``eps``: input ``x/sqrt(σ²+σd²)``, ``x0 = x - σ ε̂``;
    * ``v_prediction``: ``x0 = x σd²/(σ²+σd²) - v̂ σ σd/sqrt(σ²+σd²)``;
    * ``edm``: EDM's ``c_skip x + c_out F`` (``+`` where v-prediction has ``-``), σd 0.5 for
      Playground v2.5;
    * ``cosmos_rflow``: rectified flow on EDM sigmas, ``t = σ/(σ+1)`` (Cosmos).
    """

    prediction: str = attrs.field(
        default="v_prediction", validator=attrs.validators.in_(EDM_PREDICTIONS)
    )
    sigma_data: float = 1.0

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.prediction == "cosmos_rflow":
            return sigma / (sigma + 1)
        return 0.25 * sigma.log()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        if self.prediction != "cosmos_rflow":
            return (timestep / 0.25).exp()
        torch = _torch()
        sigma_max = self.sigma_max.to(timestep)
        at_max = timestep >= sigma_max / (sigma_max + 1)
        return torch.where(at_max, sigma_max, timestep / (1 - timestep))

    def calculate_input(self, sigma: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        if self.prediction == "cosmos_rflow":
            t = _broadcast(sigma / (sigma + 1), noisy)
            return noisy * (1.0 - t)
        sigma = _broadcast(sigma, noisy)
        return noisy / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(
        self, sigma: torch.Tensor, output: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        if self.prediction == "cosmos_rflow":
            t = _broadcast(sigma / (sigma + 1), output)
            return noisy * (1.0 - t) - output * t
        sigma = _broadcast(sigma, output)
        if self.prediction == "eps":
            return noisy - output * sigma
        data = self.sigma_data
        skip = noisy * data**2 / (sigma**2 + data**2)
        out = output * sigma * data / (sigma**2 + data**2) ** 0.5
        return skip + out if self.prediction == "edm" else skip - out

    def noise_scaling(
        self,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        latent: torch.Tensor,
        max_denoise: bool = False,
    ) -> torch.Tensor:
        if self.prediction == "cosmos_rflow":
            return latent + noise * _broadcast(sigma, noise)
        return super().noise_scaling(sigma, noise, latent, max_denoise)
