"""Weight adapters (LoRA and kin): the format protocol and a family's adapter key map."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

import attrs


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
