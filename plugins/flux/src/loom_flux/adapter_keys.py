"""How LoRA files name Flux DiT weights: the ``adapter_key_map`` hook for Flux MODELs.

Layouts mapped one to one onto this plugin's (ComfyUI / BFL) weights:

- ComfyUI's own: ``diffusion_model.double_blocks.0.img_attn.qkv``;
- kohya sd-scripts for Flux (BFL names flattened): ``lora_unet_double_blocks_0_img_attn_qkv``;
- diffusers / PEFT and ai-toolkit (``transformer.`` + diffusers names, or kohya-flattened
  ``lora_transformer_...``) for every diffusers layer that is a whole ComfyUI layer
  (``attn.to_out.0``, ``ff.net.2``, ``norm1.linear``, ``proj_out`` ...).

Not mapped yet: diffusers' split ``to_q``/``to_k``/``to_v`` (and a single block's
``proj_mlp``), which patch *slices* of ComfyUI's fused ``qkv`` / ``linear1``: the
:class:`~loom.types.AdapterKeyMap` contract maps a name to a whole weight, so those need a
slice-aware target in core first.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from loom.types import AdapterKeyMap
from loom_flux.convert import key_plan


def _flat(name: str) -> str:
    return name.replace(".", "_")


@lru_cache(maxsize=16)
def dit_keys(
    module_keys: tuple[str, ...], depth: int, single: int, guidance: bool
) -> dict[str, str]:
    """Every 1:1 adapter layer name -> the module's weight key."""
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
            continue  # fused or reordered: a slice of our weight (see the module docstring)
        theirs = source.keys[0][: -len(".weight")]
        for form in (theirs, f"transformer.{theirs}"):
            keys[form] = ours
        keys[f"lora_transformer_{_flat(theirs)}"] = ours
    return keys


def flux_adapter_key_map(model: Any, kind: str) -> AdapterKeyMap | None:
    """The answer to ``adapter_key_map`` for Flux MODEL values (None otherwise)."""
    from loom_flux.model import FluxModel

    if kind != "model" or not isinstance(model, FluxModel):
        return None
    config = model.config
    module_keys = tuple(model.module.state_dict().keys())
    return AdapterKeyMap(
        model, dit_keys(module_keys, config.depth, config.depth_single, config.guidance_embed)
    )
