"""The MODEL protocol this plugin relies on, and the one place that touches the memory manager.

A MODEL handle (``loom.types.ModelLike``) must provide:

``model.model_sampling``
    a :class:`loom.model_sampling.ModelSampling` (``DiscreteEps``, ``DiscreteV``, ``FlowMatching`` or
    a subclass): schedules, ``noise_scaling``, ``percent_to_sigma``.
``model.apply_model(x, sigma, cond) -> x0``
    ``x``: ``[N, C, H, W]`` noisy latent in *model space* (see below), ``sigma``: ``[N]``
    float tensor (one sigma per row; rows may mix cond and uncond), ``cond``: a dict of
    batched tensors, one row per row of ``x``:

    * ``c_crossattn``: ``[N, T, D]`` text embeddings. Rows of different token lengths are
      padded by repeating to the least common multiple (ComfyUI's ``CONDCrossAttn``).
    * every entry ``model.extra_conds(...)`` returned (``y``, ``c_concat``, ...), concatenated
      along dim 0; tensors whose trailing dims equal the latent's spatial size are cropped to
      the conditioning's area first.
    * ``control``: a :class:`loom.types.ControlResiduals` (or None) when the entries carry a
      control signal (ControlNet, T2I-Adapter): the model adds it inside its UNet.

    It returns the denoised estimate x0 (the parameterisation is the model's business:
    ``model_sampling.calculate_input`` / ``calculate_denoised``).
``model.latent_format``
    a :class:`loom.types.LatentFormat`: ``channels`` (empty latents are widened to it),
    ``process_in`` / ``process_out`` (model space = ``(latent - shift) * scale``, or per
    channel ``(latent - mean) * scale / std``; applied to non-empty latents before sampling
    and undone after), ``rgb_factors`` / ``rgb_bias`` (previews).

Optional:

``model.extra_conds(options, *, noise, latent_image, denoise_mask, prompt_type, seed) -> dict``
    per conditioning entry: ``options`` is the entry's option dict plus ``cross_attn`` (the
    embedding tensor); ``prompt_type`` is ``"positive"`` or ``"negative"``. Returns extra
    model inputs (batch 1 or B; repeated to the latent batch). SDXL's ``y`` (pooled output +
    size embeddings) and inpainting ``c_concat`` belong here.
``model.process_latent_in(x)`` / ``model.process_latent_out(x)``
    override the latent_format scale/shift.
``model.memory_required(shape) -> int`` and ``ctx.runtime.memory``
    see :func:`prepare_model` and :func:`batch_fits`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loom import RunContext

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)


def process_latent_in(model: Any, latent: Tensor) -> Tensor:
    hook = getattr(model, "process_latent_in", None)
    if callable(hook):
        return hook(latent)
    fmt = getattr(model, "latent_format", None)
    if fmt is None:
        return latent
    return fmt.process_in(latent)


def process_latent_out(model: Any, latent: Tensor) -> Tensor:
    hook = getattr(model, "process_latent_out", None)
    if callable(hook):
        return hook(latent)
    fmt = getattr(model, "latent_format", None)
    if fmt is None:
        return latent
    return fmt.process_out(latent)


def fix_empty_latent_channels(model: Any, latent: Tensor) -> Tensor:
    """An all-zero latent takes the model's channel count (ComfyUI does this before noise)."""
    import torch

    fmt = getattr(model, "latent_format", None)
    if fmt is None or latent.ndim < 2 or torch.count_nonzero(latent) != 0:
        return latent
    channels = int(fmt.channels)
    if latent.shape[1] == channels:
        return latent
    repeats = -(-channels // latent.shape[1])
    return latent.repeat(1, repeats, *([1] * (latent.ndim - 2)))[:, :channels]


def prepare_model(
    ctx: RunContext,
    model: Any,
    noise_shape: tuple[int, ...],
    conds: Mapping[str, Sequence[Any]] | None = None,
) -> Any:
    """Load ``model`` through the runtime's memory manager before sampling ``noise_shape``.

    The single integration point with :mod:`loom.memory`: a model that is a
    :class:`loom.memory.ModelHandle` is loaded with room for one forward's activations
    (``model.memory_required(shape)`` bytes, when it says); other models (toy models in
    tests) are used as they are. The handles the conditioning groups ``conds`` need
    (:func:`conditioning_models`: ControlNets, GLIGEN) are loaded in the same call, so a
    tight budget never evicts one to make room for the model and then reloads it. A value
    whose network is built from the loaded model's weights (a control-LoRA) names its handle
    only once the model is loaded: it is asked again then, and only such late handles are
    loaded in a second call, beside the ones already placed. Returns the device to sample on.
    """
    memory = _memory(ctx)
    if memory is not None and _is_model_handle(model):
        required = getattr(model, "memory_required", None)
        extra = int(required(noise_shape)) if callable(required) else 0
        extras = _handles(conds, model)
        memory.load([model, *extras], extra_memory=extra)
        late = [m for m in _handles(conds, model) if m not in extras]
        if late:
            memory.load([model, *extras, *late], extra_memory=extra)
    return getattr(model, "load_device", None)


def _handles(conds: Mapping[str, Sequence[Any]] | None, model: Any) -> list[Any]:
    return [m for m in conditioning_models(conds or {}, model) if _is_model_handle(m)]


def conditioning_models(conds: Mapping[str, Sequence[Any]], model: Any) -> list[Any]:
    """The model handles every option of every entry in a guider's conditioning groups
    needs (a :class:`loom.types.NeedsModels` value: the ``"control"`` signal with its
    ``previous`` chain, GLIGEN's ``"gligen"`` boxes ...) for sampling ``model``, each once."""
    from loom.types import NeedsModels

    found: dict[int, Any] = {}
    for conditioning in conds.values():
        for item in conditioning:
            for value in item[1].values():
                if isinstance(value, NeedsModels):
                    for handle in value.models(model):
                        found.setdefault(id(handle), handle)
    return list(found.values())


def _is_model_handle(model: Any) -> bool:
    from loom.memory import ModelHandle

    return isinstance(model, ModelHandle)


def batch_fits(ctx: RunContext, model: Any, shape: tuple[int, ...]) -> bool:
    """Whether a batch of ``shape`` may run at once (ComfyUI: ``1.5 x memory_required < free``)."""
    required = getattr(model, "memory_required", None)
    memory = _memory(ctx)
    if memory is None or not callable(required):
        return True
    view = memory.memory_view()
    free = min(view.free_bytes, view.budget_bytes - view.used_by_models_bytes)
    return required(shape) * 1.5 < free


def _memory(ctx: RunContext) -> Any:
    """The runtime's MemoryManager, or None (a bare context, as in unit tests)."""
    return getattr(getattr(ctx, "runtime", None), "memory", None)
