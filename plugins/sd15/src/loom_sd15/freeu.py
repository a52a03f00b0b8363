"""FreeU (Si et al. 2023, arXiv:2309.11497) for the SD1.x / SDXL UNet: FreeU and FreeU_V2.

At the two decoder stages with ``4x`` and ``2x`` the UNet's ``model_channels``, the first half
of the decoder features is scaled by a backbone factor ``b`` (V2: modulated by the features'
normalised channel mean) and the skip connection's lowest spatial frequency (the centre
``2 x 2`` of its shifted 2-D spectrum) by ``s``: ComfyUI's ``comfy_extras/nodes_freelunch.py``
rule, applied through the UNet's :class:`loom_sd15.unet.OutputBlockPatch` hook.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

import loom
from loom.errors import LoomError
from loom.types import Model

ui = loom.ui
log = logging.getLogger(__name__)


def fourier_filter(x: Any, threshold: int, scale: float) -> Any:
    """``x`` with the centre ``2 threshold`` square of its shifted spectrum times ``scale``
    (computed in float32, returned in ``x``'s dtype)."""
    import torch

    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    batch, channels, height, width = spectrum.shape
    mask = torch.ones((batch, channels, height, width), device=x.device)
    row, col = height // 2, width // 2
    mask[..., row - threshold : row + threshold, col - threshold : col + threshold] = scale
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


def _filtered_skip(skip: Any, scale: float) -> Any:
    try:
        return fourier_filter(skip, 1, scale)
    except RuntimeError:  # a device without these FFTs: on the CPU
        log.warning("FreeU: no FFT on %s, filtering on the CPU", skip.device)
        return fourier_filter(skip.cpu(), 1, scale).to(skip.device)


@attrs.frozen
class FreeUPatch:
    """The FreeU output-block rule (an :class:`loom_sd15.unet.OutputBlockPatch`).

    ``scales`` maps a decoder width (channels of ``h``) to its ``(b, s)``; ``adaptive``
    (FreeU_V2) scales the backbone by ``(b - 1) * m + 1`` with ``m`` the channel mean of
    ``h`` min-max normalised per item, rather than by ``b``.
    """

    scales: dict[int, tuple[float, float]]
    adaptive: bool = False

    def __call__(self, h: Any, skip: Any) -> tuple[Any, Any]:
        scale = self.scales.get(int(h.shape[1]))
        if scale is None:
            return h, skip
        backbone, skip_scale = scale
        half = h.shape[1] // 2
        factor: Any = backbone
        if self.adaptive:
            mean = h.mean(1, keepdim=True)
            flat = mean.reshape(mean.shape[0], -1)
            low = flat.min(dim=-1).values.view(-1, 1, 1, 1)
            high = flat.max(dim=-1).values.view(-1, 1, 1, 1)
            factor = (backbone - 1) * ((mean - low) / (high - low)) + 1
        h = h.clone()
        h[:, :half] = h[:, :half] * factor
        return h, _filtered_skip(skip, skip_scale)


def _patched(model: Model, node: str, b1: float, b2: float, s1: float, s2: float, v2: bool):
    config = getattr(model, "config", None)
    channels = getattr(config, "model_channels", None)
    if channels is None or not hasattr(model, "output_block_patches"):
        raise LoomError(
            f"{node}: the model {getattr(model, 'name', type(model).__name__)} is not a UNet "
            "with output blocks",
            hint="FreeU applies to SD1.x and SDXL models",
        )
    rule = FreeUPatch({channels * 4: (b1, s1), channels * 2: (b2, s2)}, adaptive=v2)
    patched = model.clone()
    patched.output_block_patches = (*model.output_block_patches, rule)
    return patched


@loom.node("FreeU", category="model_patches/unet", v3=True)
class FreeU:
    model: Model
    b1: float = ui.float(1.1, min=0.0, max=10.0, step=0.01)
    b2: float = ui.float(1.2, min=0.0, max=10.0, step=0.01)
    s1: float = ui.float(0.9, min=0.0, max=10.0, step=0.01)
    s2: float = ui.float(0.2, min=0.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        return _patched(self.model, "FreeU", self.b1, self.b2, self.s1, self.s2, v2=False)


@loom.node("FreeU_V2", category="model_patches/unet", v3=True)
class FreeU_V2:
    model: Model
    b1: float = ui.float(1.3, min=0.0, max=10.0, step=0.01)
    b2: float = ui.float(1.4, min=0.0, max=10.0, step=0.01)
    s1: float = ui.float(0.9, min=0.0, max=10.0, step=0.01)
    s2: float = ui.float(0.2, min=0.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        return _patched(self.model, "FreeU_V2", self.b1, self.b2, self.s1, self.s2, v2=True)


NODES = [FreeU, FreeU_V2]
