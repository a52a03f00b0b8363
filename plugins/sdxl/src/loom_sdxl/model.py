"""The MODEL socket value for SDXL: sd15's denoiser handle plus the ADM vector ``y``.

:meth:`SDXLModel.extra_conds` is ComfyUI's ``SDXL.encode_adm`` / ``SDXLRefiner.encode_adm``:
``y`` = pooled ‖ Timestep(256) embeddings of ``[height, width, crop_h, crop_w, target_height,
target_width]`` (base) or ``[height, width, crop_h, crop_w, aesthetic_score]`` (refiner; 6.0
for positive prompts, 2.5 for negative ones by default). Sizes a conditioning does not carry
come from the latent (its size × 8), crops default to 0 and targets to the size. A 9-channel
inpainting UNet also gets ``c_concat`` (mask ‖ masked latent), as ComfyUI's ``concat_cond``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from loom_sd15.model import SD15Model
from loom_sd15.unet_blocks import timestep_embedding

from loom.errors import LoomError
from loom.model_sampling import ModelSampling
from loom.resample import common_upscale
from loom.types import LatentFormat
from loom_sdxl.unet import SDXLUNetConfig, SDXLUNetModel

#: ComfyUI's SDXL latent preview factors (``latent_formats.SDXL``).
SDXL_RGB_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_RGB_BIAS = (0.1084, -0.0175, -0.0011)
SDXL_LATENT_FORMAT = LatentFormat(
    channels=4,
    scale_factor=0.13025,
    shift_factor=0.0,
    downscale=8,
    rgb_factors=SDXL_RGB_FACTORS,
    rgb_bias=SDXL_RGB_BIAS,
)
#: Playground v2.5's latent format (an SDXL UNet trained with EDM on normalised latents): the
#: per-channel mean and std of its VAE's latents, from the ``latents_mean`` / ``latents_std`` of
#: ``playgroundai/playground-v2.5-1024px-aesthetic``'s diffusers scheduler/VAE config, scale 0.5;
#: ComfyUI's ``latent_formats.SDXL_Playground_2_5`` preview factors (no bias).
PLAYGROUND_V2_5_LATENT_FORMAT = LatentFormat(
    channels=4,
    scale_factor=0.5,
    downscale=8,
    rgb_factors=(
        (0.3920, 0.4054, 0.4549),
        (-0.2634, -0.0196, 0.0653),
        (0.0568, 0.1687, -0.0755),
        (-0.3112, -0.2359, -0.2076),
    ),
    latents_mean=(-1.6574, 1.886, -1.383, 2.5155),
    latents_std=(8.4927, 5.9022, 6.5498, 5.2299),
)
#: Other latent formats an SDXL UNet is trained with, by ComfyUI's sampling name.
LATENT_FORMAT_VARIANTS = {"edm_playground_v2.5": PLAYGROUND_V2_5_LATENT_FORMAT}
SIZE_EMBED_DIM = 256
BASE_SIZE_FIELDS = 6
REFINER_SIZE_FIELDS = 5


def size_embedding(values: list[float]) -> torch.Tensor:
    """``[1, 256 * len(values)]``: each value's sinusoidal embedding, in order."""
    return timestep_embedding(torch.tensor(values, dtype=torch.float32), SIZE_EMBED_DIM).reshape(
        1, -1
    )


def adm_vector(
    pooled: torch.Tensor, options: Mapping[str, Any], *, refiner: bool, negative: bool
) -> torch.Tensor:
    """ComfyUI's ``encode_adm``: pooled ‖ size (and aesthetic score) embeddings."""
    width = options.get("width", 768)
    height = options.get("height", 768)
    crop_w = options.get("crop_w", 0)
    crop_h = options.get("crop_h", 0)
    if refiner:
        score = options.get("aesthetic_score", 2.5 if negative else 6.0)
        values = [height, width, crop_h, crop_w, score]
    else:
        values = [
            height,
            width,
            crop_h,
            crop_w,
            options.get("target_height", height),
            options.get("target_width", width),
        ]
    flat = size_embedding([float(v) for v in values]).repeat(pooled.shape[0], 1)
    return torch.cat([pooled.float().to(flat.device), flat], dim=1)


