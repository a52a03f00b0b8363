"""The MODEL socket value for Flux: a :class:`loom.memory.ModelHandle` around the DiT.

``apply_model(x, sigma, cond)`` is ComfyUI's ``Flux`` model: the latent (already in model
space) goes in as it is, with the Fill/Canny/Depth concat channels appended; the timestep is
sigma; the DiT predicts velocity and ``x0 = x - sigma * v``. ``extra_conds`` turns one
conditioning entry into model inputs: ``y`` (CLIP-L pooled), ``guidance`` (dev-style models;
3.5 when the conditioning names none), ``c_concat``, ``ref_latents``, the
``ref_latents_method`` that places them (FluxKontextMultiReferenceLatentMethod) and
``attention_mask`` (an additive bias over text + image tokens, resized to the latent's token grid).
``apply_model`` hands a ControlNet's ``cond["control"]`` residuals to the DiT, and the handle's
``block_skip`` (SkipLayerGuidanceDiT) and ``rope_scale`` (ScaleROPE) options
(:mod:`loom_flux.dit_options`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from loom.errors import LoomError
from loom.memory import ModelHandle
from loom.model_sampling import ModelSampling
from loom.types import LatentFormat
from loom_flux.convert import CHECKPOINT_PREFIX
from loom_flux.dit import DEFAULT_REFERENCE_METHOD, PATCH, FluxConfig, FluxTransformer
from loom_flux.dit_options import BlockSkip, RopeScale
from loom_flux.sampling import DEV_MU, SCHNELL_MU, FluxSampling
from loom_flux.vae import FLUX_LATENT_FORMAT

#: ComfyUI's ``memory_usage_factor`` for Flux.
MEMORY_USAGE_FACTOR = 2.8
DEFAULT_GUIDANCE = 3.5


def dit_memory_estimate(input_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Activation bytes of one DiT forward on ``input_shape`` (ComfyUI's formula)."""
    area = input_shape[0] * math.prod(input_shape[2:])
    return int(area * dtype.itemsize * 0.01 * MEMORY_USAGE_FACTOR * 2**20)


def default_sampling(config: FluxConfig) -> FluxSampling:
    """The schedule without a ``ModelSamplingFlux`` node: mu 1.15 (dev) or 0 (schnell)."""
    return FluxSampling(shift=DEV_MU if config.guidance_embed else SCHNELL_MU)


