"""Model sampling math every family shares: noise schedules and how a model's output
becomes a denoised estimate.

Three parameterisations cover SD1.x/SD2.x/SDXL and Flux:

* :class:`DiscreteEps` — DDPM's discrete schedule (``scaled_linear`` betas, 1000 steps),
  the network predicts noise ε (SD1.x, SDXL).
* :class:`DiscreteV` — same schedule, the network predicts ``v`` (SD2.x 768-v).
* :class:`FlowMatching` — rectified flow with a time ``shift`` (SD3, Flux).

Sigmas follow k-diffusion's convention: ``x_t = x_0 + σ ε`` for the discrete models (inputs
are scaled by ``1/sqrt(σ²+1)`` before the network), ``x_t = (1-σ) x_0 + σ ε`` for flow.
"""

from __future__ import annotations

import math
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


# --- alternative parameterisations (ModelSamplingDiscrete / ModelSamplingContinuousV) ------


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
