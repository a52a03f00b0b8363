"""ComfyUI's model-agnostic hook nodes: combining HOOKS, and the conditioning-property nodes
that attach hooks, masks and timestep ranges to conditioning.

Keyframe and timestep-range nodes are in :mod:`.hook_scheduling`; checkpoints as hooks in
:mod:`.hooks_model_as_lora`; the nodes that make hooks from LoRA files (``CreateHookLora``...)
and ``SetClipHooks`` are in loom-lora; the sampler applies hooks (loom-samplers). The values are :mod:`loom.hooks`
types. The mask, strength and timestep options are written exactly as
``ConditioningSetMask`` and ``ConditioningSetTimestepRange`` write them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import loom
from loom.hooks import (
    DEFAULT,
    HookGroup,
    Hooks,
    TimestepsRange,
    TimestepsRangeSocket,
    attach_hooks,
    check_hooks,
)
from loom.nodes.builtin.conditioning import mask_values, set_values
from loom.types import Conditioning, Mask

COMFY_MODULE = "comfy_extras.nodes_hooks"
_STRENGTH = {"min": 0.0, "max": 10.0, "step": 0.01}


# --- what the property nodes do to conditioning -----------------------------------------


def set_properties(
    conditioning: Conditioning,
    *,
    strength: float = 1.0,
    set_cond_area: str = "default",
    mask: Any = None,
    hooks: HookGroup | None = None,
    timesteps: TimestepsRange | None = None,
    cache: dict | None = None,
) -> Conditioning:
    """ComfyUI's order: hooks attached (combined with hooks already there), then the mask
    options (only with a mask: ``strength`` is the mask's strength), then the range."""
    out = attach_hooks(conditioning, hooks, cache)
    if mask is not None:
        out = set_values(out, mask_values(mask, strength, set_cond_area))
    if timesteps is not None:
        out = set_values(
            out, {"start_percent": timesteps.start_percent, "end_percent": timesteps.end_percent}
        )
    return out


def set_default(
    conditioning: Conditioning, hooks: HookGroup | None, cache: dict | None = None
) -> Conditioning:
    """Entries marked default (evaluated only where the others leave the latent uncovered)."""
    return set_values(attach_hooks(conditioning, hooks, cache), {DEFAULT: True})


def _check_range(value: Any, node: str) -> TimestepsRange | None:
    if value is None or isinstance(value, TimestepsRange):
        return value
    raise loom.LoomError(
        f"{node}: input 'timesteps' expects a TIMESTEPS_RANGE (from ConditioningTimestepsRange), "
        f"got {type(value).__name__}"
    )


# --- combining hooks --------------------------------------------------------------------


def _combine(node: str, values: Iterable[Any]) -> HookGroup | None:
    groups = [check_hooks(v, node, f"hooks_{chr(65 + i)}") for i, v in enumerate(values)]
    return HookGroup.combine_all(groups)


@loom.node(
    "CombineHooks2",
    category="advanced/hooks/combine",
    display_name="Combine Hooks [2]",
    experimental=True,
)
class CombineHooks2:
    hooks_A: Hooks = loom.ui.input(optional=True)
    hooks_B: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Hooks:
        return _combine("CombineHooks2", (self.hooks_A, self.hooks_B))


@loom.node(
    "CombineHooks4",
    category="advanced/hooks/combine",
    display_name="Combine Hooks [4]",
    experimental=True,
)
class CombineHooks4:
    hooks_A: Hooks = loom.ui.input(optional=True)
    hooks_B: Hooks = loom.ui.input(optional=True)
    hooks_C: Hooks = loom.ui.input(optional=True)
    hooks_D: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Hooks:
        values = (self.hooks_A, self.hooks_B, self.hooks_C, self.hooks_D)
        return _combine("CombineHooks4", values)


@loom.node(
    "CombineHooks8",
    category="advanced/hooks/combine",
    display_name="Combine Hooks [8]",
    experimental=True,
)
class CombineHooks8:
    hooks_A: Hooks = loom.ui.input(optional=True)
    hooks_B: Hooks = loom.ui.input(optional=True)
    hooks_C: Hooks = loom.ui.input(optional=True)
    hooks_D: Hooks = loom.ui.input(optional=True)
    hooks_E: Hooks = loom.ui.input(optional=True)
    hooks_F: Hooks = loom.ui.input(optional=True)
    hooks_G: Hooks = loom.ui.input(optional=True)
    hooks_H: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Hooks:
        values = (
            self.hooks_A,
            self.hooks_B,
            self.hooks_C,
            self.hooks_D,
            self.hooks_E,
            self.hooks_F,
            self.hooks_G,
            self.hooks_H,
        )
        return _combine("CombineHooks8", values)


# --- conditioning properties ------------------------------------------------------------


@loom.outputs
class PairOutput:
    positive: Conditioning = loom.output(name="positive")
    negative: Conditioning = loom.output(name="negative")


class _Props:
    def props(self, node: str) -> dict[str, Any]:
        return {
            "strength": self.strength,  # type: ignore[attr-defined]
            "set_cond_area": self.set_cond_area,  # type: ignore[attr-defined]
            "mask": self.mask,  # type: ignore[attr-defined]
            "hooks": check_hooks(self.hooks, node),  # type: ignore[attr-defined]
            "timesteps": _check_range(self.timesteps, node),  # type: ignore[attr-defined]
        }


@loom.node(
    "ConditioningSetProperties",
    category="advanced/hooks/cond single",
    display_name="Cond Set Props",
    experimental=True,
)
class ConditioningSetProperties(_Props):
    cond_NEW: Conditioning
    strength: float = loom.ui.float(1.0, **_STRENGTH)
    set_cond_area: str = loom.ui.combo(["default", "mask bounds"])
    mask: Mask = loom.ui.input(optional=True)
    hooks: Hooks = loom.ui.input(optional=True)
    timesteps: TimestepsRangeSocket = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        return set_properties(self.cond_NEW, **self.props("ConditioningSetProperties"))


@loom.node(
    "ConditioningSetPropertiesAndCombine",
    category="advanced/hooks/cond single",
    display_name="Cond Set Props Combine",
    experimental=True,
)
class ConditioningSetPropertiesAndCombine(_Props):
    cond: Conditioning
    cond_NEW: Conditioning
    strength: float = loom.ui.float(1.0, **_STRENGTH)
    set_cond_area: str = loom.ui.combo(["default", "mask bounds"])
    mask: Mask = loom.ui.input(optional=True)
    hooks: Hooks = loom.ui.input(optional=True)
    timesteps: TimestepsRangeSocket = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        new = set_properties(self.cond_NEW, **self.props("ConditioningSetPropertiesAndCombine"))
        return list(self.cond) + new


@loom.node(
    "PairConditioningSetProperties",
    category="advanced/hooks/cond pair",
    display_name="Cond Pair Set Props",
    experimental=True,
)
class PairConditioningSetProperties(_Props):
    positive_NEW: Conditioning
    negative_NEW: Conditioning
    strength: float = loom.ui.float(1.0, **_STRENGTH)
    set_cond_area: str = loom.ui.combo(["default", "mask bounds"])
    mask: Mask = loom.ui.input(optional=True)
    hooks: Hooks = loom.ui.input(optional=True)
    timesteps: TimestepsRangeSocket = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> PairOutput:
        props = self.props("PairConditioningSetProperties")
        cache: dict = {}
        return PairOutput(
            positive=set_properties(self.positive_NEW, cache=cache, **props),
            negative=set_properties(self.negative_NEW, cache=cache, **props),
        )


@loom.node(
    "PairConditioningSetPropertiesAndCombine",
    category="advanced/hooks/cond pair",
    display_name="Cond Pair Set Props Combine",
    experimental=True,
)
class PairConditioningSetPropertiesAndCombine(_Props):
    positive: Conditioning
    negative: Conditioning
    positive_NEW: Conditioning
    negative_NEW: Conditioning
    strength: float = loom.ui.float(1.0, **_STRENGTH)
    set_cond_area: str = loom.ui.combo(["default", "mask bounds"])
    mask: Mask = loom.ui.input(optional=True)
    hooks: Hooks = loom.ui.input(optional=True)
    timesteps: TimestepsRangeSocket = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> PairOutput:
        props = self.props("PairConditioningSetPropertiesAndCombine")
        cache: dict = {}
        return PairOutput(
            positive=list(self.positive) + set_properties(self.positive_NEW, cache=cache, **props),
            negative=list(self.negative) + set_properties(self.negative_NEW, cache=cache, **props),
        )


@loom.node(
    "PairConditioningCombine",
    category="advanced/hooks/cond pair",
    display_name="Cond Pair Combine",
    experimental=True,
)
class PairConditioningCombine:
    positive_A: Conditioning
    negative_A: Conditioning
    positive_B: Conditioning
    negative_B: Conditioning

    def run(self, ctx: loom.RunContext) -> PairOutput:
        return PairOutput(
            positive=set_properties(self.positive_A) + set_properties(self.positive_B),
            negative=set_properties(self.negative_A) + set_properties(self.negative_B),
        )


@loom.node(
    "PairConditioningSetDefaultCombine",
    category="advanced/hooks/cond pair",
    display_name="Cond Pair Set Default Combine",
    experimental=True,
)
class PairConditioningSetDefaultCombine:
    positive: Conditioning
    negative: Conditioning
    positive_DEFAULT: Conditioning
    negative_DEFAULT: Conditioning
    hooks: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> PairOutput:
        hooks = check_hooks(self.hooks, "PairConditioningSetDefaultCombine")
        cache: dict = {}
        return PairOutput(
            positive=list(self.positive) + set_default(self.positive_DEFAULT, hooks, cache),
            negative=list(self.negative) + set_default(self.negative_DEFAULT, hooks, cache),
        )


@loom.node(
    "ConditioningSetDefaultCombine",
    category="advanced/hooks/cond single",
    display_name="Cond Set Default Combine",
    experimental=True,
)
class ConditioningSetDefaultCombine:
    cond: Conditioning
    cond_DEFAULT: Conditioning
    hooks: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Conditioning:
        hooks = check_hooks(self.hooks, "ConditioningSetDefaultCombine")
        return list(self.cond) + set_default(self.cond_DEFAULT, hooks)


NODES = (
    CombineHooks2,
    CombineHooks4,
    CombineHooks8,
    ConditioningSetProperties,
    ConditioningSetPropertiesAndCombine,
    PairConditioningSetProperties,
    PairConditioningSetPropertiesAndCombine,
    PairConditioningCombine,
    PairConditioningSetDefaultCombine,
    ConditioningSetDefaultCombine,
)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
