"""Prompt pieces shared by the loom-comfy-compat tests."""

from __future__ import annotations

from typing import Any


def empty_image(size: int = 8, color: int = 0xFFFFFF) -> dict[str, Any]:
    return {
        "class_type": "EmptyImage",
        "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
    }
