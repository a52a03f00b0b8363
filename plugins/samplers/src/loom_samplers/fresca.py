"""FreSca (Huang et al. 2025, arXiv:2504.02154): frequency-dependent scaling of the guidance.

ComfyUI 0.8's ``comfy_extras/nodes_fresca.py`` rule as a pre-CFG function: the guidance
``cond - uncond`` (x0 predictions) is scaled by ``scale_low`` in the centre
``2 min(freq_cutoff, n // 2)`` band of each spatial axis of its shifted spectrum and by
``scale_high`` elsewhere (the spectrum is over the last two axes), and the positive becomes ``uncond + filtered guidance``. Model
agnostic: any latent with spatial axes after batch and channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

import loom
from loom.samplers import PreCFGStep, guidance_hooks_of
from loom.types import Model

if TYPE_CHECKING:
    from torch import Tensor

ui = loom.ui


def frequency_scaled(x: Tensor, scale_low: float, scale_high: float, freq_cutoff: int) -> Tensor:
    """``x`` with its shifted spectrum's centre band times ``scale_low`` and the rest times
    ``scale_high`` (in float32, returned in ``x``'s dtype)."""
    import torch

    dims = (-2, -1)
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=dims), dim=dims)
    mask = torch.full(spectrum.shape, float(scale_high), device=x.device)
    centre = mask
    for dim in range(2, x.ndim):  # every axis after channels (ComfyUI's band)
        middle = spectrum.shape[dim] // 2
        half = min(freq_cutoff, middle)
        centre = centre.narrow(dim, middle - half, half * 2)
    centre.fill_(float(scale_low))
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=dims)
    return torch.fft.ifftn(spectrum, dim=dims).real.to(x.dtype)


@attrs.frozen
class FrequencyScaledGuidance:
    """The pre-CFG function of :class:`FreSca`; the negative left out (cfg 1): unchanged."""

    scale_low: float
    scale_high: float
    freq_cutoff: int

    def __call__(self, step: PreCFGStep) -> Any:
        outputs = step.outputs
        evaluated = step.evaluated or (True,) * len(outputs)
        if len(outputs) <= 1 or not all(evaluated[:2]):
            return outputs
        cond, uncond = outputs[0], outputs[1]
        guidance = frequency_scaled(
            cond - uncond, self.scale_low, self.scale_high, self.freq_cutoff
        )
        return (guidance + uncond, uncond, *outputs[2:])


@loom.node("FreSca", category="_for_testing", display_name="FreSca", experimental=True, v3=True)
class FreSca:
    """Applies frequency-dependent scaling to the guidance"""

    model: Model
    scale_low: float = ui.float(
        1.0, min=0, max=10, step=0.01, tooltip="Scaling factor for low-frequency components"
    )
    scale_high: float = ui.float(
        1.25, min=0, max=10, step=0.01, tooltip="Scaling factor for high-frequency components"
    )
    freq_cutoff: int = ui.int(
        20,
        min=1,
        max=10000,
        step=1,
        tooltip="Number of frequency indices around center to consider as low-frequency",
    )

    def run(self, ctx: loom.RunContext) -> Model:
        function = FrequencyScaledGuidance(
            float(self.scale_low), float(self.scale_high), int(self.freq_cutoff)
        )
        patched = self.model.clone()
        patched.guidance = guidance_hooks_of(patched).with_pre_cfg(function)
        return patched


NODES = [FreSca]
