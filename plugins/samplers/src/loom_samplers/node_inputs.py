"""Inputs the sampling-node modules share: the live sampler and scheduler name lists their
combos show, and ComfyUI's unrounded float widgets."""

from __future__ import annotations

from typing import Any

import loom


def sampler_names(registry: Any) -> list[str]:
    names = registry.sampler_names() if registry is not None else []
    if names:
        return names
    from loom_samplers.samplers import SAMPLERS

    return list(SAMPLERS)


def scheduler_names(registry: Any) -> list[str]:
    names = registry.scheduler_names() if registry is not None else []
    if names:
        return names
    from loom_samplers.schedulers import SCHEDULERS

    return list(SCHEDULERS)


def unrounded_float(default: float, max: float, *, min: float = 0.0, step: float = 0.01) -> Any:
    """A FLOAT input with ``round: False``, as ComfyUI's custom-sampling nodes declare them."""
    return loom.ui.float(default, min=min, max=max, step=step, round=False)
