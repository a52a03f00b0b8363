"""How LoRA files name Flux DiT weights: the ``adapter_key_map`` hook for Flux MODELs.

Layouts mapped onto this plugin's (ComfyUI / BFL) weights:

- ComfyUI's own: ``diffusion_model.double_blocks.0.img_attn.qkv``;
- kohya sd-scripts for Flux (BFL names flattened, q/k/v already fused):
  ``lora_unet_double_blocks_0_img_attn_qkv``;
- diffusers / PEFT (``transformer.`` + diffusers names, or the bare names), SimpleTuner's
  LyCORIS (``lycoris_`` + flattened) and OneTrainer / ai-toolkit (``lora_transformer_`` +
  flattened). A diffusers layer that is a whole ComfyUI layer (``attn.to_out.0``,
  ``ff.net.2``) maps to that weight; one that is part of a fused ComfyUI weight (``attn.to_q``
  / ``to_k`` / ``to_v`` in ``img_attn.qkv``, ``add_q_proj`` ... in ``txt_attn.qkv``, a single
  block's ``to_q`` / ``to_k`` / ``to_v`` / ``proj_mlp`` in ``linear1``) maps to a
  :class:`~loom.types.WeightSlice` of it, as does ``norm_out.linear`` (its halves swapped).

The text encoders (a :class:`~loom_flux.clip.FluxClip`: CLIP-L and T5-XXL, two handles) are
patched through one :class:`FluxClipTarget`: CLIP-L under loom-sd15's names (kohya
``lora_te1_text_model_...``, diffusers ``text_encoder.text_model...``, ComfyUI's
``text_encoders.clip_l.transformer...``), T5 under ComfyUI's (``lora_te1_`` / ``lora_te2_`` /
``lora_te3_`` + the flattened transformers name, ``text_encoders.t5xxl.transformer...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from torch import nn

from loom.types import AdapterKeyMap, WeightSlice
from loom_flux.convert import key_plan

#: The text encoders' key prefixes in :class:`FluxClipTarget`.
CLIP_L, T5 = "clip_l.", "t5."


def _flat(name: str) -> str:
    return name.replace(".", "_")


def _diffusers_forms(layer: str) -> tuple[str, ...]:
    """The names the diffusers-layout formats give diffusers layer ``layer``."""
    return (
        layer,
        f"transformer.{layer}",
        f"lora_transformer_{_flat(layer)}",
        f"lycoris_{_flat(layer)}",
    )


@lru_cache(maxsize=16)
def dit_keys(
    module_keys: tuple[str, ...], depth: int, single: int, guidance: bool
) -> dict[str, str]:
    """Every adapter layer name that is a whole weight -> the module's weight key."""
    keys: dict[str, str] = {}
    present = set(module_keys)
    for key in module_keys:
        if not key.endswith(".weight"):
            continue
        layer = key[: -len(".weight")]
        keys[f"diffusion_model.{layer}"] = key
        keys[f"lora_unet_{_flat(layer)}"] = key
    for ours, source in key_plan(depth, single, guidance).items():
        if not ours.endswith(".weight") or ours not in present:
            continue
        if len(source.keys) != 1 or source.swap_halves:
            continue  # a slice of our weight: dit_slices
        for form in _diffusers_forms(source.keys[0][: -len(".weight")]):
            keys[form] = ours
    return keys


