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
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, runtime_checkable

import attrs

# the sampler contract, defined in loom.samplers and re-exported as part of the shared types
from loom.samplers import (
    CFGFunction,  # noqa: F401
    CFGStep,  # noqa: F401
    CondBatchFunction,  # noqa: F401
    CondBatchStep,  # noqa: F401
    DenoiseMaskFunction,  # noqa: F401
    DenoiseMaskStep,  # noqa: F401
    Denoiser,  # noqa: F401
    GuidanceHooks,  # noqa: F401
    NoiseSampler,  # noqa: F401
    NoiseSource,  # noqa: F401
    PostCFGFunction,  # noqa: F401
    PostCFGStep,  # noqa: F401
    PreCFGFunction,  # noqa: F401
    PreCFGStep,  # noqa: F401
    RegisteredSampler,  # noqa: F401
    Sampler,  # noqa: F401
    SamplerInfo,  # noqa: F401
    Scheduler,  # noqa: F401
    Step,  # noqa: F401
    StepCallback,  # noqa: F401
    UncondDenoiser,  # noqa: F401
)

if TYPE_CHECKING:
    import torch

    from loom.folders import ModelFolders
    from loom.memory import MemoryManager
    from loom.model_sampling import ModelSampling


@attrs.frozen
class Socket:
    """Annotation marker naming a node socket's wire type (``"IMAGE"``, ``"MODEL"``)."""

    type: str


Image = Annotated[Any, Socket("IMAGE")]
Mask = Annotated[Any, Socket("MASK")]
Latent = Annotated[dict, Socket("LATENT")]
Conditioning = Annotated[list, Socket("CONDITIONING")]
Model = Annotated[Any, Socket("MODEL")]
Clip = Annotated[Any, Socket("CLIP")]
Vae = Annotated[Any, Socket("VAE")]
ClipVision = Annotated[Any, Socket("CLIP_VISION")]
Sigmas = Annotated[Any, Socket("SIGMAS")]
Noise = Annotated[Any, Socket("NOISE")]
SamplerRef = Annotated[Any, Socket("SAMPLER")]
Guider = Annotated[Any, Socket("GUIDER")]
ControlNet = Annotated[Any, Socket("CONTROL_NET")]
#: A :class:`LatentOperationFunction` (ComfyUI's LATENT_OPERATION socket).
LatentOperation = Annotated[Any, Socket("LATENT_OPERATION")]
AnyValue = Annotated[Any, Socket("*")]

#: Widget types a plain Python annotation maps to.
WIDGET_TYPES: Mapping[type, str] = {int: "INT", float: "FLOAT", str: "STRING", bool: "BOOLEAN"}


# --- protocols model-family plugins implement ------------------------------------------


@runtime_checkable
class ModelLike(Protocol):
    """A denoising model handle (the MODEL socket).

    ``clone()`` must be cheap and share weights; patches and options live on the clone.
    A handle may also carry a ``denoise_mask_function``
    (:class:`loom.samplers.DenoiseMaskFunction`, read with
    :func:`loom.samplers.denoise_mask_function_of`) that masked sampling applies each step,
    and ``guidance`` (:class:`loom.samplers.GuidanceHooks`, read with
    :func:`loom.samplers.guidance_hooks_of`): its pre-CFG, CFG and post-CFG functions.
    """

    model_sampling: ModelSampling
    latent_format: LatentFormat

    def clone(self) -> ModelLike: ...

    def apply_model(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Mapping[str, Any]
    ) -> torch.Tensor:
        """Denoise ``x`` at noise level ``sigma``; returns the denoised estimate x0."""
        ...


