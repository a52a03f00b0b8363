"""The generic loader nodes: ComfyUI's ``CheckpointLoaderSimple``, ``CheckpointLoader``,
``UNETLoader``, ``CLIPLoader``, ``DualCLIPLoader`` and ``VAELoader``.

None of them knows a model family. Each resolves the chosen file in its model folder,
reads the safetensors header (:mod:`loom.safetensors_header`), asks the registered families which
one recognises the file, and lets that family load the part. Combo lists are read from
the model folders whenever ``/object_info`` is asked, so new files show up without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import yaml

import loom
from loom.errors import ModelFileError
from loom.executor.context import RunContext
from loom.family_detection import detect_common_family, detect_family
from loom.folders import ModelFileChoices
from loom.safetensors_header import read_header
from loom.types import CheckpointHeader, Clip, LoadedParts, LoadRequest, Model, ModelPart, Vae

log = logging.getLogger(__name__)

#: ``python_module`` ComfyUI reports for the nodes defined in its ``nodes.py``.
COMFY_MODULE = "nodes"

UNET_WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]

#: ``CLIPLoader``'s ``type`` values, in ComfyUI 0.8's order. The value reaches the family
#: as ``LoadRequest.clip_type``; core does not interpret it.
CLIP_TYPES = [
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
    "flux2",
    "ovis",
]

#: ``DualCLIPLoader``'s ``type`` values, in ComfyUI 0.8's order.
DUAL_CLIP_TYPES = [
    "sdxl",
    "sd3",
    "flux",
    "hunyuan_video",
    "hidream",
    "hunyuan_image",
    "hunyuan_video_15",
    "kandinsky5",
    "kandinsky5_image",
    "ltxv",
    "newbie",
]

CLIP_DEVICES = ["default", "cpu"]


def model_files(key: str) -> ModelFileChoices:
    """A live combo source: the files in model folder ``key`` (empty without folders)."""
    return ModelFileChoices(key)


# --- shared loading steps --------------------------------------------------------------

_NEEDS = "model folders and model families"


def resolve_file(ctx: RunContext, key: str, filename: str) -> Path:
    """The path of combo value ``filename`` in model folder ``key``.

    :raises ModelFileError: no such file in any of the folder's directories (ComfyUI's
        message, with the directories searched as the hint).
    """
    return ctx.require_runtime(_NEEDS).folders.require(key, filename)


def load_part(
    ctx: RunContext,
    key: str,
    filename: str,
    part: ModelPart,
    request: LoadRequest = LoadRequest(),
    extra_files: tuple[str, ...] = (),
) -> tuple[CheckpointHeader, LoadedParts]:
    """Resolve, read, detect and load: the steps every loader node shares.

    ``extra_files`` (more names in the same folder) are combined with the first file into
    one part; the family receives their headers as ``request.extra_headers``, and the
    runtime's model folders and memory manager in ``request``.
    """
    runtime = ctx.require_runtime(_NEEDS)
    headers = [read_header(resolve_file(ctx, key, name)) for name in (filename, *extra_files)]
    if len(headers) == 1:
        family = detect_family(runtime.registry, headers[0], part)
    else:
        family = detect_common_family(runtime.registry, headers, part)
    request = attrs.evolve(
        request,
        extra_headers=tuple(headers[1:]),
        folders=runtime.folders,
        memory=runtime.memory,
    )
    started = time.perf_counter()
    parts = family.load(headers[0], part, request)
    size_mb = sum(h.path.stat().st_size for h in headers) / 2**20
    log.info(
        "loaded %s %s (%.1f MB) with model family %s in %.2f s",
        part.label,
        " + ".join(h.path.name for h in headers),
        size_mb,
        family.name,
        time.perf_counter() - started,
    )
    return headers[0], parts


def _require(value: Any, header: CheckpointHeader, what: str, family_hint: str) -> Any:
    if value is None:
        raise ModelFileError(f"{header.path.name} does not contain a {what}", hint=family_hint)
    return value


# --- nodes -----------------------------------------------------------------------------


@loom.outputs
class CheckpointParts:
    model: Model = loom.output(name="MODEL", tooltip="The model used for denoising latents.")
    clip: Clip = loom.output(name="CLIP", tooltip="The CLIP model used for encoding text prompts.")
    vae: Vae = loom.output(
        name="VAE",
        tooltip="The VAE model used for encoding and decoding images to and from latent space.",
    )


@loom.node("CheckpointLoaderSimple", category="loaders", display_name="Load Checkpoint")
class CheckpointLoaderSimple:
    """Loads a diffusion model checkpoint, diffusion models are used to denoise latents."""

    ckpt_name: str = loom.ui.combo(
        model_files("checkpoints"), tooltip="The name of the checkpoint (model) to load."
    )

    def run(self, ctx: loom.RunContext) -> CheckpointParts:
        header, parts = load_part(ctx, "checkpoints", self.ckpt_name, ModelPart.CHECKPOINT)
        _require(
            parts.model,
            header,
            "diffusion model",
            "a checkpoint must hold at least the diffusion model; load a text encoder "
            "or VAE alone with CLIPLoader or VAELoader",
        )
        # Like ComfyUI, a checkpoint without a text encoder or VAE still loads: the part is
        # None and the node that uses it (CLIPTextEncode, VAEDecode) reports it.
        for name, value in (("text encoder", parts.clip), ("VAE", parts.vae)):
            if value is None:
                log.warning("%s holds no %s; that output is empty", header.path.name, name)
        return CheckpointParts(model=parts.model, clip=parts.clip, vae=parts.vae)


def read_model_config(ctx: RunContext, config_name: str, where: str) -> dict[str, Any]:
    """The YAML mapping of ``config_name`` in ``models/configs`` (ComfyUI's LDM configs).

    :raises ModelFileError: missing, unreadable or not a YAML mapping (``where`` names the
        node and input).
    """
    path = resolve_file(ctx, "configs", config_name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelFileError(f"{where} ({path.name}) is not a readable YAML file: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"{where} ({path.name}) does not hold a YAML mapping")
    return data


def config_parameterization(config: dict[str, Any]) -> str:
    """``model.params.parameterization`` of an LDM config (``eps`` when absent)."""
    model = config.get("model")
    params = model.get("params") if isinstance(model, dict) else None
    value = params.get("parameterization") if isinstance(params, dict) else None
    return str(value) if value is not None else "eps"


# ComfyUI gives CheckpointLoader no description; a class comment keeps /object_info's empty.
# ComfyUI builds the model from the config; Loom's families detect the architecture from the
# weights (as CheckpointLoaderSimple does), so the config is read only to refuse what the
# weights cannot say: a v-prediction config.
@loom.node(
    "CheckpointLoader",
    category="advanced/loaders",
    display_name="Load Checkpoint With Config (DEPRECATED)",
    deprecated=True,
)
class CheckpointLoader:
    config_name: str = loom.ui.combo(model_files("configs"))
    ckpt_name: str = loom.ui.combo(model_files("checkpoints"))

    def run(self, ctx: loom.RunContext) -> CheckpointParts:
        where = "CheckpointLoader: input 'config_name'"
        config = read_model_config(ctx, self.config_name, where)
        parameterization = config_parameterization(config)
        if parameterization != "eps":
            raise ModelFileError(
                f"{where} ({self.config_name}) asks for {parameterization!r} parameterization; "
                "Loom takes the model from the checkpoint's weights, which predict noise (eps)",
                hint="load the checkpoint with CheckpointLoaderSimple and set the prediction "
                "with ModelSamplingDiscrete",
            )
        return CheckpointLoaderSimple(ckpt_name=self.ckpt_name).run(ctx)


# ComfyUI gives UNETLoader no description; a class comment keeps /object_info's empty.
@loom.node("UNETLoader", category="advanced/loaders", display_name="Load Diffusion Model")
class UNETLoader:
    unet_name: str = loom.ui.combo(model_files("diffusion_models"))
    weight_dtype: str = loom.ui.combo(UNET_WEIGHT_DTYPES)

    def run(self, ctx: loom.RunContext) -> Model:
        header, parts = load_part(
            ctx,
            "diffusion_models",
            self.unet_name,
            ModelPart.DIFFUSION_MODEL,
            LoadRequest(weight_dtype=self.weight_dtype),
        )
        return _require(
            parts.model,
            header,
            "diffusion model",
            "choose the file in UNETLoader only if it is a diffusion model",
        )


@loom.node("CLIPLoader", category="advanced/loaders", display_name="Load CLIP")
class CLIPLoader:
    """[Recipes]

    stable_diffusion: clip-l
    stable_cascade: clip-g
    sd3: t5 xxl/ clip-g / clip-l
    stable_audio: t5 base
    mochi: t5 xxl
    cosmos: old t5 xxl
    lumina2: gemma 2 2B
    wan: umt5 xxl
     hidream: llama-3.1 (Recommend) or t5
    omnigen2: qwen vl 2.5 3B
    """

    clip_name: str = loom.ui.combo(model_files("text_encoders"))
    type: str = loom.ui.combo(CLIP_TYPES)
    device: str = loom.ui.combo(CLIP_DEVICES, optional=True, advanced=True)

    def run(self, ctx: loom.RunContext) -> Clip:
        request = LoadRequest(clip_type=self.type, device=self.device or "default")
        header, parts = load_part(
            ctx, "text_encoders", self.clip_name, ModelPart.TEXT_ENCODER, request
        )
        return _require(
            parts.clip, header, "text encoder", "choose a text encoder file (models/text_encoders)"
        )


@loom.node("DualCLIPLoader", category="advanced/loaders")
class DualCLIPLoader:
    """[Recipes]

    sdxl: clip-l, clip-g
    sd3: clip-l, clip-g / clip-l, t5 / clip-g, t5
    flux: clip-l, t5
    hidream: at least one of t5 or llama, recommended t5 and llama
    hunyuan_image: qwen2.5vl 7b and byt5 small
    """

    clip_name1: str = loom.ui.combo(model_files("text_encoders"))
    clip_name2: str = loom.ui.combo(model_files("text_encoders"))
    type: str = loom.ui.combo(DUAL_CLIP_TYPES)
    device: str = loom.ui.combo(CLIP_DEVICES, optional=True, advanced=True)

    def run(self, ctx: loom.RunContext) -> Clip:
        request = LoadRequest(clip_type=self.type, device=self.device or "default")
        header, parts = load_part(
            ctx,
            "text_encoders",
            self.clip_name1,
            ModelPart.TEXT_ENCODER,
            request,
            extra_files=(self.clip_name2,),
        )
        return _require(
            parts.clip,
            header,
            "text encoder",
            "choose two text encoder files (models/text_encoders)",
        )


@loom.node("VAELoader", category="loaders", display_name="Load VAE")
class VAELoader:
    vae_name: str = loom.ui.combo(model_files("vae"))

    def run(self, ctx: loom.RunContext) -> Vae:
        header, parts = load_part(ctx, "vae", self.vae_name, ModelPart.VAE)
        return _require(parts.vae, header, "VAE", "choose a VAE file (models/vae)")


NODES = (
    CheckpointLoaderSimple,
    CheckpointLoader,
    UNETLoader,
    CLIPLoader,
    DualCLIPLoader,
    VAELoader,
)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
