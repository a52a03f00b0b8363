"""How a family's latents relate to its VAE (:class:`LatentFormat`) and its variants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    import torch


@attrs.frozen
class LatentFormat:
    """How a family's latents relate to its VAE: channels, scale/shift, preview factors."""

    channels: int = 4
    scale_factor: float = 1.0
    shift_factor: float = 0.0
    downscale: int = 8
    #: ``[channels][3]`` matrix mapping a latent pixel to RGB for cheap previews.
    rgb_factors: tuple[tuple[float, float, float], ...] | None = None
    rgb_bias: tuple[float, float, float] | None = None
    #: Per-channel statistics of the VAE's latents (Playground v2.5): when set, model space
    #: is ``(latent - mean) * scale / std`` per channel and ``shift_factor`` is not used.
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __attrs_post_init__(self) -> None:
        if (self.latents_mean is None) != (self.latents_std is None):
            raise ValueError("LatentFormat: latents_mean and latents_std go together")
        for stats in (self.latents_mean, self.latents_std):
            if stats is not None and len(stats) != self.channels:
                raise ValueError(
                    f"LatentFormat: {len(stats)} per-channel statistics for {self.channels} "
                    "channels"
                )

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latent -> the space the diffusion model samples in (ComfyUI's ``process_in``)."""
        if self.latents_mean is None:
            return (latent - self.shift_factor) * self.scale_factor
        mean, std = self._channel_stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`process_in`: model space -> VAE latent."""
        if self.latents_mean is None:
            return latent / self.scale_factor + self.shift_factor
        mean, std = self._channel_stats(latent)
        return latent * std / self.scale_factor + mean

    def _channel_stats(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        shape = (1, len(self.latents_mean or ())) + (1,) * (latent.ndim - 2)
        kwargs = {"device": latent.device, "dtype": latent.dtype}
        mean = torch.tensor(self.latents_mean, **kwargs).view(shape)
        std = torch.tensor(self.latents_std, **kwargs).view(shape)
        return mean, std


@runtime_checkable
class LatentFormatVariants(Protocol):
    """A MODEL handle whose family knows other latent formats its architecture is trained
    with, by ComfyUI's ``ModelSamplingContinuousEDM`` sampling name (``"edm_playground_v2.5"``:
    Playground v2.5's per-channel format, from the family whose architecture it uses).

    ``latent_format_variant(name)`` returns the format, or None for a name it does not know.
    """

    def latent_format_variant(self, name: str) -> LatentFormat | None: ...
