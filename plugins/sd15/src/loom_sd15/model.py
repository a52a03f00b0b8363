"""The MODEL socket value for SD1.x: a :class:`loom.memory.ModelHandle` around the UNet.

It is what loom-samplers expects of a MODEL (see ``loom_samplers.model_interface``):
``model_sampling`` (:class:`loom.model_sampling.DiscreteEps`), ``latent_format`` (scale 0.18215,
ComfyUI's SD1.5 preview factors) and ``apply_model(x, sigma, cond) -> x0``, computed as
ComfyUI's ``BaseModel.apply_model``: scale the input, look up the timestep, run the UNet on
``cond["c_crossattn"]`` (plus GLIGEN's gated layers when the entry carries text boxes,
:mod:`loom_sd15.gligen`), turn the ε prediction into x0. Being a ``ModelHandle``, it clones
cheaply (weights shared, patches per clone) and the memory manager loads it directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from loom.errors import LoomError
from loom.memory import ModelHandle
from loom.model_sampling import DiscreteEps, ModelSampling
from loom.types import LatentFormat
from loom_sd15.convert import UNET_PREFIX, unet_conversion
from loom_sd15.unet import (
    AttentionInputPatches,
    OutputBlockPatch,
    SelfAttentionReplacements,
    UNetConfig,
    UNetModel,
)
from loom_sd15.unet_hooks import InputBlockPatch, SelfAttentionTokenPatch, UNetCall
from loom_sd15.vae import SD15_RGB_FACTORS

SD15_LATENT_FORMAT = LatentFormat(
    channels=4, scale_factor=0.18215, shift_factor=0.0, downscale=8, rgb_factors=SD15_RGB_FACTORS
)

#: ComfyUI's ``memory_usage_factor`` for SD1.x: MB per latent pixel per batch item per byte.
MEMORY_USAGE_FACTOR = 1.0


def unet_memory_estimate(input_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Activation bytes of one UNet forward on ``input_shape`` (ComfyUI's ``memory_required``)."""
    area = input_shape[0] * math.prod(input_shape[2:])
    return int(area * dtype.itemsize * 0.01 * MEMORY_USAGE_FACTOR * 2**20)


class SD15Model(ModelHandle):
    """An SD1.x denoiser handle. ``module`` is the :class:`UNetModel`."""

    def __init__(
        self,
        unet: UNetModel,
        *,
        name: str = "sd15-unet",
        model_sampling: ModelSampling | None = None,
        latent_format: LatentFormat = SD15_LATENT_FORMAT,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            unet, name=name, memory_estimator=unet_memory_estimate, compute_dtype=compute_dtype
        )
        self.comfy_prefix = "diffusion_model."
        self.model_sampling = model_sampling or DiscreteEps()
        self.latent_format = latent_format
        #: :class:`loom_sd15.unet.OutputBlockPatch` functions the UNet applies (FreeU);
        #: a tuple, so clones share it until a node gives a clone its own.
        self.output_block_patches: tuple[OutputBlockPatch, ...] = ()
        #: where the UNet's keys sit in a single-file checkpoint
        self.checkpoint_prefix = UNET_PREFIX
        #: :class:`loom_sd15.unet.SelfAttentionReplacement` per block (PAG), shared by clones
        #: until a node gives a clone a new mapping; never mutated in place.
        self.self_attention_replacements: SelfAttentionReplacements = {}
        #: :class:`loom_sd15.unet.AttentionInputPatches` (hypernetworks), shared by clones
        #: until a node gives a clone new ones; never mutated in place.
        self.attention_input_patches: AttentionInputPatches | None = None
        #: :class:`loom_sd15.unet_hooks.InputBlockPatch` functions run on each input block's
        #: output before / after the skip connection keeps it (deep shrink); tuples like
        #: ``output_block_patches``
        self.input_block_patches: tuple[InputBlockPatch, ...] = ()
        self.input_block_patches_after_skip: tuple[InputBlockPatch, ...] = ()
        #: :class:`loom_sd15.unet_hooks.SelfAttentionTokenPatch` functions run around every
        #: self-attention (HyperTile, ToMe), in order
        self.self_attention_token_patches: tuple[SelfAttentionTokenPatch, ...] = ()

    @property
    def config(self) -> UNetConfig:
        return self.module.config

    @property
    def context_width(self) -> int:
        """The width of the text context the UNet's cross-attention reads
        (:class:`loom.types.TextContextModel`)."""
        return self.config.context_dim

    @property
    def load_device(self) -> torch.device:
        """Where the UNet runs (the sampler puts the latent there)."""
        return self.compute_target.device

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The UNet's weights, patches applied, as ``model.diffusion_model.*``."""
        from loom.memory import patched_tensors

        return unet_conversion(self.checkpoint_prefix).to_checkpoint(patched_tensors(self))

    def checkpoint_metadata(self) -> dict[str, str]:
        """ComfyUI names the prediction of an ε model (SD1.x has no modelspec architecture)."""
        return {"modelspec.predict_key": "epsilon"}

    def memory_required(self, shape: tuple[int, ...]) -> int:
        return self.memory_estimate(shape, torch.float32)

    def extra_conds(
        self, options: Mapping[str, Any], *, prompt_type: str = "positive", **_: Any
    ) -> dict[str, Any]:
        """A conditioning entry's GLIGEN boxes (``gligen``), checked against this UNet."""
        boxes = options.get("gligen")
        if boxes is None:
            return {}
        from loom_sd15.gligen import GligenBoxes, check_fits

        if not isinstance(boxes, GligenBoxes):
            raise LoomError(
                f"the model {self.name} got a 'gligen' conditioning option it cannot use "
                f"({type(boxes).__name__})",
                hint="add GLIGEN boxes with GLIGENTextBoxApply",
            )
        check_fits(boxes.gligen, self.module, self.name, prompt_type)
        return {"gligen": boxes}

    def unet_patches(self, sigma: torch.Tensor, cond: Mapping[str, Any]) -> dict[str, Any]:
        """The UNet ``forward`` keywords of this handle's patches for one call."""
        return {
            "output_block_patches": self.output_block_patches,
            "self_attention_replacements": self.self_attention_replacements,
            "input_block_patches": self.input_block_patches,
            "input_block_patches_after_skip": self.input_block_patches_after_skip,
            "self_attention_token_patches": self.self_attention_token_patches,
            "attention_input_patches": self.attention_input_patches,
            "call": UNetCall(sigma=sigma, cond_or_uncond=tuple(cond.get("cond_or_uncond", ()))),
        }

    def apply_model(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Mapping[str, Any]
    ) -> torch.Tensor:
        ms = self.model_sampling
        target = self.compute_target
        sigma = sigma.to(x.device)
        xc = ms.calculate_input(sigma, x)
        t = ms.timestep(sigma).float()
        context = cond["c_crossattn"]
        boxes = cond.get("gligen")
        with torch.inference_mode():
            patch = None
            if boxes is not None:
                from loom_sd15.gligen import FuserPatch

                objects = boxes.objects(x.shape[0], x.shape[2], x.shape[3])
                patch = FuserPatch(boxes.gligen, objects)
            out = self.module(
                xc.to(target.device, target.dtype),
                t.to(target.device),
                context.to(target.device, target.dtype),
                self_attention_patch=patch,
                control=cond.get("control"),
                **self.unet_patches(sigma, cond),
            )
        return ms.calculate_denoised(sigma, out.float().to(x.device), x)
