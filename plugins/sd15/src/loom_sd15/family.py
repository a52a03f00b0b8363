"""The ``sd15`` model family: detection and loading for the generic loader nodes.

Loading reads the file memory-mapped (:func:`loom.memory.open_safetensors`), infers each
component's config from key shapes (:mod:`loom_sd15.detect`), checks key coverage
(:mod:`loom_sd15.convert`), builds the modules on the meta device and assigns the mapped
tensors (:func:`loom.memory.load_into_module`): no random init, no copy, weights in their
stored dtype. Of the :class:`~loom.types.LoadRequest` the family reads ``folders`` (tokenizers
and embeddings), ``memory``, ``tokenizer_dir``, ``embedding_dirs`` and ``weight_dtype``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from loom.errors import ModelFileError
from loom.memory import (
    LoadPolicy,
    ModelHandle,
    build_on_meta,
    is_scaled_fp8,
    load_into_module,
    open_checkpoint_tensors,
)
from loom.types import CheckpointHeader, LoadedParts, LoadRequest, ModelPart
from loom_sd15 import detect, diffusers_layout
from loom_sd15.clip import SD15Clip, build_text_encoder, materialize_buffers
from loom_sd15.convert import (
    Conversion,
    clip_conversion,
    leftover_keys,
    unet_conversion,
    vae_conversion,
)
from loom_sd15.model import SD15Model
from loom_sd15.scaled_fp8 import refuse_scaled_clip, scaled_source
from loom_sd15.tokenizer import TOKENIZER_METADATA, TokenizerSource, search_dirs
from loom_sd15.unet import UNetModel
from loom_sd15.vae import VAE_DTYPES, AutoencoderKL, SD15Vae

log = logging.getLogger(__name__)

EXACT = LoadPolicy(missing="error", unexpected="error")
WEIGHT_DTYPES = {
    "fp8_e4m3fn": "float8_e4m3fn",
    "fp8_e4m3fn_fast": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
}


def _assign(
    module: torch.nn.Module,
    conversion: Conversion,
    state: Mapping[str, Any],
    file: str,
    dtype: torch.dtype | None = None,
) -> None:
    conversion.check(state.keys(), module.state_dict().keys(), file)
    report = load_into_module(
        module,
        conversion.view(state),
        LoadPolicy(missing="error", unexpected="error", dtype=dtype),
        source=file,
    )
    if report.left_on_meta and not all(k.endswith("position_ids") for k in report.left_on_meta):
        raise ModelFileError(
            f"{file}: tensors left without weights: {', '.join(report.left_on_meta)}"
        )


class SD15Family:
    """Stable Diffusion 1.x: LDM UNet, CLIP-L text encoder, AutoencoderKL (scale 0.18215)."""

    name = "sd15"

    def detect(self, header: CheckpointHeader, part: ModelPart) -> float:
        return detect.score(header, part)

    def load(
        self, header: CheckpointHeader, part: ModelPart, request: LoadRequest = LoadRequest()
    ) -> LoadedParts:
        shapes = detect.shapes_of(header)
        state = diffusers_layout.ldm_state(header, open_checkpoint_tensors(header))
        file = header.path.name
        memory = request.memory
        conversions: list[Conversion] = []
        model = clip = vae = None
        if part in ("checkpoint", "diffusion_model"):
            prefix = detect.unet_prefix(shapes)
            if prefix is None:
                raise ModelFileError(f"{file} holds no SD1.x diffusion model")
            conversion = unet_conversion(prefix)
            conversions.append(conversion)
            model = self.load_unet(state, shapes, prefix, file, request.weight_dtype)
        if part in ("checkpoint", "text_encoder"):
            layout = detect.clip_layout(shapes)
            if layout is not None:
                clip, conversion = self.load_clip(state, layout, header, request)
                conversions.append(conversion)
        if part in ("checkpoint", "vae"):
            prefix = detect.vae_prefix(shapes)
            if prefix is not None and (part == "vae" or prefix):
                conversion = vae_conversion(prefix)
                conversions.append(conversion)
                vae = self.load_vae(state, shapes, prefix, file, memory)
        if part == "checkpoint":
            stray = leftover_keys(shapes, conversions)
            if stray:
                log.warning(
                    "%s: %d keys belong to no part and were ignored: %s",
                    file,
                    len(stray),
                    ", ".join(stray[:8]),
                )
        return LoadedParts(model=model, clip=clip, vae=vae)

    def load_unet(
        self,
        state: Mapping[str, Any],
        shapes: detect.Shapes,
        prefix: str,
        file: str,
        weight_dtype: str | None = None,
    ) -> SD15Model:
        config = detect.unet_config(shapes, prefix)
        unet = build_on_meta(UNetModel, config)
        dtype = (
            getattr(torch, WEIGHT_DTYPES[weight_dtype]) if weight_dtype in WEIGHT_DTYPES else None
        )
        conversion = unet_conversion(prefix)
        if is_scaled_fp8(state, prefix):
            conversion, state = scaled_source(unet, conversion, state, file)
            dtype = None  # already fp8 with its scales: weight_dtype does not apply (ComfyUI)
        _assign(unet, conversion, state, file, dtype)
        unet.eval()
        return SD15Model(unet, name=f"sd15-unet:{file}")

    def load_clip(
        self,
        state: Mapping[str, Any],
        layout: detect.ClipLayout,
        header: CheckpointHeader,
        request: LoadRequest,
    ) -> tuple[SD15Clip, Conversion]:
        file = header.path.name
        refuse_scaled_clip(state, layout.prefix, file, "CLIP")
        encoder = build_on_meta(build_text_encoder, layout.config)
        conversion = clip_conversion(
            layout.prefix, hasattr(encoder, "text_model"), layout.has_text_model
        )
        _assign(encoder, conversion, state, file)
        materialize_buffers(encoder)
        name = header.metadata.get(TOKENIZER_METADATA, "clip_l")
        folders = request.folders
        source = TokenizerSource(name, request.tokenizer_dir, search_dirs(folders))
        embedding_dirs = request.embedding_dirs
        if embedding_dirs is None and folders is not None:
            embedding_dirs = tuple(folders.paths("embeddings"))
        handle = ModelHandle(encoder, name=f"sd15-clip:{file}")
        clip = SD15Clip(handle, layout.config, source, list(embedding_dirs or ()), request.memory)
        return clip, conversion

    def load_vae(
        self, state: Mapping[str, Any], shapes: detect.Shapes, prefix: str, file: str, memory: Any
    ) -> SD15Vae:
        config = detect.vae_config(shapes, prefix)
        vae = build_on_meta(AutoencoderKL, config)
        _assign(vae, vae_conversion(prefix), state, file)
        vae.eval()
        handle = ModelHandle(vae, name=f"sd15-vae:{file}", supported_dtypes=VAE_DTYPES)
        return SD15Vae(handle, config, memory)
