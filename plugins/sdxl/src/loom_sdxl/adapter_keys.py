"""How weight-adapter files name SDXL's text-encoder weights (the ``adapter_key_map`` hook).

The UNet's names come from loom-sd15's map (``SDXLModel`` is an ``SD15Model`` and sd15's
diffusers-name table reads per-level depths and ``label_emb``). The CLIP value holds both
encoders in one module (``clip_l.*``, ``clip_g.*``); files name them as:

- kohya sd-scripts: ``lora_te1_`` (CLIP-L) / ``lora_te2_`` (CLIP-G) + the transformers name
  with dots flattened (``text_model_encoder_layers_0_self_attn_q_proj``);
- diffusers / PEFT: ``text_encoder.`` / ``text_encoder_2.`` + the transformers name;
- ComfyUI: ``text_encoders.clip_l.transformer.`` / ``text_encoders.clip_g.transformer.``.

A refiner's CLIP has CLIP-G only; its files use the same ``te2`` / ``text_encoder_2`` /
``clip_g`` names as base ones do.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from loom.types import AdapterKeyMap

#: encoder attribute -> (kohya prefix, diffusers prefix, ComfyUI prefix)
PREFIXES = {
    "clip_l": ("lora_te1_", "text_encoder.", "text_encoders.clip_l.transformer."),
    "clip_g": ("lora_te2_", "text_encoder_2.", "text_encoders.clip_g.transformer."),
}


@lru_cache(maxsize=16)
def clip_keys(module_keys: tuple[str, ...]) -> dict[str, str]:
    """Every adapter name of each ``clip_l.*`` / ``clip_g.*`` weight key."""
    keys: dict[str, str] = {}
    for key in module_keys:
        if not key.endswith(".weight"):
            continue
        encoder, _, layer = key[: -len(".weight")].partition(".")
        if encoder not in PREFIXES:
            continue
        if not layer.startswith(("text_model.", "text_projection")):
            layer = f"text_model.{layer}"  # transformers 5's flattened CLIPTextModel
        kohya, diffusers, comfy = PREFIXES[encoder]
        keys[kohya + layer.replace(".", "_")] = key
        keys[diffusers + layer] = key
        keys[comfy + layer] = key
    return keys


def sdxl_adapter_key_map(model: Any, kind: str) -> AdapterKeyMap | None:
    """The answer to ``adapter_key_map`` for SDXL CLIP values (None otherwise)."""
    from loom_sdxl.clip import SDXLClip

    if kind == "clip" and isinstance(model, SDXLClip):
        module_keys = tuple(model.handle.module.state_dict().keys())
        return AdapterKeyMap(model.handle, clip_keys(module_keys))
    return None
