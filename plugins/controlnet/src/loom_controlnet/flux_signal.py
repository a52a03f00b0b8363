"""A Flux ControlNet bound to a hint image (a :class:`loom.types.ControlSignal`).

As ComfyUI's ``ControlNet.get_control`` for Flux files: inside its timestep range the hint is
resized to the latent's size x 8 (``nearest-exact``, centre crop); an InstantX file's hint is
then encoded by the apply node's VAE and put in model space (17-channel files get a mask
channel: ``ControlNetInpaintingAliMamaApply``'s inverted mask, else ones), an XLabs file's
stays in pixels. The ControlNet runs on the model-space
latent at the model's timestep with the call's ``y`` and ``guidance``; its residuals, times
``strength``, are spread over Flux's 19 double blocks (``input``) and 38 single blocks
(``output``) and summed with the previous signal's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from loom_flux.vae import FLUX_LATENT_FORMAT

from loom.errors import LoomError
from loom.resample import common_upscale
from loom.types import ControlResiduals, ControlSignal, control_context
from loom_controlnet.flux_loader import FluxControlNetModel
from loom_controlnet.flux_model import MAIN_DOUBLE_BLOCKS, MAIN_SINGLE_BLOCKS, spread
from loom_controlnet.signal import (
    HINT_UPSCALE,
    broadcast_hint,
    chained_models,
    merge,
    previous_and_active,
    resized_hint,
    scaled,
)


def encode_hint(
    vae: Any, hint: torch.Tensor, mask_channel: bool, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """A ``[B, 3, H, W]`` hint in ``[0, 1]`` -> the model-space Flux latent, plus, when
    ``mask_channel``, a channel of ``mask`` (``[B, 1, h, w]``, resized ``nearest-exact`` to the
    latent and repeated to its batch; ones without a mask)."""
    latent = vae.encode(hint.movedim(1, -1)).float()
    latent = (latent - FLUX_LATENT_FORMAT.shift_factor) * FLUX_LATENT_FORMAT.scale_factor
    if mask_channel:
        if mask is None:
            channel = torch.ones_like(latent[:, :1])
        else:
            channel = common_upscale(
                mask.float(), latent.shape[3], latent.shape[2], HINT_UPSCALE, "center"
            )
            channel = _repeat_to_batch(channel, latent.shape[0]).to(latent.device)
        latent = torch.cat((latent, channel), dim=1)
    return latent


def _repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Trimmed or tiled along dim 0 to ``batch`` items (ComfyUI's ``repeat_to_batch_size``)."""
    if tensor.shape[0] < batch:
        tensor = tensor.repeat(-(-batch // tensor.shape[0]), *([1] * (tensor.ndim - 1)))
    return tensor[:batch]


def inpainting_hint(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ControlNetInpaintingAliMamaApply``'s inputs for a mask-channel ControlNet: the IMAGE
    (``[B, H, W, C]``) with the masked part blacked out (the mask inverted, resized bilinear to
    the image and rounded), and the inverted mask (``[B, 1, h, w]``) for the extra channel."""
    keep = 1.0 - mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
    on_image = common_upscale(keep, image.shape[2], image.shape[1], "bilinear", "center").round()
    return image * on_image.movedim(1, -1), keep


@attrs.define(eq=False)
class FluxControlNetSignal:
    """A :class:`FluxControlNetModel` bound to ``hint`` (``[B, 3, H, W]`` in ``[0, 1]``),
    ``strength``, the ``start_percent`` .. ``end_percent`` part of the schedule and, for
    InstantX files, the ``vae`` that encodes the hint."""

    control: FluxControlNetModel
    hint: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: ControlSignal | None = None
    applied_by: str = "ControlNetApplyAdvanced"
    vae: Any = None
    #: the inverted inpainting mask for a mask-channel file (``ControlNetInpaintingAliMamaApply``)
    mask: torch.Tensor | None = None
    _resized: torch.Tensor | None = attrs.field(default=None, init=False)
    _encoded: torch.Tensor | None = attrs.field(default=None, init=False)

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
        context, y = control_context(cond), cond.get("y")
        self._check_model(x, context, y)
        target = self.control.handle.compute_target
        device, dtype = target.device, target.dtype
        hint = broadcast_hint(self._hint_for(x), x.shape[0], batched_number)
        guidance = cond.get("guidance")
        with torch.inference_mode():
            doubles, singles = self.control.module(
                model_sampling.calculate_input(sigma, x).to(device, dtype),
                hint.to(device, dtype),
                model_sampling.timestep(sigma).float().to(device),
                context.to(device, dtype),
                y.to(device, dtype),
                None if guidance is None else guidance.float().to(device),
                self.control.control_type,
            )
        consecutive = self.control.config.latent_input
        out = ControlResiduals(
            input=spread(doubles, MAIN_DOUBLE_BLOCKS, consecutive),
            output=spread(singles, MAIN_SINGLE_BLOCKS, consecutive),
        )
        return merge(scaled(out, self.strength), previous)

    def _hint_for(self, x: torch.Tensor) -> torch.Tensor:
        resized = resized_hint(self.hint, self._resized, x)
        if not self.control.config.latent_input:
            self._resized = resized
            return resized
        if resized is not self._resized or self._encoded is None:
            self._resized = resized
            mask_channel = self.control.config.hint_latent_channels > x.shape[1]
            self._encoded = encode_hint(self.vae, resized, mask_channel, self.mask)
        return self._encoded

    def _check_model(self, x: torch.Tensor, context: torch.Tensor, y: Any) -> None:
        """A Flux ControlNet on another family's model fails with a message naming the node,
        its input and the file, not with a shape error inside the network."""
        dit = self.control.config.dit
        problems = []
        channels = dit.in_channels // 4
        if x.shape[1] != channels:
            problems.append(f"latents of {channels} channels, the model's have {x.shape[1]}")
        if context.shape[-1] != dit.context_dim:
            problems.append(
                f"text embeddings {dit.context_dim} wide, the model's are {context.shape[-1]}"
            )
        if y is None or y.shape[-1] < dit.vec_dim:
            problems.append(
                f"a pooled-text vector of {dit.vec_dim}, which the model does not provide"
            )
        if problems:
            raise LoomError(
                f"{self.applied_by}: input 'control_net' ({self.control.file}) is a Flux "
                f"ControlNet ({self.control.config.kind}) that does not fit the model being "
                "sampled: it needs " + "; ".join(problems),
                hint="load a ControlNet made for the same model family as the checkpoint",
            )