class TextPrefix(Protocol):
    """Tokens a model patch puts before the DiT's text tokens (USO's style tokens)."""

    def tokens(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[batch, n, hidden]`` tokens for a model call of ``batch`` rows."""
        ...


class FluxModel(ModelHandle):
    """A Flux denoiser handle. ``module`` is the :class:`FluxTransformer`; ``text_prefix``
    (set on a clone by ``USOStyleReference``) puts tokens before the text after ``txt_in``."""

    def __init__(
        self,
        dit: FluxTransformer,
        *,
        name: str = "flux-dit",
        model_sampling: ModelSampling | None = None,
        latent_format: LatentFormat = FLUX_LATENT_FORMAT,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            dit, name=name, memory_estimator=dit_memory_estimate, compute_dtype=compute_dtype
        )
        self.comfy_prefix = "diffusion_model."
        #: where the DiT's keys sit in ComfyUI's all-in-one checkpoints
        self.checkpoint_prefix = CHECKPOINT_PREFIX
        self.model_sampling = model_sampling or default_sampling(dit.config)
        self.latent_format = latent_format
        #: blocks every forward of this handle skips (SkipLayerGuidanceDiT's perturbed pass)
        self.block_skip: BlockSkip | None = None
        #: ScaleROPE's scaling of the image position ids; None: Flux's own ids
        self.rope_scale: RopeScale | None = None
        self.text_prefix: TextPrefix | None = None

    @property
    def config(self) -> FluxConfig:
        return self.module.config

    @property
    def context_width(self) -> int:
        """The width of the text (T5) context ``txt_in`` takes
        (:class:`loom.types.TextContextModel`)."""
        return self.config.context_dim

    @property
    def load_device(self) -> torch.device:
        """Where the DiT runs (the sampler puts the latent there)."""
        return self.compute_target.device

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The DiT's weights, patches applied, as ``model.diffusion_model.*`` in ComfyUI's
        layout; a scaled-fp8 DiT keeps its fp8 weights (a patched weight requantised with its
        layer's scale) with ComfyUI's ``weight_scale`` / ``input_scale`` / ``comfy_quant``
        tensors, as ComfyUI 0.8 saves one."""
        from loom.memory import patched_tensors, quant_config_tensors

        state = patched_tensors(self) | quant_config_tensors(self.module)
        return {self.checkpoint_prefix + key: value for key, value in state.items()}

    def checkpoint_metadata(self) -> dict[str, str]:
        """None: ComfyUI writes no modelspec for Flux (a flow model names no prediction key)."""
        return {}

    def memory_required(self, shape: tuple[int, ...]) -> int:
        return self.memory_estimate(shape, torch.float32)

    @property
    def concat_channels(self) -> int:
        """Latent channels the model expects beyond the noisy latent (Fill 80, Canny 16)."""
        return self.config.in_channels // (PATCH * PATCH) - self.config.latent_channels

    def extra_conds(
        self,
        options: Mapping[str, Any],
        *,
        noise: torch.Tensor | None = None,
        denoise_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pooled = options.get("pooled_output")
        if pooled is None:
            raise LoomError(
                "Flux conditioning has no CLIP-L pooled output",
                hint="encode the prompt with a Flux text encoder (DualCLIPLoader type=flux)",
            )
        out["y"] = pooled
        if self.config.guidance_embed:
            guidance = options.get("guidance", DEFAULT_GUIDANCE)
            if guidance is not None:
                out["guidance"] = torch.tensor([float(guidance)])
        if self.concat_channels > 0 and noise is not None:
            out["c_concat"] = self._concat(options, noise, denoise_mask)
        refs = options.get("reference_latents")
        if refs:
            out["ref_latents"] = [self.process_latent_in(r) for r in refs]
            method = options.get("reference_latents_method")
            if method is not None:
                out["ref_latents_method"] = method
        mask = options.get("attention_mask")
        if mask is not None:
            if noise is not None:
                grid = (-(-noise.shape[-2] // PATCH), -(-noise.shape[-1] // PATCH))
                ref_grid = tuple(options.get("attention_mask_img_shape", (1, 1)))
                mask = resize_joint_mask(mask, ref_grid, grid)
            out["attention_mask"] = mask
        return out

    def process_latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        fmt = self.latent_format
        return (latent - fmt.shift_factor) * fmt.scale_factor

    def _concat(
        self, options: Mapping[str, Any], noise: torch.Tensor, denoise_mask: Any
    ) -> torch.Tensor:
        image = options.get("concat_latent_image")
        latent_channels = self.config.latent_channels
        inpaint = self.concat_channels > latent_channels
        if image is None:
            what = (
                "InpaintModelConditioning (pixels and mask)"
                if inpaint
                else ("InstructPixToPixConditioning (the control image)")
            )
            raise LoomError(
                f"this Flux model takes {self.concat_channels} extra input channels "
                f"({'Fill' if inpaint else 'Canny/Depth'}) but its conditioning has no image",
                hint=f"feed the positive and negative conditioning through {what}",
            )
        h, w = noise.shape[-2:]
        image = _resize(image.to(noise), h, w)
        image = _batch(self.process_latent_in(image), noise.shape[0])
        if not inpaint:
            return image
        mask = options.get("concat_mask", denoise_mask)
        if mask is None:
            mask = torch.ones_like(noise)[:, :1]
        mask = mask.to(noise).reshape(-1, *mask.shape[-3:]) if mask.ndim > 3 else mask.to(noise)
        if mask.ndim == 3:
            mask = mask[:, None]
        mask = _resize(mask.mean(dim=1, keepdim=True), h * 8, w * 8)
        b = mask.shape[0]
        mask = mask.view(b, h, 8, w, 8).permute(0, 2, 4, 1, 3).reshape(b, 64, h, w)
        return torch.cat((image, _batch(mask, noise.shape[0])), dim=1)

    def apply_model(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Mapping[str, Any]
    ) -> torch.Tensor:
        ms = self.model_sampling
        target = self.compute_target
        device, dtype = target.device, target.dtype
        sigma = sigma.to(x.device)
        xc = ms.calculate_input(sigma, x)
        if "c_concat" in cond:
            xc = torch.cat((xc, cond["c_concat"].to(xc)), dim=1)
        guidance = cond.get("guidance")
        refs = cond.get("ref_latents")
        mask = cond.get("attention_mask")
        prefix = None
        if self.text_prefix is not None:
            if mask is not None:
                raise LoomError(
                    "USOStyleReference: the model's style tokens cannot be combined with a "
                    "conditioning attention mask (StyleModelApply attn_bias)",
                    hint="apply the Redux style with strength_type multiply, or drop one",
                )
            prefix = self.text_prefix.tokens(x.shape[0], device, dtype)
        with torch.inference_mode():
            out = self.module(
                xc.to(device, dtype),
                ms.timestep(sigma).float().to(device),
                cond["c_crossattn"].to(device, dtype),
                cond["y"].to(device, dtype),
                None if guidance is None else guidance.float().to(device),
                None if not refs else [r.to(device, dtype) for r in refs],
                ref_method=cond.get("ref_latents_method", DEFAULT_REFERENCE_METHOD),
                attention_mask=None if mask is None else mask.to(device),
                control=cond.get("control"),
                skip=self.block_skip,
                rope=self.rope_scale,
                txt_prefix=prefix,
            )
        return ms.calculate_denoised(sigma, out.float().to(x.device), x)


def resize_joint_mask(
    mask: torch.Tensor, grid_in: tuple[int, int], grid_out: tuple[int, int]
) -> torch.Tensor:
    """ComfyUI's ``upscale_dit_mask``: a ``[B, T+hi*wi, T+hi*wi]`` attention bias whose image
    part is on a ``grid_in`` token grid, resized (bilinear) to ``grid_out``.

    A 1 x 1 grid (``StyleModelApply``'s placeholder) is broadcast instead: the same values
    bilinear resizing gives for finite entries, and ``-inf`` (strength 0) stays ``-inf``
    where interpolation would make NaN.
    """
    if tuple(grid_in) == tuple(grid_out):
        return mask
    if mask.ndim == 2:
        mask = mask[None]
    (hi, wi), (ho, wo) = grid_in, grid_out
    batch, text = mask.shape[0], mask.shape[1] - hi * wi

    def keys(part: torch.Tensor) -> torch.Tensor:  # [B, n, hi*wi] -> [B, n, ho*wo]
        n = part.shape[1]
        if hi * wi == 1:
            return part.expand(batch, n, ho * wo)
        grid = part.reshape(batch, n, hi, wi)
        return F.interpolate(grid, size=(ho, wo), mode="bilinear").reshape(batch, n, ho * wo)

    to_image = keys(mask[:, :text, text:])
    from_image = keys(mask[:, text:, :text].transpose(1, 2)).transpose(1, 2)
    image = keys(keys(mask[:, text:, text:]).transpose(1, 2)).transpose(1, 2)
    return torch.cat(
        (
            torch.cat((mask[:, :text, :text], to_image), dim=2),
            torch.cat((from_image, image), dim=2),
        ),
        dim=1,
    )


def _resize(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if t.shape[-2:] == (h, w):
        return t
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)


def _batch(t: torch.Tensor, n: int) -> torch.Tensor:
    if t.shape[0] == n:
        return t
    return t.repeat(-(-n // t.shape[0]), *([1] * (t.ndim - 1)))[:n]
