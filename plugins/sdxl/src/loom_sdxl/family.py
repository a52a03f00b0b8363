"""The ``sdxl`` model family: detection and loading for the generic loader nodes.

Loading follows loom-sd15's steps (memory-mapped file, config read from key shapes, exact key
coverage, modules built on the meta device, mapped tensors assigned): the UNet through
:class:`loom_sdxl.unet.SDXLUNetModel`, the VAE through sd15's ``AutoencoderKL``, CLIP-L and
OpenCLIP bigG through transformers. Missing or unexpected text-encoder keys are an error
(ComfyUI only warns and runs an uninitialised encoder). Of the :class:`~loom.types.LoadRequest`
the family reads ``memory``, ``folders``, ``tokenizer_dir``, ``embedding_dirs``, ``weight_dtype``
and ``extra_headers`` (DualCLIPLoader's second file).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from loom_sd15 import diffusers_layout
from loom_sd15.clip import build_text_encoder, materialize_buffers
from loom_sd15.convert import (
    Conversion,
    clip_conversion,
    leftover_keys,
    unet_conversion,
    vae_conversion,
)
from loom_sd15.family import TOKENIZER_METADATA, WEIGHT_DTYPES, _assign
from loom_sd15.scaled_fp8 import refuse_scaled_clip, scaled_source
from loom_sd15.tokenizer import TokenizerSource, search_dirs
from loom_sd15.vae import VAE_DTYPES, AutoencoderKL, SD15Vae

from loom.errors import ModelFileError
from loom.memory import (
    MemoryManager,
    ModelHandle,
    build_on_meta,
    is_scaled_fp8,
    open_checkpoint_tensors,
)
from loom.types import CheckpointHeader, LoadedParts, LoadRequest, ModelPart
from loom_sdxl import detect
from loom_sdxl.clip import DualTextEncoder, SDXLClip
from loom_sdxl.convert import OpenClipConversion
from loom_sdxl.model import SDXLModel
from loom_sdxl.unet import SDXLUNetModel

log = logging.getLogger(__name__)


class SDXLFamily:
    """Stable Diffusion XL: base, refiner and inpainting UNets, CLIP-L + bigG, SDXL VAE."""

    name = "sdxl"

    def detect(self, header: CheckpointHeader, part: ModelPart) -> float:
        return detect.score(header, part)

    def load(
        self, header: CheckpointHeader, part: ModelPart, request: LoadRequest = LoadRequest()
    ) -> LoadedParts:
        shapes = detect.shapes_of(header)
        state = diffusers_layout.ldm_state(header, open_checkpoint_tensors(header))
        file = header.path.name
        memory = request.memory
        if part == "text_encoder":
            headers = (header, *request.extra_headers)
            return LoadedParts(clip=self.load_text_encoders(headers, request))
        if part == "vae":
            prefix = detect.vae_prefix(shapes)
            if prefix is None:
                raise ModelFileError(f"{file} holds no VAE")
            return LoadedParts(vae=self.load_vae(state, shapes, prefix, file, memory))
        prefix = detect.unet_prefix(shapes)
        if prefix is None or not detect.is_sdxl_unet(shapes, prefix):
            raise ModelFileError(f"{file} holds no SDXL diffusion model")
        config = detect.unet_config(shapes, prefix)
        variant = detect.variant(config, shapes)
        if variant is None:
            raise ModelFileError(
                f"{file} is an SDXL-like UNet this plugin cannot run ({config.in_channels} input "
                f"channels, {config.adm_in_channels}-wide ADM input, "
                f"{len(config.channel_mult)} levels)",
                hint="supported: SDXL base, refiner and the 9-channel inpainting UNet",
            )
        model = self.load_unet(state, config, prefix, file, variant, request.weight_dtype)
        if part == "diffusion_model":
            return LoadedParts(model=model)
        conversions: list[Any] = [unet_conversion(prefix)]
        clip = vae = None
        encoders = detect.checkpoint_encoders(shapes)
        if encoders:
            clip, used = self._clip_from(state, encoders, header, request)
            conversions += used
        vae_prefix = detect.vae_prefix(shapes)
        if vae_prefix:
            conversions.append(vae_conversion(vae_prefix))
            vae = self.load_vae(state, shapes, vae_prefix, file, memory)
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
        config: Any,
        prefix: str,
        file: str,
        variant: str,
        weight_dtype: str | None = None,
    ) -> SDXLModel:
        unet = build_on_meta(SDXLUNetModel, config)
        dtype = (
            getattr(torch, WEIGHT_DTYPES[weight_dtype]) if weight_dtype in WEIGHT_DTYPES else None
        )
        conversion = unet_conversion(prefix)
        if is_scaled_fp8(state, prefix):
            conversion, state = scaled_source(unet, conversion, state, file)
            dtype = None  # already fp8 with its scales: weight_dtype does not apply (ComfyUI)
        _assign(unet, conversion, state, file, dtype)
        unet.eval()
        return SDXLModel(unet, name=f"sdxl-{variant}:{file}", refiner=variant == "refiner")

    def load_vae(
        self,
        state: Mapping[str, Any],
        shapes: Any,
        prefix: str,
        file: str,
        memory: MemoryManager | None,
    ) -> SD15Vae:
        """sd15's VAE socket value; its dtypes (bf16, fp32) keep SDXL's VAE out of fp16, where
        it overflows (NaN images), as ComfyUI does unless ``--fp16-vae`` is given."""
        config = detect.vae_config(shapes, prefix)
        vae = build_on_meta(AutoencoderKL, config)
        _assign(vae, vae_conversion(prefix), state, file)
        vae.eval()
        handle = ModelHandle(vae, name=f"sdxl-vae:{file}", supported_dtypes=VAE_DTYPES)
        return SD15Vae(handle, config, memory)

    # --- text encoders ------------------------------------------------------------------

    def load_text_encoders(
        self, headers: tuple[CheckpointHeader, ...], request: LoadRequest
    ) -> SDXLClip:
        """One or two standalone files (DualCLIPLoader type=sdxl: clip-l and clip-g)."""
        found: dict[str, tuple[CheckpointHeader, detect.EncoderLayout]] = {}
        names = " + ".join(h.path.name for h in headers)
        for header in headers:
            layout = detect.standalone_encoder(detect.shapes_of(header))
            if layout is None:
                raise ModelFileError(f"{header.path.name} holds no CLIP text encoder")
            if layout.role in found:
                raise ModelFileError(
                    f"{names}: both files are {layout.role} text encoders",
                    hint="SDXL needs one CLIP-L (clip_l) and one OpenCLIP bigG (clip_g) file",
                )
            found[layout.role] = (header, layout)
        if "clip_g" not in found:
            raise ModelFileError(
                f"{names}: no OpenCLIP bigG (clip_g) text encoder; SDXL needs one",
                hint="give DualCLIPLoader type=sdxl a clip_l and a clip_g file",
            )
        g_header, g_layout = found["clip_g"]
        g = self._encoder(open_checkpoint_tensors(g_header), g_layout, g_header.path.name)[0]
        l_module = l_layout = None
        if "clip_l" in found:
            l_header, l_layout = found["clip_l"]
            l_state = open_checkpoint_tensors(l_header)
            l_module = self._encoder(l_state, l_layout, l_header.path.name)[0]
        return self._clip(DualTextEncoder(g, l_module), g_layout, l_layout, g_header, request)

    def _encoder(
        self, state: Mapping[str, Any], layout: detect.EncoderLayout, file: str
    ) -> tuple[torch.nn.Module, Any]:
        refuse_scaled_clip(state, layout.prefix, file, _ROLE_NAMES[layout.role])
        module = build_on_meta(build_text_encoder, layout.config)
        if layout.openclip:
            conversion: Any = OpenClipConversion(f"{layout.role} text encoder", layout.prefix)
        elif layout.config.projection_dim is not None:  # transformers' WithProjection layout
            conversion = Conversion(
                f"{layout.role} text encoder",
                layout.prefix,
                skip=(r"text_model\.embeddings\.position_ids",),
            )
        else:
            conversion = clip_conversion(
                layout.prefix, hasattr(module, "text_model"), layout.has_text_model
            )
            conversion = _named(conversion, f"{layout.role} text encoder")
        _assign(module, conversion, state, file)
        materialize_buffers(module)
        return module, conversion

    def _clip_from(
        self,
        state: Mapping[str, Any],
        encoders: list[detect.EncoderLayout],
        header: CheckpointHeader,
        request: LoadRequest,
    ) -> tuple[SDXLClip, list[Any]]:
        by_role = {e.role: e for e in encoders}
        file = header.path.name
        if "clip_g" not in by_role:
            raise ModelFileError(
                f"{file}: an SDXL checkpoint without its OpenCLIP bigG text encoder "
                "(conditioner.embedders.1.model.*)",
                hint="the file may be truncated or merged badly",
            )
        g, g_conv = self._encoder(state, by_role["clip_g"], file)
        l_module = None
        conversions = [g_conv]
        if "clip_l" in by_role:
            l_module, l_conv = self._encoder(state, by_role["clip_l"], file)
            conversions.append(l_conv)
        clip = self._clip(
            DualTextEncoder(g, l_module),
            by_role["clip_g"],
            by_role.get("clip_l"),
            header,
            request,
        )
        return clip, conversions

    def _clip(
        self,
        module: DualTextEncoder,
        g_layout: detect.EncoderLayout,
        l_layout: detect.EncoderLayout | None,
        header: CheckpointHeader,
        request: LoadRequest,
    ) -> SDXLClip:
        folders = request.folders
        name = header.metadata.get(TOKENIZER_METADATA, "clip_l")
        source = TokenizerSource(name, request.tokenizer_dir, search_dirs(folders))
        embedding_dirs = request.embedding_dirs
        if embedding_dirs is None and folders is not None:
            embedding_dirs = tuple(folders.paths("embeddings"))
        handle = ModelHandle(module, name=f"sdxl-clip:{header.path.name}")
        return SDXLClip(
            handle,
            g_layout.config,
            None if l_layout is None else l_layout.config,
            source,
            list(embedding_dirs or ()),
            request.memory,
        )


#: the encoders' names in messages
_ROLE_NAMES = {"clip_l": "CLIP-L", "clip_g": "CLIP-G"}


def _named(conversion: Any, name: str) -> Any:
    import attrs

    return attrs.evolve(conversion, name=name)
