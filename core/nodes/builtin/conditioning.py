"""ComfyUI's conditioning nodes: combine, average, concat, areas, masks, zero-out, timestep range.

A CONDITIONING value is a list of ``[tensor, options]`` pairs: the text embedding
``[B, T, D]`` and a dict of options the sampler reads (``pooled_output``, ``area``,
``strength``, ``mask``, ``start_percent`` ...). Every node here returns new pairs with
copied option dicts; inputs are never mutated, because they may be cached and shared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import loom
from loom.errors import NodeInputError
from loom.input_checks import check_batches, check_matching
from loom.types import Conditioning, Mask

log = logging.getLogger(__name__)

COMFY_MODULE = "nodes"
MAX_RESOLUTION = 16384


def set_values(conditioning: Conditioning, values: Mapping[str, Any]) -> Conditioning:
    """New pairs with ``values`` written into a copy of each options dict."""
    return [[tensor, {**options, **values}] for tensor, options in conditioning]


def _first_of(conditioning: Conditioning, node: str) -> Any:
    if not conditioning:
        raise NodeInputError(node, "conditioning_from", "conditioning_from holds no conditioning")
    if len(conditioning) > 1:
        log.warning(
            "%s: conditioning_from contains more than 1 cond, only the first one will "
            "actually be applied to conditioning_to.",
            node,
        )
    return conditioning[0]


def _check_fits(node: str, to: Any, source: Any, *, broadcast: bool) -> None:
    """Conditioning mixed token by token needs the same width (the same text encoder) and
    batch (or, where it broadcasts, a batch of 1)."""
    tensors = {"conditioning_to": to, "conditioning_from": source}
    check_matching(
        node,
        tensors,
        dim=2,
        what="width",
        hint="both must come from the same kind of text encoder (model family)",
    )
    check_batches(node, tensors, broadcast=tuple(tensors) if broadcast else ())


@loom.node("ConditioningCombine", category="conditioning", display_name="Conditioning (Combine)")
class ConditioningCombine:
    conditioning_1: Conditioning
    conditioning_2: Conditioning

    def run(self, ctx: loom.RunContext) -> Conditioning:
        return list(self.conditioning_1) + list(self.conditioning_2)


# ComfyUI's display-name table spells this key "ConditioningAverage " (trailing space), so
# its /object_info shows the class name; no display_name keeps that.
@loom.node("ConditioningAverage", category="conditioning")
class ConditioningAverage:
    conditioning_to: Conditioning
    conditioning_from: Conditioning
    conditioning_to_strength: float = loom.ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        import torch

        strength = self.conditioning_to_strength
        cond_from, options_from = _first_of(self.conditioning_from, "ConditioningAverage")
        pooled_from = options_from.get("pooled_output")
        out = []
        for t1, options_to in self.conditioning_to:
            _check_fits("ConditioningAverage", t1, cond_from, broadcast=True)
            pooled_to = options_to.get("pooled_output", pooled_from)
            t0 = cond_from[:, : t1.shape[1]]
            if t0.shape[1] < t1.shape[1]:  # pad the shorter "from" tokens with zeros
                pad = torch.zeros(
                    (t0.shape[0], t1.shape[1] - t0.shape[1], t1.shape[2]),
                    dtype=t0.dtype,
                    device=t0.device,
                )
                t0 = torch.cat([t0, pad], dim=1)
            mixed = t1 * strength + t0 * (1.0 - strength)
            options = dict(options_to)
            if pooled_from is not None and pooled_to is not None:
                options["pooled_output"] = pooled_to * strength + pooled_from * (1.0 - strength)
            elif pooled_from is not None:
                options["pooled_output"] = pooled_from
            out.append([mixed, options])
        return out


@loom.node("ConditioningConcat", category="conditioning", display_name="Conditioning (Concat)")
class ConditioningConcat:
    conditioning_to: Conditioning
    conditioning_from: Conditioning

    def run(self, ctx: loom.RunContext) -> Conditioning:
        import torch

        cond_from, _ = _first_of(self.conditioning_from, "ConditioningConcat")
        for t1, _ in self.conditioning_to:
            _check_fits("ConditioningConcat", t1, cond_from, broadcast=False)
        return [
            [torch.cat((t1, cond_from), 1), dict(options)] for t1, options in self.conditioning_to
        ]


@loom.node("ConditioningSetArea", category="conditioning", display_name="Conditioning (Set Area)")
class ConditioningSetArea:
    conditioning: Conditioning
    width: int = loom.ui.int(64, min=64, max=MAX_RESOLUTION, step=8)
    height: int = loom.ui.int(64, min=64, max=MAX_RESOLUTION, step=8)
    x: int = loom.ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    y: int = loom.ui.int(0, min=0, max=MAX_RESOLUTION, step=8)
    strength: float = loom.ui.float(1.0, min=0.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        # area = (height, width, y, x) in latent units (pixels // 8), as ComfyUI stores it
        area = (self.height // 8, self.width // 8, self.y // 8, self.x // 8)
        return set_values(
            self.conditioning,
            {
                "area": area,
                "strength": self.strength,
                "set_area_to_bounds": False,
            },
        )


@loom.node(
    "ConditioningSetAreaPercentage",
    category="conditioning",
    display_name="Conditioning (Set Area with Percentage)",
)
class ConditioningSetAreaPercentage:
    conditioning: Conditioning
    width: float = loom.ui.float(1.0, min=0, max=1.0, step=0.01)
    height: float = loom.ui.float(1.0, min=0, max=1.0, step=0.01)
    x: float = loom.ui.float(0, min=0, max=1.0, step=0.01)
    y: float = loom.ui.float(0, min=0, max=1.0, step=0.01)
    strength: float = loom.ui.float(1.0, min=0.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        area = ("percentage", self.height, self.width, self.y, self.x)
        return set_values(
            self.conditioning,
            {
                "area": area,
                "strength": self.strength,
                "set_area_to_bounds": False,
            },
        )


@loom.node("ConditioningSetAreaStrength", category="conditioning")
class ConditioningSetAreaStrength:
    conditioning: Conditioning
    strength: float = loom.ui.float(1.0, min=0.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        return set_values(self.conditioning, {"strength": self.strength})


@loom.node("ConditioningSetMask", category="conditioning", display_name="Conditioning (Set Mask)")
class ConditioningSetMask:
    conditioning: Conditioning
    mask: Mask
    strength: float = loom.ui.float(1.0, min=0.0, max=10.0, step=0.01)
    set_cond_area: str = loom.ui.combo(["default", "mask bounds"])

    def run(self, ctx: loom.RunContext) -> Conditioning:
        return set_values(
            self.conditioning, mask_values(self.mask, self.strength, self.set_cond_area)
        )


def mask_values(mask: Any, strength: float, set_cond_area: str) -> dict[str, Any]:
    """The options ConditioningSetMask writes: a ``[B, H, W]`` mask, its strength, and
    whether the entry's area shrinks to the mask's bounds (``set_cond_area != "default"``)."""
    if mask.ndim < 3:
        mask = mask.unsqueeze(0)
    return {
        "mask": mask,
        "set_area_to_bounds": set_cond_area != "default",
        "mask_strength": strength,
    }


@loom.node("ConditioningZeroOut", category="advanced/conditioning")
class ConditioningZeroOut:
    conditioning: Conditioning

    def run(self, ctx: loom.RunContext) -> Conditioning:
        import torch

        out = []
        for tensor, options in self.conditioning:
            options = dict(options)
            for key in ("pooled_output", "conditioning_lyrics"):
                if options.get(key) is not None:
                    options[key] = torch.zeros_like(options[key])
            out.append([torch.zeros_like(tensor), options])
        return out


@loom.node("ConditioningSetTimestepRange", category="advanced/conditioning")
class ConditioningSetTimestepRange:
    conditioning: Conditioning
    start: float = loom.ui.float(0.0, min=0.0, max=1.0, step=0.001)
    end: float = loom.ui.float(1.0, min=0.0, max=1.0, step=0.001)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        return set_values(self.conditioning, {"start_percent": self.start, "end_percent": self.end})


NODES = (
    ConditioningCombine,
    ConditioningAverage,
    ConditioningConcat,
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength,
    ConditioningSetMask,
    ConditioningZeroOut,
    ConditioningSetTimestepRange,
)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