class LatentOperationFunction(Protocol):
    """A LATENT_OPERATION value: a rewrite of ``[B, C, H, W]`` latent samples (or of a
    guidance direction, under ``LatentApplyOperationCFG``) into a tensor of the same shape."""

    def __call__(self, latent: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ClipLike(Protocol):
    """A text encoder handle (the CLIP socket)."""

    def clone(self) -> ClipLike: ...

    def encode(self, text: str) -> list:
        """Encode a prompt (with emphasis syntax) into a CONDITIONING list."""
        ...

    def set_last_layer(self, layer: int) -> None:
        """Use hidden states of ``layer`` (negative, from the end) — CLIPSetLastLayer."""
        ...


@attrs.frozen
class TokenizerPadding:
    """How a text encoder's tokenizer pads a prompt (ComfyUI's ``<encoder>_min_padding`` and
    ``<encoder>_min_length`` tokenizer options): ``min_padding`` pad tokens after the end
    token, then pad tokens up to ``min_length`` tokens in all. Replaces the encoder's own
    rule (Flux's T5 pads to 256; ``TokenizerPadding(0, 0)`` pads nothing)."""

    min_padding: int = 0
    min_length: int = 0


@runtime_checkable
class TokenizerOptions(Protocol):
    """A CLIP handle whose tokenizers take padding options (T5TokenizerOptions). ``encoder``
    is ComfyUI's name for one encoder (``"t5xxl"``); a handle without that encoder ignores
    the call. Called on a clone: the options belong to that handle only."""

    def set_tokenizer_padding(self, encoder: str, padding: TokenizerPadding) -> None: ...


@runtime_checkable
class VaeLike(Protocol):
    """An image autoencoder handle (the VAE socket). Images are IMAGE tensors.

    ``tile_size`` and ``overlap`` of the tiled methods are in pixels (image space) for both
    directions, as the ``VAEDecodeTiled`` / ``VAEEncodeTiled`` widgets give them; the VAE
    converts them to latent units itself.
    """

    def encode(self, image: torch.Tensor) -> torch.Tensor: ...

    def decode(self, samples: torch.Tensor) -> torch.Tensor: ...

    def encode_tiled(self, image: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor: ...

    def decode_tiled(self, samples: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor: ...


@runtime_checkable
class CheckpointPart(Protocol):
    """A MODEL, CLIP, VAE or CLIP_VISION whose weights can be saved (CheckpointSave,
    ModelSave, VAESave, ImageOnlyCheckpointSave).

    ``checkpoint_state()`` gives the weights with the handle's patches applied (LoRA,
    merges), keyed as in the family's original single-file checkpoint; every key starts
    with ``checkpoint_prefix`` (``first_stage_model.``), which a file holding the part
    alone (VAESave) leaves out.
    """

    checkpoint_prefix: str

    def checkpoint_state(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class CheckpointModel(CheckpointPart, Protocol):
    """A MODEL that can be saved: ``checkpoint_metadata()`` is the file metadata ComfyUI
    writes for its architecture (``modelspec.*`` keys), besides the prompt and workflow."""

    def checkpoint_metadata(self) -> dict[str, str]: ...


@runtime_checkable
class SavableTextEncoders(Protocol):
    """A CLIP whose text encoders can be saved one file each (CLIPSave).

    ``text_encoder_files()`` maps each encoder's name (``clip_l``, ``clip_g``, ``t5xxl``;
    ``""`` for a CLIP holding one unnamed encoder) to its weights, patches applied, keyed as
    in that encoder's own file (``text_model.*``).
    """

    def text_encoder_files(self) -> dict[str, dict[str, torch.Tensor]]: ...


@attrs.frozen
class LatentFormat:
    """How a family's latents relate to its VAE: channels, scale/shift, preview factors."""

    channels: int = 4
    scale_factor: float = 1.0
    shift_factor: float = 0.0
    downscale: int = 8
    #: ``[channels][3]`` matrix mapping a latent pixel to RGB for cheap previews.
    rgb_factors: tuple[tuple[float, float, float], ...] | None = None
    rgb_bias: tuple[float, float, float] | None = None
    #: Per-channel statistics of the VAE's latents (Playground v2.5): when set, model space
    #: is ``(latent - mean) * scale / std`` per channel and ``shift_factor`` is not used.
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __attrs_post_init__(self) -> None:
        if (self.latents_mean is None) != (self.latents_std is None):
            raise ValueError("LatentFormat: latents_mean and latents_std go together")
        for stats in (self.latents_mean, self.latents_std):
            if stats is not None and len(stats) != self.channels:
                raise ValueError(
                    f"LatentFormat: {len(stats)} per-channel statistics for {self.channels} "
                    "channels"
                )

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latent -> the space the diffusion model samples in (ComfyUI's ``process_in``)."""
        if self.latents_mean is None:
            return (latent - self.shift_factor) * self.scale_factor
        mean, std = self._channel_stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`process_in`: model space -> VAE latent."""
        if self.latents_mean is None:
            return latent / self.scale_factor + self.shift_factor
        mean, std = self._channel_stats(latent)
        return latent * std / self.scale_factor + mean

    def _channel_stats(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        shape = (1, len(self.latents_mean or ())) + (1,) * (latent.ndim - 2)
        kwargs = {"device": latent.device, "dtype": latent.dtype}
        mean = torch.tensor(self.latents_mean, **kwargs).view(shape)
        std = torch.tensor(self.latents_std, **kwargs).view(shape)
        return mean, std


@runtime_checkable
class LatentFormatVariants(Protocol):
    """A MODEL handle whose family knows other latent formats its architecture is trained
    with, by ComfyUI's ``ModelSamplingContinuousEDM`` sampling name (``"edm_playground_v2.5"``:
    Playground v2.5's per-channel format, from the family whose architecture it uses).

    ``latent_format_variant(name)`` returns the format, or None for a name it does not know.
    """

    def latent_format_variant(self, name: str) -> LatentFormat | None: ...


# --- loading: what the generic loader nodes ask families -------------------------------


@attrs.frozen
class TensorInfo:
    """One tensor's entry in a safetensors header."""

    dtype: str
    shape: tuple[int, ...]
    #: ``(begin, end)`` byte offsets inside the data section (after the header).
    data_offsets: tuple[int, int] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class CheckpointHeader:
    """A safetensors file's header: read once, without loading any tensor."""

    path: Path
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]
    #: File offset where the data section (and so ``data_offsets``) starts.
    data_start: int = 0

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return [key for key in self.tensors if key.startswith(prefix)]

    def has(self, *keys: str) -> bool:
        return all(key in self.tensors for key in keys)


class ModelPart(str, enum.Enum):
    """Which part of a file a loader node asks a family for (a ``str``: compares to its value)."""

    CHECKPOINT = "checkpoint"
    DIFFUSION_MODEL = "diffusion_model"
    TEXT_ENCODER = "text_encoder"
    VAE = "vae"

    @property
    def label(self) -> str:
        """How the part reads in messages (``"text encoder"``)."""
        return "VAE" if self is ModelPart.VAE else self.value.replace("_", " ")


@attrs.frozen(kw_only=True)
class LoadRequest:
    """Everything a loader hands :meth:`ModelFamily.load` besides the file's header.

    A family reads the fields it understands and must work with every default (tests and
    scripts load files without a runtime).
    """

    #: More files to combine into the same part (``DualCLIPLoader``'s second file); the
    #: family scored each above 0 for the part.
    extra_headers: tuple[CheckpointHeader, ...] = ()
    #: ``UNETLoader``'s ``weight_dtype`` (``"default"``, ``"fp8_e4m3fn"``, ...); None: as stored.
    weight_dtype: str | None = None
    #: ``CLIPLoader`` / ``DualCLIPLoader``'s ``type`` (``"stable_diffusion"``, ``"sdxl"``...).
    clip_type: str | None = None
    #: The text encoder loaders' ``device`` (``"default"`` or ``"cpu"``).
    device: str = "default"
    #: Model folders (tokenizers, embeddings); None outside a runtime.
    folders: ModelFolders | None = None
    #: The memory manager the loaded handles are placed through; None runs them in place.
    memory: MemoryManager | None = None
    #: A tokenizer folder to use instead of searching the model folders.
    tokenizer_dir: Path | None = None
    #: Textual-inversion directories; None means the ``embeddings`` model folders.
    embedding_dirs: tuple[Path, ...] | None = None


@attrs.frozen
class LoadedParts:
    """What loading a file produced; parts the file does not hold are None."""

    model: Any = None
    clip: Any = None
    vae: Any = None


class ModelFamily(Protocol):
    """A model family plugin's answers for the generic loader nodes.

    ``detect`` scores how sure the family is that the file is its own (0 = not mine);
    the highest score wins. ``load`` builds modules on the meta device and assigns tensors
    through :mod:`loom.memory`; a family raises :class:`~loom.errors.ModelFileError` for a
    part it cannot load.
    """

    name: str

    def detect(self, header: CheckpointHeader, part: ModelPart) -> float:
        """Score (0 = not mine) for ``header`` holding ``part``."""
        ...

    def load(self, header: CheckpointHeader, part: ModelPart, request: LoadRequest) -> LoadedParts:
        """Load ``part`` of the file (and of ``request.extra_headers``) as ``request`` asks."""
        ...


class WeightAdapter(Protocol):
    """A weight-adapter format (LoRA, LoHa, LoKr, diff, ...): one layer's tensors -> patches.

    A LoRA file's keys are split into ``<layer name><suffix>`` with the suffixes every
    registered adapter declares (``.lora_up.weight``, ``.hada_w1_a``, ``.alpha`` ...); the
    layer name is looked up in the model family's :class:`AdapterKeyMap`; each adapter is
    then offered that layer's tensors. Several adapters may claim parts of one layer (a LoRA
    on the weight and a ``.diff_b`` on the bias); suffixes no adapter used are reported.
    """

    name: str
    #: Key suffixes this format reads, after the layer name (shared ones such as ``.alpha``
    #: and ``.dora_scale`` included); they are consumed when :meth:`patches` claims a layer.
    suffixes: tuple[str, ...]

    def patches(self, parts: Mapping[str, Any], weight_key: str) -> Mapping[str, Any]:
        """Patches for one layer, or an empty mapping if ``parts`` are not this format.

        :param parts: suffix -> tensor for every key of this layer in the file.
        :param weight_key: the model's key of the layer's weight (``"...proj_in.weight"``).
        :return: model tensor key -> :class:`loom.memory.WeightPatch` (usually the weight,
            possibly the bias too). Must not load or copy the model's weights.
        """
        ...


#: What ``adapter_key_map`` is asked to name: the diffusion model or the text encoders.
AdapterTarget = Literal["model", "clip"]


@attrs.frozen
class WeightSlice:
    """Rows ``offset .. offset + length`` of a fused weight: where an adapter layer lands
    when the file's model has separate layers the family's module fuses (diffusers' Flux
    ``to_q`` / ``to_k`` / ``to_v`` inside ComfyUI's ``qkv``).

    The adapter's patch is computed on that slice alone (its bias patch on the same rows of
    the bias). ``swap_halves``: the file's layer stores the slice's two halves in the other
    order (diffusers' final ``(scale, shift)`` vs ComfyUI's ``(shift, scale)``), so the delta
    is swapped before it is added.
    """

    #: The fused weight's key in ``handle.module`` (``"double_blocks.0.img_attn.qkv.weight"``).
    key: str
    offset: int
    length: int
    swap_halves: bool = False


@attrs.frozen
class AdapterKeyMap:
    """What a model family answers to ``adapter_key_map``: which handle to patch, and the
    names adapter files use for its weights.

    ``keys`` maps every layer name an adapter format may use (kohya ``lora_unet_...``,
    diffusers / PEFT ``unet.down_blocks...``, ComfyUI's ``diffusion_model....``) to the key of
    the weight in ``handle.module`` (``"input_blocks.1.1.proj_in.weight"``). ``slices`` maps
    the layer names that patch only part of one of the module's weights to that part.
    """

    #: A :class:`loom.memory.ModelHandle` (the clone the patches go on), or an object with
    #: its ``module`` and ``add_patches`` spreading the keys over several handles (a text
    #: encoder pair in separate modules).
    handle: Any
    keys: Mapping[str, str]
    slices: Mapping[str, WeightSlice] = attrs.field(factory=dict)


# --- control signals (ControlNet, T2I-Adapter) carried by conditioning --------------------


@attrs.frozen
class ControlResiduals:
    """Tensors a control model adds inside an LDM-style UNet for one model call.

    Every list is in the UNet's own order; an entry may be ``None`` (nothing added there).
    ``input[i]`` is added to the output of input block ``i`` before it is kept as a skip
    (T2I-Adapters); ``middle[0]`` to the middle block's output; ``output[i]`` to skip
    connection ``i`` (the output of input block ``i``) when the decoder takes it
    (ControlNets). Batch sizes equal the model call's.
    """

    input: tuple[Any, ...] = ()
    middle: tuple[Any, ...] = ()
    output: tuple[Any, ...] = ()


#: Conditioning options (ComfyUI's names, set by CLIPTextEncodeControlnet): text embeddings
#: ``[1, T, D]`` and pooled output a control model sees instead of the entry's own.
CONTROL_CROSS_ATTN_OPTION = "cross_attn_controlnet"
CONTROL_POOLED_OPTION = "pooled_output_controlnet"
#: The model-call input the sampler batches from :data:`CONTROL_CROSS_ATTN_OPTION` (padded
#: like ``c_crossattn``); read it with :func:`control_context`.
CONTROL_CONTEXT_INPUT = "crossattn_controlnet"


def control_context(cond: Mapping[str, Any]) -> torch.Tensor:
    """The text embeddings a control model attends to in one model call (``cond`` as given
    to :meth:`ControlSignal.residuals`): the batched ``cross_attn_controlnet`` option when the
    call's entries carry one, else the model's own ``c_crossattn`` (ComfyUI's rule; the
    pooled ``pooled_output_controlnet`` is carried but, as in ComfyUI, not read)."""
    context = cond.get(CONTROL_CONTEXT_INPUT)
    return cond["c_crossattn"] if context is None else context


@runtime_checkable
class NeedsModels(Protocol):
    """A conditioning option's value that runs model handles of its own while sampling
    (ComfyUI's "additional models": ControlNets, GLIGEN): the sampler loads them through the
    memory manager with the sampled model, and their forward code computes at each handle's
    ``compute_target`` instead of copying weights per call."""

    def models(self, model: ModelLike) -> Sequence[Any]:
        """The :class:`loom.memory.ModelHandle` objects to load for sampling ``model``.

        Asked before ``model`` is loaded, so everything loads in one call, and again once it
        is loaded (``model.is_loaded``): a value whose network is built from the loaded
        model's weights (a control-LoRA) names that handle only then."""
        ...


@runtime_checkable
class ControlSignal(NeedsModels, Protocol):
    """A control model bound to its hint, strength and timestep range: the ``"control"``
    option of a conditioning entry.

    The guidance path (loom-samplers) calls :meth:`residuals` once per model call that
    evaluates an entry carrying it, with the batched inputs of that call, and hands the
    result to ``model.apply_model`` as ``cond["control"]``. Several control models on one
    conditioning form a chain through ``previous``: :meth:`residuals` includes the previous
    signal's residuals (summed), so the sampler only ever asks the last one.
    """

    previous: ControlSignal | None

    def residuals(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: Mapping[str, Any],
        model: ModelLike,
        batched_number: int,
    ) -> ControlResiduals | None:
        """Residuals for the model call on ``x`` (model space) at ``sigma`` (``[N]``).

        ``cond`` holds the call's batched model inputs (``c_crossattn``, ``y`` ...);
        ``model`` is the MODEL being sampled (its ``model_sampling`` gives the timestep);
        ``batched_number`` is how many conditioning chunks were concatenated into the batch
        (a hint of batch ``B`` is repeated per chunk). ``None``: nothing to add at this sigma
        (outside every signal's timestep range).
        """
        ...

    def models(self, model: ModelLike) -> Sequence[Any]:
        """The :class:`loom.memory.ModelHandle` objects of this signal and its previous ones,
        for the sampler to load together with ``model``, the diffusion model."""
        ...


class WebServer(Protocol):
    """What a web frontend plugin hands to ``web_server_started``: its app and its sockets."""

    #: The server's aiohttp ``web.Application`` (not started yet when the hook runs).
    app: Any

    def send(self, kind: str, data: Any, client_id: str | None = None) -> None:
        """Send one websocket message (``{"type": kind, "data": data}``; bytes data goes as
        a binary frame whose first 4 bytes are ``kind`` as an int) to ``client_id``, or to
        every client when it is None. Callable from any thread."""
        ...

    def add_prompt_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Call ``handler(body)`` on every ``POST /prompt`` body before it is validated; the
        body it returns is used (ComfyUI's ``add_on_prompt_handler``)."""
        ...