class SDXLModel(SD15Model):
    """An SDXL denoiser handle. ``module`` is the :class:`SDXLUNetModel`."""

    def __init__(
        self,
        unet: SDXLUNetModel,
        *,
        name: str = "sdxl-unet",
        refiner: bool = False,
        model_sampling: ModelSampling | None = None,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            unet,  # type: ignore[arg-type]
            name=name,
            model_sampling=model_sampling,
            latent_format=SDXL_LATENT_FORMAT,
            compute_dtype=compute_dtype,
        )
        self.refiner = refiner

    @property
    def config(self) -> SDXLUNetConfig:  # type: ignore[override]
        return self.module.config

    def latent_format_variant(self, name: str) -> LatentFormat | None:
        """Playground v2.5's per-channel format for ``"edm_playground_v2.5"``
        (:class:`loom.types.LatentFormatVariants`)."""
        return LATENT_FORMAT_VARIANTS.get(name)

    def checkpoint_metadata(self) -> dict[str, str]:
        """ComfyUI's modelspec architecture for SDXL base (inpainting included) or refiner,
        and the ε prediction key."""
        kind = "refiner" if self.refiner else "base"
        return {
            "modelspec.architecture": f"stable-diffusion-xl-v1-{kind}",
            "modelspec.predict_key": "epsilon",
        }

    @property
    def size_fields(self) -> int:
        return REFINER_SIZE_FIELDS if self.refiner else BASE_SIZE_FIELDS

    def extra_conds(
        self,
        options: Mapping[str, Any],
        *,
        noise: torch.Tensor | None = None,
        latent_image: torch.Tensor | None = None,
        denoise_mask: torch.Tensor | None = None,
        prompt_type: str = "positive",
        **_: Any,
    ) -> dict[str, Any]:
        """``y`` for this conditioning entry (and ``c_concat`` for inpainting UNets)."""
        sizes = dict(options)
        if noise is not None and noise.ndim >= 4:
            sizes.setdefault("width", noise.shape[3] * 8)
            sizes.setdefault("height", noise.shape[2] * 8)
        pooled = options.get("pooled_output")
        kind = "refiner" if self.refiner else "base"
        if pooled is None:
            raise LoomError(
                f"the SDXL {kind} model got a conditioning without a pooled text vector",
                hint="encode the prompt with an SDXL CLIP (CheckpointLoaderSimple's CLIP output "
                "of an SDXL checkpoint, or DualCLIPLoader type=sdxl)",
            )
        self._check_pooled_width(pooled)
        out: dict[str, Any] = {
            "y": adm_vector(pooled, sizes, refiner=self.refiner, negative=prompt_type == "negative")
        }
        if self.config.in_channels == 9:
            out["c_concat"] = self._inpaint_concat(options, noise, latent_image, denoise_mask)
        return out

    def _check_pooled_width(self, pooled: torch.Tensor) -> None:
        """``y`` is the pooled text vector and the size embeddings: a pooled vector of another
        width would fail inside ``label_emb``. (The text context's width is checked by the
        sampler nodes, :func:`loom.input_checks.check_text_context`.)"""
        expected_y = self.config.adm_in_channels
        sizes = SIZE_EMBED_DIM * self.size_fields
        if pooled.shape[-1] + sizes == expected_y:
            return
        kind = "refiner" if self.refiner else "base"
        raise LoomError(
            f"the SDXL {kind} model ({self.name}) builds its {expected_y}-wide ADM vector from "
            f"a {expected_y - sizes}-wide pooled text vector and {self.size_fields} size "
            f"embeddings, but this conditioning has a {pooled.shape[-1]}-wide pooled vector",
            hint="SDXL base and refiner need the CLIP of their own checkpoint: a refiner takes "
            "CLIPTextEncodeSDXLRefiner on the refiner's CLIP, the base CLIPTextEncodeSDXL or "
            "CLIPTextEncode on the base's",
        )

    def _inpaint_concat(
        self,
        options: Mapping[str, Any],
        noise: torch.Tensor | None,
        latent_image: torch.Tensor | None,
        denoise_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """ComfyUI's ``concat_cond`` for inpainting UNets: mask ‖ masked-image latent.

        The image is the conditioning's ``concat_latent_image`` (InpaintModelConditioning;
        brought into model space here) or else the sampled latent (already in model space);
        the mask is the conditioning's ``concat_mask``, else the latent's noise mask. With no
        mask at all the model sees "inpaint everything": a mask of ones and the latent of a
        blank image, whatever image was given.
        """
        if noise is None:
            raise LoomError(f"the SDXL inpainting model ({self.name}) was called without noise")
        batch, size = noise.shape[0], noise.shape[-2:]
        mask = options.get("concat_mask", denoise_mask)
        if mask is None:
            ones = torch.ones_like(noise)[:, :1]
            return torch.cat([ones, _blank_inpaint_latent(noise)], dim=1)
        image = options.get("concat_latent_image")
        if image is not None:
            image = self.latent_format.process_in(image.to(noise))
        elif latent_image is not None:
            image = latent_image.to(noise)
        else:
            raise LoomError(
                f"the SDXL inpainting model ({self.name}) got a mask but no image to inpaint",
                hint="feed the conditioning through InpaintModelConditioning, or sample a "
                "latent from VAEEncodeForInpaint",
            )
        if image.shape[1:] != noise.shape[1:]:
            image = common_upscale(image, size[1], size[0], "bilinear", "center")
        mask = mask.to(noise)
        if mask.ndim == noise.ndim:
            mask = mask[:, :1]
        mask = mask.reshape((-1, 1, *mask.shape[-2:]))
        if mask.shape[-2:] != size:
            mask = common_upscale(mask, size[1], size[0], "bilinear", "center")
        return torch.cat([_to_batch(mask.round(), batch), _to_batch(image, batch)], dim=1)

    def apply_model(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Mapping[str, Any]
    ) -> torch.Tensor:
        ms = self.model_sampling
        target = self.compute_target
        device, dtype = target.device, target.dtype
        sigma = sigma.to(x.device)
        xc = ms.calculate_input(sigma, x)
        concat = cond.get("c_concat")
        if concat is not None:
            xc = torch.cat([xc, concat.to(xc.device, xc.dtype)], dim=1)
        t = ms.timestep(sigma).float()
        context = cond["c_crossattn"]
        y = cond["y"]
        with torch.inference_mode():
            out = self.module(
                xc.to(device, dtype),
                t.to(device),
                context.to(device, dtype),
                y.to(device, dtype),
                control=cond.get("control"),
                **self.unet_patches(sigma, cond),
            )
        return ms.calculate_denoised(sigma, out.float().to(x.device), x)


#: The latent of an all-zero (mid-grey after decoding) image, per SD latent channel: what an
#: inpainting UNet is shown as the masked image when no mask is given (ComfyUI's values).
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


def _blank_inpaint_latent(like: torch.Tensor) -> torch.Tensor:
    scale = torch.tensor(BLANK_INPAINT_LATENT, dtype=like.dtype, device=like.device)
    return torch.ones_like(like) * scale.reshape(1, -1, *[1] * (like.ndim - 2))


def _to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    if tensor.shape[0] == batch:
        return tensor
    repeats = -(-batch // tensor.shape[0])
    return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch]
