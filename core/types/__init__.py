"""The data that flows between nodes, and the protocols model plugins implement.

Socket types (used as annotations on declarative nodes; the string is the wire type):

``Image`` (``IMAGE``)
    float tensor ``[B, H, W, C]`` in ``[0, 1]``, C = 3 (RGB) or 4, on CPU between nodes.
``Mask`` (``MASK``)
    float tensor ``[B, H, W]`` (a ``[H, W]`` mask is accepted and treated as batch 1).
``Latent`` (``LATENT``)
    dict with ``samples`` (``[B, C, H, W]``), optional ``noise_mask`` (``[B|1, 1|H, H, W]``)
    and ``batch_index`` (list of ints: which seed-stream index each item takes).
``Conditioning`` (``CONDITIONING``)
    list of ``[tensor, options]`` pairs: the text embedding ``[B, T, D]`` and a dict of
    options (``pooled_output``, ``area``, ``mask``, ``strength``, ``timestep_start`` ...).
``Model`` / ``Clip`` / ``Vae`` (``MODEL`` / ``CLIP`` / ``VAE``)
    handles implementing :class:`ModelLike`, :class:`ClipLike` and :class:`VaeLike`.
``ControlNet`` (``CONTROL_NET``)
    a control model (ControlNet, T2I-Adapter) not yet bound to a hint image; the apply nodes
    bind it and put the resulting :class:`ControlSignal` in a conditioning entry's options
    under ``"control"`` (ComfyUI's key).

A conditioning option whose value runs models of its own while sampling (a ControlSignal,
GLIGEN's boxes) implements :class:`NeedsModels`: the sampler loads those handles through the
memory manager together with the sampled model.

The sampler contract (:class:`Sampler`, :class:`Scheduler`, :class:`Denoiser`,
:class:`UncondDenoiser`, :class:`NoiseSource`, :class:`Step`, :class:`SamplerInfo`) is defined
in :mod:`loom.samplers` and re-exported here.

Torch is imported lazily: annotations here are ``Annotated[Any, Socket(...)]`` so that
declaring nodes never imports torch.

The names live in modules by idea (:mod:`loom.types.sockets`, :mod:`loom.types.handles`,
:mod:`loom.types.latents`, :mod:`loom.types.loading`, :mod:`loom.types.adapters`,
:mod:`loom.types.control`, :mod:`loom.types.web`); plugins import them from ``loom.types``,
the public module.
"""

from __future__ import annotations

# Not public (outside __all__), not used here: importable from loom.types as when it was
# one module, for code that took them from there.
import enum  # noqa: F401
from collections.abc import Callable, Mapping, Sequence  # noqa: F401
from pathlib import Path  # noqa: F401
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, runtime_checkable  # noqa: F401

import attrs  # noqa: F401

# the sampler contract, defined in loom.samplers and re-exported as part of the shared types
from loom.samplers import (
    CFGFunction,
    CFGStep,
    CondBatchFunction,
    CondBatchStep,
    DenoiseMaskFunction,
    DenoiseMaskStep,
    Denoiser,
    GuidanceHooks,
    NoiseSampler,
    NoiseSource,
    PostCFGFunction,
    PostCFGStep,
    PreCFGFunction,
    PreCFGStep,
    RegisteredSampler,
    Sampler,
    SamplerInfo,
    Scheduler,
    Step,
    StepCallback,
    UncondDenoiser,
)
from loom.types.adapters import AdapterKeyMap, AdapterTarget, WeightAdapter, WeightSlice
from loom.types.control import (
    CONTROL_CONTEXT_INPUT,
    CONTROL_CROSS_ATTN_OPTION,
    CONTROL_POOLED_OPTION,
    ControlResiduals,
    ControlSignal,
    NeedsModels,
    control_context,
)
from loom.types.handles import (
    CheckpointModel,
    CheckpointPart,
    ClipLike,
    LatentOperationFunction,
    ModelLike,
    SavableTextEncoders,
    TextContextModel,
    TokenizerOptions,
    TokenizerPadding,
    VaeLike,
)
from loom.types.latents import LatentFormat, LatentFormatVariants
from loom.types.loading import (
    CheckpointHeader,
    LoadedParts,
    LoadRequest,
    ModelFamily,
    ModelPart,
    TensorInfo,
)
from loom.types.sockets import (
    WIDGET_TYPES,
    AnyValue,
    Clip,
    ClipVision,
    Conditioning,
    ControlNet,
    Guider,
    Image,
    Latent,
    LatentOperation,
    Mask,
    Model,
    Noise,
    SamplerRef,
    Sigmas,
    Socket,
    Vae,
)
from loom.types.web import WebServer

__all__ = [
    "CONTROL_CONTEXT_INPUT",
    "CONTROL_CROSS_ATTN_OPTION",
    "CONTROL_POOLED_OPTION",
    "WIDGET_TYPES",
    "AdapterKeyMap",
    "AdapterTarget",
    "AnyValue",
    "CFGFunction",
    "CFGStep",
    "CheckpointHeader",
    "CheckpointModel",
    "CheckpointPart",
    "Clip",
    "ClipLike",
    "ClipVision",
    "CondBatchFunction",
    "CondBatchStep",
    "Conditioning",
    "ControlNet",
    "ControlResiduals",
    "ControlSignal",
    "DenoiseMaskFunction",
    "DenoiseMaskStep",
    "Denoiser",
    "GuidanceHooks",
    "Guider",
    "Image",
    "Latent",
    "LatentFormat",
    "LatentFormatVariants",
    "LatentOperation",
    "LatentOperationFunction",
    "LoadRequest",
    "LoadedParts",
    "Mask",
    "Model",
    "ModelFamily",
    "ModelLike",
    "ModelPart",
    "NeedsModels",
    "Noise",
    "NoiseSampler",
    "NoiseSource",
    "PostCFGFunction",
    "PostCFGStep",
    "PreCFGFunction",
    "PreCFGStep",
    "RegisteredSampler",
    "Sampler",
    "SamplerInfo",
    "SamplerRef",
    "SavableTextEncoders",
    "Scheduler",
    "Sigmas",
    "Socket",
    "Step",
    "StepCallback",
    "TensorInfo",
    "TextContextModel",
    "TokenizerOptions",
    "TokenizerPadding",
    "UncondDenoiser",
    "Vae",
    "VaeLike",
    "WebServer",
    "WeightAdapter",
    "WeightSlice",
    "control_context",
]
