"""Parsing a LoRA file's keys: ``<layer name><suffix>`` grouped per layer.

A key such as ``lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight`` splits into
the layer name ``lora_unet_down_blocks_0_attentions_0_proj_in`` and the suffix
``.lora_up.weight``; the suffixes come from the registered adapters, longest first, so
``.diff_b`` is not read as ``.diff``. Layer names are resolved later through the model
family's key map (:mod:`loom_lora.loader`); here they are only grouped, and their prefix
says which part of a checkpoint they are meant for.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

#: Layer-name prefixes of the known layouts, and the part each one targets.
PREFIX_PARTS: tuple[tuple[str, str], ...] = (
    ("lora_unet_", "model"),  # kohya sd-scripts
    ("lora_prior_unet_", "model"),  # kohya, Stable Cascade prior
    ("lycoris_", "model"),  # SimpleTuner LyCORIS
    ("unet.", "model"),  # diffusers / PEFT
    ("diffusion_model.", "model"),  # ComfyUI's own layout
    ("transformer.", "model"),  # diffusers DiT families
    ("lora_transformer_", "model"),  # OneTrainer DiT families
    ("lora_te_", "clip"),  # kohya, one text encoder
    ("lora_te1_", "clip"),  # kohya, first of two (SDXL)
    ("lora_te2_", "clip"),  # kohya, second of two
    ("lora_te3_", "clip"),
    ("lora_prior_te_", "clip"),
    ("text_encoder.", "clip"),  # diffusers / PEFT
    ("text_encoder_2.", "clip"),
    ("text_encoders.", "clip"),  # ComfyUI's own layout
)


def part_of(layer: str) -> str | None:
    """``"model"``, ``"clip"`` or None: the part a layer name's prefix targets."""
    for prefix, part in PREFIX_PARTS:
        if layer.startswith(prefix):
            return part
    return None


@attrs.frozen
class LayerKeys:
    """One layer's keys: ``suffix -> full key`` in the file."""

    layer: str
    keys: dict[str, str]


@attrs.frozen
class ParsedKeys:
    """A file's keys grouped per layer, plus those no adapter suffix matches."""

    layers: dict[str, LayerKeys]
    unparsed: list[str]


def split_key(key: str, suffixes: Iterable[str]) -> tuple[str, str] | None:
    """``(layer, suffix)`` for the longest suffix of ``suffixes`` ending ``key``, else None."""
    for suffix in sorted(suffixes, key=len, reverse=True):
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], suffix
    return None


def group_keys(keys: Iterable[str], suffixes: Iterable[str]) -> ParsedKeys:
    """Group ``keys`` by layer name, using the adapters' ``suffixes``."""
    ordered = sorted(set(suffixes), key=len, reverse=True)
    layers: dict[str, LayerKeys] = {}
    unparsed: list[str] = []
    for key in keys:
        split = split_key(key, ordered)
        if split is None:
            unparsed.append(key)
            continue
        layer, suffix = split
        layers.setdefault(layer, LayerKeys(layer, {})).keys[suffix] = key
    return ParsedKeys(layers, unparsed)