@lru_cache(maxsize=16)
def dit_slices(
    module_keys: tuple[str, ...], depth: int, single: int, guidance: bool, hidden: int, mlp: int
) -> dict[str, WeightSlice]:
    """Every diffusers layer name that is rows of a fused (or reordered) weight -> the rows.

    q, k and v are ``hidden`` rows each, in that order; a single block's ``proj_mlp`` is
    the ``mlp`` rows after them (ComfyUI's offsets).
    """
    slices: dict[str, WeightSlice] = {}
    present = set(module_keys)
    for ours, source in key_plan(depth, single, guidance).items():
        if not ours.endswith(".weight") or ours not in present:
            continue
        if source.swap_halves:
            rows = 2 * hidden  # final_layer.adaLN_modulation.1: (shift, scale)
            layers = [(source.keys[0], WeightSlice(ours, 0, rows, swap_halves=True))]
        elif len(source.keys) > 1:
            layers = []
            for index, theirs in enumerate(source.keys):
                length = hidden if index < 3 else mlp  # q, k, v (, proj_mlp)
                layers.append((theirs, WeightSlice(ours, index * hidden, length)))
        else:
            continue
        for theirs, where in layers:
            for form in _diffusers_forms(theirs[: -len(".weight")]):
                slices[form] = where
    return slices


class FluxClipTarget:
    """A FluxClip clone's two handles patched as one (``handle`` of an
    :class:`~loom.types.AdapterKeyMap`): keys ``clip_l.<key>`` go to the CLIP-L handle,
    ``t5.<key>`` to the T5 handle."""

    def __init__(self, parts: Mapping[str, Any]) -> None:
        self.parts = dict(parts)

    @property
    def module(self) -> nn.Module:
        """Both encoders under their prefixes (to read the weights' shapes)."""
        return nn.ModuleDict({name[:-1]: handle.module for name, handle in self.parts.items()})

    def add_patches(self, patches: Mapping[str, Any], strength: float = 1.0) -> list[str]:
        """Queue each patch on its encoder's handle; returns the keys used (prefixed)."""
        used: list[str] = []
        for prefix, handle in self.parts.items():
            mine = {k[len(prefix) :]: p for k, p in patches.items() if k.startswith(prefix)}
            if mine:
                used += [prefix + key for key in handle.add_patches(mine, strength)]
        return used


@lru_cache(maxsize=16)
def t5_keys(module_keys: tuple[str, ...]) -> dict[str, str]:
    """Every adapter name of each T5 weight -> ``t5.<key>`` (ComfyUI's T5 LoRA names)."""
    keys: dict[str, str] = {}
    for key in module_keys:
        if not key.endswith(".weight"):
            continue
        layer = key[: -len(".weight")]
        for n in (1, 2, 3):
            keys[f"lora_te{n}_{_flat(layer)}"] = T5 + key
        keys[f"text_encoders.t5xxl.transformer.{layer}"] = T5 + key
    return keys


def flux_clip_key_map(clip: Any) -> AdapterKeyMap:
    """The answer for a FluxClip: both encoders' names onto one :class:`FluxClipTarget`."""
    from loom_sd15.adapter_keys import sd15_adapter_key_map

    parts: dict[str, Any] = {}
    keys: dict[str, str] = {}
    if clip.clip_l is not None:
        answer = sd15_adapter_key_map(clip.clip_l, "clip")
        if answer is not None:
            parts[CLIP_L] = answer.handle
            keys |= {name: CLIP_L + key for name, key in answer.keys.items()}
    if clip.t5 is not None:
        parts[T5] = clip.t5
        keys |= t5_keys(tuple(clip.t5.module.state_dict().keys()))
    return AdapterKeyMap(FluxClipTarget(parts), keys)


def flux_adapter_key_map(model: Any, kind: str) -> AdapterKeyMap | None:
    """The answer to ``adapter_key_map`` for Flux MODEL and CLIP values (None otherwise)."""
    from loom_flux.clip import FluxClip
    from loom_flux.model import FluxModel

    if kind == "clip" and isinstance(model, FluxClip):
        return flux_clip_key_map(model)
    if kind != "model" or not isinstance(model, FluxModel):
        return None
    config = model.config
    module_keys = tuple(model.module.state_dict().keys())
    depths = (config.depth, config.depth_single, config.guidance_embed)
    slices = dit_slices(module_keys, *depths, config.hidden_size, config.mlp_hidden)
    return AdapterKeyMap(model, dit_keys(module_keys, *depths), slices)
