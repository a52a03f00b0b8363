"""The fallback key map: a bare model handle named by its own weight keys.

For a MODEL that is a :class:`loom.memory.ModelHandle` no family claimed, layer ``X``
(weight ``X.weight``) is reachable as ``X``, ``diffusion_model.X`` (ComfyUI's layout) and
``lora_unet_`` + ``X`` with dots flattened (kohya's). Families should answer the
``adapter_key_map`` hook themselves; this only keeps a plain handle patchable.
"""

from __future__ import annotations

from typing import Any

from loom.types import AdapterKeyMap, AdapterTarget

PREFIXES = {"model": ("diffusion_model.", "lora_unet_"), "clip": ("text_encoders.", "lora_te_")}


def generic_key_map(model: Any, kind: AdapterTarget) -> AdapterKeyMap | None:
    from loom.memory import ModelHandle

    if not isinstance(model, ModelHandle) or kind not in PREFIXES:
        return None
    dotted, flat = PREFIXES[kind]
    keys: dict[str, str] = {}
    for key in model.module.state_dict():
        if not key.endswith(".weight"):
            continue
        layer = key[: -len(".weight")]
        keys[layer] = key
        keys[dotted + layer] = key
        keys[flat + layer.replace(".", "_")] = key
    return AdapterKeyMap(model, keys)
