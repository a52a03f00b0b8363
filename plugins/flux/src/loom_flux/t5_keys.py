"""Where a T5 encoder's weights sit in a file, by key names only (torch-free, so validation
can ask it of a safetensors header)."""

from __future__ import annotations

from collections.abc import Container

#: ComfyUI's all-in-one checkpoint prefix of the T5 encoder, then a bare T5 file's.
T5_PREFIXES = ("text_encoders.t5xxl.transformer.", "")


def is_t5(keys: Container[str], prefix: str = "") -> bool:
    """Whether ``keys`` hold a T5 encoder under ``prefix``."""
    return (
        f"{prefix}encoder.block.0.layer.0.SelfAttention.q.weight" in keys
        and f"{prefix}encoder.final_layer_norm.weight" in keys
    )


def t5_prefix(keys: Container[str]) -> str | None:
    """The prefix a T5 encoder sits under in ``keys``, or None when there is none."""
    for prefix in T5_PREFIXES:
        if is_t5(keys, prefix):
            return prefix
    return None
