"""ComfyUI's Flux nodes: ``CLIPTextEncodeFlux``, ``FluxGuidance``, ``FluxDisableGuidance``,
``ModelSamplingFlux``, ``ReferenceLatent`` and ``FluxKontextImageScale``, with ComfyUI's
inputs, defaults and categories.
"""

from __future__ import annotations

from typing import Any

import loom
from loom.errors import LoomError
from loom.types import Clip, Conditioning, Image, Latent, Model

MAX_RESOLUTION = 16384
NODES_FLUX = "comfy_extras.nodes_flux"
NODES_MODEL_ADVANCED = "comfy_extras.nodes_model_advanced"
NODES_EDIT_MODEL = "comfy_extras.nodes_edit_model"

#: Kontext's preferred resolutions (width, height), ~1 megapixel, ComfyUI's list.
KONTEXT_RESOLUTIONS = (
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248),
    (880, 1184), (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832),
    (1328, 800), (1392, 752), (1456, 720), (1504, 688), (1568, 672),
)  # fmt: skip


def _with(conditioning: Conditioning, **values: Any) -> Conditioning:
    return [[tensor, {**options, **values}] for tensor, options in conditioning]


@loom.node("CLIPTextEncodeFlux", category="advanced/conditioning/flux", v3=True)
class CLIPTextEncodeFlux:
    clip: Clip
    clip_l: str = loom.ui.string(None, multiline=True, dynamic_prompts=True)
    t5xxl: str = loom.ui.string(None, multiline=True, dynamic_prompts=True)
    guidance: float = loom.ui.float(3.5, min=0.0, max=100.0, step=0.1)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        from loom.hooks import encode_scheduled

        return encode_scheduled(self.clip, self._encode)

    def _encode(self, handle: Any) -> Conditioning:
        encode = getattr(handle, "encode_flux", None)
        if encode is None:
            raise LoomError(
                "CLIPTextEncodeFlux needs Flux text encoders (T5-XXL + CLIP-L)",
                hint="load them with DualCLIPLoader type=flux or a Flux checkpoint",
            )
        return _with(encode(self.clip_l, self.t5xxl), guidance=self.guidance)


@loom.node("FluxGuidance", category="advanced/conditioning/flux", v3=True)
class FluxGuidance:
    conditioning: Conditioning
    guidance: float = loom.ui.float(3.5, min=0.0, max=100.0, step=0.1)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        return _with(self.conditioning, guidance=self.guidance)


@loom.node("FluxDisableGuidance", category="advanced/conditioning/flux", v3=True)
class FluxDisableGuidance:
    """This node completely disables the guidance embed on Flux and Flux like models"""

    conditioning: Conditioning

    def run(self, ctx: loom.RunContext) -> Conditioning:
        return _with(self.conditioning, guidance=None)


@loom.node("ModelSamplingFlux", category="advanced/model")
class ModelSamplingFlux:
    model: Model
    max_shift: float = loom.ui.float(1.15, min=0.0, max=100.0, step=0.01)
    base_shift: float = loom.ui.float(0.5, min=0.0, max=100.0, step=0.01)
    width: int = loom.ui.int(1024, min=16, max=MAX_RESOLUTION, step=8)
    height: int = loom.ui.int(1024, min=16, max=MAX_RESOLUTION, step=8)

    def run(self, ctx: loom.RunContext) -> Model:
        from loom_flux.sampling import FluxSampling, mu_for_size

        model = self.model.clone()
        mu = mu_for_size(self.width, self.height, self.max_shift, self.base_shift)
        model.model_sampling = FluxSampling(shift=mu)
        return model


@loom.node("ReferenceLatent", category="advanced/conditioning/edit_models", v3=True)
class ReferenceLatent:
    """This node sets the guiding latent for an edit model. If the model supports it you can chain multiple to set multiple reference images."""

    conditioning: Conditioning
    latent: Latent = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        if self.latent is None:
            return self.conditioning
        sample = self.latent["samples"]
        return [
            [
                tensor,
                {**options, "reference_latents": [*options.get("reference_latents", []), sample]},
            ]
            for tensor, options in self.conditioning
        ]


@loom.node(
    "FluxKontextMultiReferenceLatentMethod",
    category="advanced/conditioning/flux",
    experimental=True,
    v3=True,
)
class FluxKontextMultiReferenceLatentMethod:
    # No docstring: ComfyUI's node has no description. It records how the model places the
    # conditioning's reference latents (loom_flux.dit.reference_positions); "uxo/uno" -> "uxo".

    conditioning: Conditioning
    reference_latents_method: str = loom.ui.combo(
        ["offset", "index", "uxo/uno", "index_timestep_zero"]
    )

    def run(self, ctx: loom.RunContext) -> Conditioning:
        method = self.reference_latents_method
        if "uxo" in method or "uso" in method:
            method = "uxo"
        return [
            [tensor, {**options, "reference_latents_method": method}]
            for tensor, options in self.conditioning
        ]


@loom.node("FluxKontextImageScale", category="advanced/conditioning/flux", v3=True)
class FluxKontextImageScale:
    """This node resizes the image to one that is more optimal for flux kontext."""

    image: Image

    def run(self, ctx: loom.RunContext) -> Image:
        from loom.resample import common_upscale

        height, width = self.image.shape[1:3]
        aspect = width / height
        _, target_w, target_h = min((abs(aspect - w / h), w, h) for w, h in KONTEXT_RESOLUTIONS)
        pixels = self.image.movedim(-1, 1)
        return common_upscale(pixels, target_w, target_h, "lanczos", "center").movedim(1, -1)


NODES: tuple[tuple[type, str], ...] = (
    (CLIPTextEncodeFlux, NODES_FLUX),
    (FluxGuidance, NODES_FLUX),
    (FluxDisableGuidance, NODES_FLUX),
    (FluxKontextImageScale, NODES_FLUX),
    (FluxKontextMultiReferenceLatentMethod, NODES_FLUX),
    (ModelSamplingFlux, NODES_MODEL_ADVANCED),
    (ReferenceLatent, NODES_EDIT_MODEL),
)
