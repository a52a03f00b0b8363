"""The ``flux`` model family: detection and loading for the generic loader nodes.

Files are read memory-mapped, each component's config is read off the key shapes
(:mod:`loom_flux.detect`), modules are built on the meta device and the mapped tensors
assigned: weights stay in their stored dtype (bf16, fp16, fp8) and are cast per layer.
``UNETLoader``'s ``weight_dtype`` fp8 choices round every DiT tensor to that fp8 type at load,
as ComfyUI does. The :class:`~loom.types.LoadRequest` fields read: ``folders``, ``memory``,
``weight_dtype``, ``clip_type``, ``extra_headers``, ``tokenizer_dir``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from loom_sd15 import detect as sd15_detect
from loom_sd15 import diffusers_layout
from loom_sd15.convert import Conversion, vae_conversion
from loom_sd15.family import SD15Family
from loom_sd15.scaled_fp8 import scaled_view
from loom_sd15.tokenizer import search_dirs
from loom_sd15.vae import AutoencoderKL, SD15Vae

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
from loom_flux import detect
from loom_flux.clip import FluxClip
from loom_flux.convert import DiffusersView
from loom_flux.dit import FluxTransformer
from loom_flux.model import FluxModel
from loom_flux.t5 import T5View, build_t5, find_tokenizer_dir, t5_config
from loom_flux.vae import CHECKPOINT_VAE_PREFIX, FLUX_VAE, flux_vae_prefix

log = logging.getLogger(__name__)

WEIGHT_DTYPES = {
    "fp8_e4m3fn": "float8_e4m3fn",
    "fp8_e4m3fn_fast": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
}


class _Prefixed(Mapping[str, Any]):
    """``source`` seen without ``prefix`` (only the keys under it)."""

    def __init__(self, source: Mapping[str, Any], prefix: str) -> None:
        self.source, self.prefix = source, prefix
        self._keys = [k[len(prefix) :] for k in source if k.startswith(prefix)]

    def __getitem__(self, key: str) -> Any:
        return self.source[self.prefix + key]

    def __iter__(self) -> Any:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _assign(
    module: torch.nn.Module, state: Mapping[str, Any], file: str, what: str, dtype: Any = None
) -> None:
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelFileError(
            f"{file}: the {what} weights do not match the architecture read from the file; "
            f"{len(missing)} missing keys ({', '.join(missing[:8])}), "
            f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:8])})",
            hint="the file may be truncated, merged badly, or a variant this plugin does not support",
        )
    load_into_module(
        module, state, LoadPolicy(missing="error", unexpected="error", dtype=dtype), source=file
    )


class FluxFamily:
    """Flux.1 (dev, schnell, Fill, Canny, Depth, Kontext): DiT, T5-XXL + CLIP-L, 16-channel VAE."""

    name = "flux"

    def detect(self, header: CheckpointHeader, part: ModelPart) -> float:
        return detect.score(header, part)

    def load(
        self, header: CheckpointHeader, part: ModelPart, request: LoadRequest = LoadRequest()
    ) -> LoadedParts:
        shapes = detect.shapes_of(header)
        state = diffusers_layout.ldm_state(header, open_checkpoint_tensors(header))
        file = header.path.name
        memory = request.memory
        model = clip = vae = None
        if part in ("checkpoint", "diffusion_model"):
            model = self.load_dit(state, shapes, file, request.weight_dtype)
        if part == "text_encoder":
            clip = self.load_text_encoders((header, *request.extra_headers), request)
        if part == "checkpoint":
            clip = self._checkpoint_clip(header, shapes, request)
        if part in ("checkpoint", "vae"):
            prefix = flux_vae_prefix(shapes)
            if prefix is not None:
                vae = self.load_vae(state, shapes, prefix, file, memory)
        return LoadedParts(model=model, clip=clip, vae=vae)

    def load_dit(
        self, state: Mapping[str, Any], shapes: detect.Shapes, file: str, weight_dtype: str | None
    ) -> FluxModel:
        layout = detect.dit_layout(shapes)
        if layout is None:
            raise ModelFileError(f"{file} holds no Flux diffusion model")
        config = detect.dit_config(shapes, layout)
        view = (
            DiffusersView(state, file, layout.prefix)
            if layout.diffusers
            else _Prefixed(state, layout.prefix)
        )
        dit = build_on_meta(FluxTransformer, config)
        dtype = (
            getattr(torch, WEIGHT_DTYPES[weight_dtype]) if weight_dtype in WEIGHT_DTYPES else None
        )
        if is_scaled_fp8(state, layout.prefix):
            if layout.diffusers:
                raise ModelFileError(
                    f"{file}: a scaled-fp8 Flux transformer in diffusers' layout is not supported",
                    hint="use the ComfyUI-layout file (double_blocks.*)",
                )
            view = scaled_view(dit, view, file)
            dtype = None  # already fp8 with its scales: weight_dtype does not apply (ComfyUI)
        _assign(dit, view, file, "Flux diffusion model", dtype)
        dit.eval()
        log.debug("%s: Flux DiT %s", file, config)
        return FluxModel(dit, name=f"flux-dit:{file}")

    def load_text_encoders(
        self, headers: tuple[CheckpointHeader, ...], request: LoadRequest
    ) -> FluxClip:
        clip_type = request.clip_type
        if clip_type not in (None, "flux") and len(headers) > 1:
            raise ModelFileError(
                f"DualCLIPLoader type={clip_type} cannot load the Flux text encoders "
                f"{' + '.join(h.path.name for h in headers)}",
                hint="set type to flux",
            )
        t5 = clip_l = None
        for header in headers:
            shapes = detect.shapes_of(header)
            if detect.t5_prefix(shapes) is not None:
                if t5 is not None:
                    raise ModelFileError(
                        f"{header.path.name} is a T5 text encoder, but a T5 file was already given "
                        f"({t5.name.split(':', 1)[-1]}); the other file must be CLIP-L",
                        hint="choose clip_l.safetensors as the second DualCLIPLoader file",
                    )
                t5 = self.load_t5(header, shapes, "")
            elif detect.clip_layout(shapes) is not None:
                if clip_l is not None:
                    raise ModelFileError(
                        f"{header.path.name} is a CLIP-L text encoder, but a CLIP-L file was already "
                        "given; Flux needs one T5-XXL file and one CLIP-L file",
                        hint="choose t5xxl_fp16.safetensors (or an fp8 T5) as the other file",
                    )
                clip_l = self.load_clip_l(header, shapes, request)
            else:
                raise ModelFileError(
                    f"{header.path.name} is neither a T5-XXL nor a CLIP-L text encoder"
                )
        return FluxClip(t5, self._tokenizer_dir(request), clip_l, request.memory)

    def _checkpoint_clip(
        self, header: CheckpointHeader, shapes: detect.Shapes, request: LoadRequest
    ) -> FluxClip | None:
        t5_prefix = detect.t5_prefix(shapes)
        if t5_prefix is None or detect.clip_layout(shapes) is None:
            return None
        t5 = self.load_t5(header, shapes, t5_prefix)
        clip_l = self.load_clip_l(header, shapes, request)
        return FluxClip(t5, self._tokenizer_dir(request), clip_l, request.memory)

    def load_t5(self, header: CheckpointHeader, shapes: detect.Shapes, prefix: str) -> ModelHandle:
        file = header.path.name
        state = open_checkpoint_tensors(header)
        config = t5_config(shapes, prefix)
        encoder = build_on_meta(build_t5, config)
        view: Mapping[str, Any] = T5View(state, prefix)
        if is_scaled_fp8(state, prefix):
            view = scaled_view(encoder, view, file)
        _assign(encoder, view, file, "T5 text encoder")
        return ModelHandle(encoder, name=f"flux-t5:{file}")

    def load_clip_l(
        self, header: CheckpointHeader, shapes: detect.Shapes, request: LoadRequest
    ) -> Any:
        layout = detect.clip_layout(shapes)
        state = open_checkpoint_tensors(header)
        clip, _ = SD15Family().load_clip(state, layout, header, request)
        return clip

    def load_vae(
        self, state: Mapping[str, Any], shapes: detect.Shapes, prefix: str, file: str, memory: Any
    ) -> SD15Vae:
        config = attrs.evolve(
            sd15_detect.vae_config(shapes, prefix),
            z_channels=FLUX_VAE.z_channels,
            embed_dim=FLUX_VAE.embed_dim,
            use_quant_conv=False,
        )
        vae = build_on_meta(AutoencoderKL, config)
        conversion: Conversion = vae_conversion(prefix)
        conversion.check(state.keys(), vae.state_dict().keys(), file)
        load_into_module(
            vae,
            conversion.view(state),
            LoadPolicy(missing="error", unexpected="error"),
            source=file,
        )
        vae.eval()
        out = SD15Vae(ModelHandle(vae, name=f"flux-vae:{file}"), config, memory)
        out.checkpoint_prefix = CHECKPOINT_VAE_PREFIX  # ComfyUI saves Flux's VAE as ``vae.*``
        return out

    def _tokenizer_dir(self, request: LoadRequest) -> Path:
        return find_tokenizer_dir(search_dirs(request.folders))
