"""Control signals (ControlNet, T2I-Adapter) carried by conditioning, and the models a
conditioning option runs while sampling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    import torch

    from loom.types.handles import ModelLike


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
