"""The weight-adapter formats this plugin registers, one small module per format.

Each module holds a patch class (the difference in float32, added in the merge dtype) and an
adapter object implementing :class:`loom.types.WeightAdapter` (which key suffixes it reads,
how they become patches).
DoRA (``.dora_scale``) is not a format of its own: it wraps the LoRA, LoHa and LoKr patches.
"""

from __future__ import annotations

from loom_lora.adapters.diff import DiffAdapter
from loom_lora.adapters.loha import LohaAdapter
from loom_lora.adapters.lokr import LokrAdapter
from loom_lora.adapters.lora import LoraAdapter


def default_adapters() -> list:
    """The adapters ``register_weight_adapters`` registers, in the order they are offered."""
    return [LoraAdapter(), LohaAdapter(), LokrAdapter(), DiffAdapter()]


__all__ = ["DiffAdapter", "LohaAdapter", "LokrAdapter", "LoraAdapter", "default_adapters"]
