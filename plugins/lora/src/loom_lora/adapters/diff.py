"""Full differences and replacements: ``.diff`` / ``.diff_b``, ``.w_norm`` / ``.b_norm``, ``.set_weight``.

``.diff`` (and LyCORIS' norm-layer ``.w_norm``) adds ``strength * diff`` to the weight;
``.diff_b`` (``.b_norm``) does the same to the layer's bias. ``.set_weight`` replaces the
weight; unlike ComfyUI, which ignores strength for it, Loom blends ``lerp(W, value, s)``,
so strength 0 still leaves the model untouched and strength 1 is an exact replacement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DIFF, DIFF_B, W_NORM, B_NORM, SET_WEIGHT = ".diff", ".diff_b", ".w_norm", ".b_norm", ".set_weight"


def bias_key(weight_key: str) -> str:
    """``"a.b.weight"`` -> ``"a.b.bias"``."""
    base = weight_key[: -len(".weight")] if weight_key.endswith(".weight") else weight_key
    return f"{base}.bias"


class DiffAdapter:
    name = "diff"
    suffixes = (DIFF, DIFF_B, W_NORM, B_NORM, SET_WEIGHT)

    def patches(self, parts: Mapping[str, Any], weight_key: str) -> dict[str, Any]:
        from loom.memory import DiffPatch, ReplacePatch

        found: dict[str, Any] = {}
        for name in (W_NORM, DIFF):
            if name in parts:
                found[weight_key] = DiffPatch(parts[name])
        for name in (B_NORM, DIFF_B):
            if name in parts:
                found[bias_key(weight_key)] = DiffPatch(parts[name])
        if SET_WEIGHT in parts:
            found[weight_key] = ReplacePatch(parts[SET_WEIGHT])
        return found
