"""DDPM's discrete schedule and the parameterisations that use its sigma table (ε, v, x0,
img-to-img, LCM; ComfyUI's ``ModelSamplingDiscrete``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from loom.model_sampling.base import ModelSampling, _broadcast, _torch

if TYPE_CHECKING:
    import torch


def discrete_sigmas(
    linear_start: float = 0.00085,
    linear_end: float = 0.012,
    timesteps: int = 1000,
    schedule: str = "scaled_linear",
) -> torch.Tensor:
    """DDPM sigmas ``sqrt((1-ᾱ)/ᾱ)`` for the ``linear`` or ``scaled_linear`` beta schedule,
    in float64 (callers cast; ComfyUI takes ``log_sigmas`` from these before the cast)."""
    torch = _torch()
    if schedule == "scaled_linear":
        betas = (
            torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
        )
    elif schedule == "linear":
        betas = torch.linspace(linear_start, linear_end, timesteps, dtype=torch.float64)
    else:
        raise ValueError(f"unknown beta schedule {schedule!r}")
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


@attrs.define(eq=False)
class DiscreteEps(ModelSampling):
    """DDPM discrete schedule, ε-prediction: ``x0 = x - σ ε̂``."""

    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000
    schedule: str = "scaled_linear"
    log_sigmas: torch.Tensor = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        sigmas = discrete_sigmas(self.linear_start, self.linear_end, self.timesteps, self.schedule)
        self.sigmas = sigmas.float()
        # The log of the float64 sigmas, then cast, as ComfyUI does: the log of the float32
        # sigmas differs by one ulp in 399 of 1,000 entries, which moves the nearest-timestep
        # look-up (sgm_uniform, normal) onto a neighbouring step.
        self.log_sigmas = sigmas.log().float()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Nearest-index lookup of ``log σ`` in the table (k-diffusion's ``sigma_to_t``)."""
        log_sigma = sigma.log()
        dists = log_sigma.to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Interpolated sigma at a (fractional) timestep."""
        torch = _torch()
        t = torch.clamp(
            timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1
        )
        low = t.floor().long()
        high = t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    def calculate_denoised(
        self, sigma: torch.Tensor, output: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        return noisy - output * _broadcast(sigma, output)


@attrs.define(eq=False)
class DiscreteV(DiscreteEps):
    """Discrete schedule, v-prediction (SD2.x 768-v): ``x0 = x/(σ²+1) - v σ/sqrt(σ²+1)``."""

    def calculate_denoised(
        self, sigma: torch.Tensor, output: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        sigma = _broadcast(sigma, output)
        return noisy / (sigma**2 + 1.0) - output * sigma / (sigma**2 + 1.0) ** 0.5


def rescale_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Sigmas of the same schedule rescaled to zero terminal SNR (Lin et al. 2024): ``sqrt(ᾱ)``
    shifted so the last step's is 0, scaled back to the first step's, the last ``ᾱ`` then set
    to ComfyUI's 4.8973451890853435e-08 (a finite last sigma)."""
    alphas_bar_sqrt = (1 / (sigmas * sigmas + 1)).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = 4.8973451890853435e-08
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


def set_sigmas(sampling: DiscreteEps, sigmas: torch.Tensor) -> None:
    """Replace a discrete schedule's sigma table (and the log table its look-ups use)."""
    sampling.sigmas = sigmas.float()
    sampling.log_sigmas = sigmas.log().float()


@attrs.define(eq=False)
class DiscreteX0(DiscreteEps):
    """Discrete schedule, the network predicts x0 itself."""

    def calculate_denoised(
        self, sigma: torch.Tensor, output: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        return output


@attrs.define(eq=False)
class DiscreteImgToImg(DiscreteX0):
    """x0-prediction fed the noisy latent unscaled (ComfyUI's ``img_to_img``)."""

    def calculate_input(self, sigma: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        return noisy


@attrs.define(eq=False)
class DiscreteLCM(DiscreteEps):
    """Latent consistency models: 50 of the 1,000 discrete steps (every 20th, ending at 999),
    and the consistency boundary condition ``c_skip x + c_out x0`` on the ε estimate."""

    original_timesteps: int = 50
    skip_steps: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.skip_steps = self.timesteps // self.original_timesteps
        last = self.timesteps - 1
        picked = [last - x * self.skip_steps for x in range(self.original_timesteps)][::-1]
        set_sigmas(self, self.sigmas[picked])

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        index = super().timestep(sigma)
        return index * self.skip_steps + (self.skip_steps - 1)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return super().sigma((timestep.float() - (self.skip_steps - 1)) / self.skip_steps)

    def calculate_denoised(
        self, sigma: torch.Tensor, output: torch.Tensor, noisy: torch.Tensor
    ) -> torch.Tensor:
        timestep = _broadcast(self.timestep(sigma).float(), output)
        x0 = noisy - output * _broadcast(sigma, output)
        sigma_data = 0.5
        scaled = timestep * 10.0
        c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
        c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
        return c_out * x0 + c_skip * noisy
