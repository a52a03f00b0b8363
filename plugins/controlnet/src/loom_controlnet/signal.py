"""A ControlNet bound to a hint image: the :class:`loom.types.ControlSignal` the apply nodes
put in conditioning, evaluated by the sampler at every model call.

As ComfyUI's ``ControlNet.get_control``: outside its timestep range a signal gives only its
previous signal's residuals; inside, the hint is resized to the latent's size x 8
(``nearest-exact``, centre crop; kept for the next call of the same size) and repeated to the
batch, the ControlNet runs on the model-space input at the model's timestep, its residuals
are scaled by ``strength`` (averaged over space for ``*_shuffle`` files) and summed with the
previous signal's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import torch

from loom.errors import LoomError
from loom.resample import common_upscale
from loom.types import ControlResiduals, ControlSignal, control_context
from loom_controlnet.loader import ControlNetModel

#: latent pixels -> image pixels of the hint (every SD1.x / SDXL ControlNet)
COMPRESSION = 8
HINT_UPSCALE = "nearest-exact"


def broadcast_hint(hint: torch.Tensor, batch: int, batched_number: int) -> torch.Tensor:
    """The hint repeated to a model call of ``batch`` rows made of ``batched_number`` chunks
    (ComfyUI's ``broadcast_image_to``): a single image broadcasts as it is."""
    if hint.shape[0] == 1:
        return hint
    per_chunk = batch // batched_number
    hint = hint[:per_chunk]
    if per_chunk > hint.shape[0]:
        whole, rest = divmod(per_chunk, hint.shape[0])
        hint = torch.cat([hint] * whole + [hint[:rest]], dim=0)
    if hint.shape[0] == batch:
        return hint
    return torch.cat([hint] * batched_number, dim=0)


def merge(
    current: ControlResiduals | None, previous: ControlResiduals | None
) -> ControlResiduals | None:
    """Residuals of two chained signals summed place by place (``None`` counts as nothing)."""
    if previous is None or current is None:
        return current if previous is None else previous

    def add(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(a)
        for i, value in enumerate(b):
            if i >= len(out):
                out.append(value)
            elif value is not None:
                out[i] = value if out[i] is None else value + out[i]
        return tuple(out)

    return ControlResiduals(
        input=add(current.input, previous.input),
        middle=add(current.middle, previous.middle),
        output=add(current.output, previous.output),
    )


def in_range(model_sampling: Any, sigma: torch.Tensor, start: float, end: float) -> bool:
    """Whether ``sigma`` lies in the ``start`` .. ``end`` percent part of the schedule."""
    high = model_sampling.percent_to_sigma(start)
    low = model_sampling.percent_to_sigma(end)
    return low <= float(sigma[0]) <= high


def chained_models(handle: Any, previous: ControlSignal | None, model: Any) -> list[Any]:
    """A signal's ``models()``: its own ``handle``, then every model of the previous signals."""
    earlier = list(previous.models(model)) if previous is not None else []
    return [handle, *earlier]


class ChainedSignal(Protocol):
    """What :func:`previous_and_active` reads of a signal: the one it was chained after and its
    part of the schedule."""

    previous: ControlSignal | None
    start_percent: float
    end_percent: float


def previous_and_active(
    signal: ChainedSignal,
    x: torch.Tensor,
    sigma: torch.Tensor,
    cond: Mapping[str, Any],
    model: Any,
    batched_number: int,
) -> tuple[ControlResiduals | None, bool]:
    """The common start of a signal's ``residuals()``: the previous signal's residuals for this
    call, and whether ``sigma`` lies in ``signal``'s ``start_percent`` .. ``end_percent`` range
    (outside it the signal gives only the previous residuals)."""
    previous = None
    if signal.previous is not None:
        previous = signal.previous.residuals(x, sigma, cond, model, batched_number)
    active = in_range(model.model_sampling, sigma, signal.start_percent, signal.end_percent)
    return previous, active


def resized_hint(hint: torch.Tensor, kept: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``hint`` resized to ``x``'s latent size x 8 (``kept`` when it already is)."""
    height, width = x.shape[2] * COMPRESSION, x.shape[3] * COMPRESSION
    if kept is not None and tuple(kept.shape[2:]) == (height, width):
        return kept
    return common_upscale(hint, width, height, HINT_UPSCALE, "center")


def scaled(out: ControlResiduals, strength: float, average: bool = False) -> ControlResiduals:
    """Every residual times ``strength`` (first averaged over space when ``average``)."""

    def scale(values: tuple[Any, ...]) -> tuple[Any, ...]:
        result = []
        for value in values:
            if value is not None:
                if average:
                    value = value.mean(dim=(2, 3), keepdim=True).expand_as(value)
                value = value * strength
            result.append(value)
        return tuple(result)

    return ControlResiduals(scale(out.input), scale(out.middle), scale(out.output))


@attrs.define(eq=False)
class ControlNetSignal:
    """A :class:`ControlNetModel` bound to ``hint`` (``[B, C, H, W]`` in ``[0, 1]``),
    ``strength`` and the ``start_percent`` .. ``end_percent`` part of the schedule.

    ``applied_by`` names the node that bound it, for errors raised while sampling.
    """

    control: ControlNetModel
    hint: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: ControlSignal | None = None
    applied_by: str = "ControlNetApplyAdvanced"
    _resized: torch.Tensor | None = attrs.field(default=None, init=False)

    def models(self, model: Any) -> list[Any]:
        return chained_models(self.control.handle, self.previous, model)

    def residuals(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: Mapping[str, Any],
        model: Any,
        batched_number: int,
    ) -> ControlResiduals | None:
        previous, active = previous_and_active(self, x, sigma, cond, model, batched_number)
        if not active:
            return previous
        model_sampling = model.model_sampling
        context = control_context(cond)
        self._check_model(x, context, cond.get("y"))
        target = self.control.handle.compute_target
        device, dtype = target.device, target.dtype
        hint = broadcast_hint(self._hint_for(x), x.shape[0], batched_number)
        y = cond.get("y")
        with torch.inference_mode():
            out = self.control.module(
                model_sampling.calculate_input(sigma, x).to(device, dtype),
                hint.to(device, dtype),
                model_sampling.timestep(sigma).to(device, dtype),
                context.to(device, dtype),
                None if y is None else y.to(device, dtype),
                self.control.control_type,
            )
        return merge(scaled(out, self.strength, self.control.global_average_pooling), previous)

    def _hint_for(self, x: torch.Tensor) -> torch.Tensor:
        self._resized = resized_hint(self.hint, self._resized, x)
        return self._resized

    def _check_model(self, x: torch.Tensor, context: torch.Tensor, y: Any) -> None:
        """A ControlNet made for another model family fails here with a message naming the
        node, its input and the file, not with a shape error deep inside the network."""
        config = self.control.config
        unet = config.unet
        problems = []
        if x.shape[1] != unet.in_channels:
            problems.append(
                f"latents of {unet.in_channels} channels, the model's have {x.shape[1]}"
            )
        if context.shape[-1] != unet.context_dim:
            problems.append(
                f"text embeddings {unet.context_dim} wide, the model's are {context.shape[-1]}"
            )
        if config.family == "sdxl" and y is None:
            problems.append("SDXL's pooled-text vector, which the model does not provide")
        if problems:
            family = "an SDXL" if config.family == "sdxl" else "an SD1.x/SD2.x"
            raise LoomError(
                f"{self.applied_by}: input 'control_net' ({self.control.file}) is {family} "
                f"ControlNet that does not fit the model being sampled: it needs "
                + "; ".join(problems),
                hint="load a ControlNet made for the same model family as the checkpoint",
            )
