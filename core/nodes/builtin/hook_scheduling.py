"""ComfyUI's hook scheduling nodes: keyframe schedules (HOOK_KEYFRAMES), putting them on
hooks, and timestep ranges (TIMESTEPS_RANGE) for the conditioning-property nodes.

The values are :mod:`loom.hooks` types; the sampler reads them (loom-samplers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import loom
from loom.hooks import (
    HookKeyframe,
    HookKeyframes,
    HookKeyframesSocket,
    Hooks,
    TimestepsRange,
    TimestepsRangeSocket,
    check_hooks,
)
from loom.types import Socket

COMFY_MODULE = "comfy_extras.nodes_hooks"
INTERPOLATIONS = ("linear", "ease_in", "ease_out", "ease_in_out")
Floats = Annotated[Any, Socket("FLOATS")]

_PERCENT = {"min": 0.0, "max": 1.0, "step": 0.001}


# --- keyframes --------------------------------------------------------------------------


def _check_keyframes(value: Any, node: str) -> HookKeyframes:
    if value is None:
        return HookKeyframes()
    if isinstance(value, HookKeyframes):
        return value
    raise loom.LoomError(
        f"{node}: input 'prev_hook_kf' expects HOOK_KEYFRAMES, got {type(value).__name__}"
    )


@loom.outputs
class KeyframesOutput:
    hook_kf: HookKeyframesSocket = loom.output(name="HOOK_KF")


@loom.node(
    "CreateHookKeyframe",
    category="advanced/hooks/scheduling",
    display_name="Create Hook Keyframe",
    experimental=True,
)
class CreateHookKeyframe:
    strength_mult: float = loom.ui.float(1.0, min=-20.0, max=20.0, step=0.01)
    start_percent: float = loom.ui.float(0.0, **_PERCENT)
    prev_hook_kf: HookKeyframesSocket = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> KeyframesOutput:
        previous = _check_keyframes(self.prev_hook_kf, "CreateHookKeyframe")
        keyframe = HookKeyframe(self.strength_mult, self.start_percent)
        return KeyframesOutput(hook_kf=previous.add(keyframe))


def interpolate(start: float, end: float, count: int, method: str) -> list[float]:
    """``count`` values from ``start`` to ``end``: evenly spaced (``linear``), or eased by
    ``t**2`` (``ease_in``), ``1-(1-t)**2`` (``ease_out``), ``(1-cos(pi t))/2``
    (``ease_in_out``) of evenly spaced ``t`` in [0, 1] (ComfyUI's interpolation methods)."""
    import math

    import torch

    if method == "linear":
        return [float(v) for v in torch.linspace(start, end, count)]
    steps = [float(v) for v in torch.linspace(0, 1, count)]
    ease = {
        "ease_in": lambda t: t**2,
        "ease_out": lambda t: 1 - (1 - t) ** 2,
        "ease_in_out": lambda t: (1 - math.cos(t * math.pi)) / 2,
    }.get(method)
    if ease is None:
        raise loom.LoomError(
            f"unknown interpolation {method!r}; one of {', '.join(INTERPOLATIONS)}"
        )
    return [(end - start) * ease(t) + start for t in steps]


def _keyframes(
    previous: HookKeyframes, percents: Sequence[float], strengths: Sequence[float]
) -> HookKeyframes:
    # only the first keyframe of a generated run guarantees a step (ComfyUI's rule)
    made = [
        HookKeyframe(float(s), float(p), 1 if i == 0 else 0)
        for i, (p, s) in enumerate(zip(percents, strengths, strict=False))
    ]
    return previous.add(*made)


@loom.node(
    "CreateHookKeyframesInterpolated",
    category="advanced/hooks/scheduling",
    display_name="Create Hook Keyframes Interp.",
    experimental=True,
)
class CreateHookKeyframesInterpolated:
    strength_start: float = loom.ui.float(1.0, min=0.0, max=10.0, step=0.001)
    strength_end: float = loom.ui.float(1.0, min=0.0, max=10.0, step=0.001)
    interpolation: str = loom.ui.combo(list(INTERPOLATIONS))
    start_percent: float = loom.ui.float(0.0, **_PERCENT)
    end_percent: float = loom.ui.float(1.0, **_PERCENT)
    keyframes_count: int = loom.ui.int(5, min=2, max=100, step=1)
    print_keyframes: bool = loom.ui.boolean(False)
    prev_hook_kf: HookKeyframesSocket = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> KeyframesOutput:
        previous = _check_keyframes(self.prev_hook_kf, "CreateHookKeyframesInterpolated")
        count = self.keyframes_count
        percents = interpolate(self.start_percent, self.end_percent, count, "linear")
        strengths = interpolate(self.strength_start, self.strength_end, count, self.interpolation)
        _print(self.print_keyframes, percents, strengths)
        return KeyframesOutput(hook_kf=_keyframes(previous, percents, strengths))


def _print(enabled: bool, percents: Sequence[float], strengths: Sequence[float]) -> None:
    if enabled:
        for percent, strength in zip(percents, strengths, strict=False):
            print(f"Hook Keyframe - start_percent:{percent} = {strength}")


@loom.node(
    "CreateHookKeyframesFromFloats",
    category="advanced/hooks/scheduling",
    display_name="Create Hook Keyframes From Floats",
    experimental=True,
)
class CreateHookKeyframesFromFloats:
    floats_strength: Floats = loom.ui.input(force_input=True, default=-1, min=-1, step=0.001)
    start_percent: float = loom.ui.float(0.0, **_PERCENT)
    end_percent: float = loom.ui.float(1.0, **_PERCENT)
    print_keyframes: bool = loom.ui.boolean(False)
    prev_hook_kf: HookKeyframesSocket = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> KeyframesOutput:
        previous = _check_keyframes(self.prev_hook_kf, "CreateHookKeyframesFromFloats")
        values = self.floats_strength
        if isinstance(values, int | float):
            values = [float(values)]
        elif hasattr(values, "tolist"):
            values = values.reshape(-1).tolist()
        elif not isinstance(values, Iterable) or isinstance(values, str):
            raise loom.LoomError(
                "CreateHookKeyframesFromFloats: input 'floats_strength' must be a float or a "
                f"list of floats, got {type(values).__name__}"
            )
        strengths = [float(v) for v in values]
        percents = interpolate(self.start_percent, self.end_percent, len(strengths), "linear")
        _print(self.print_keyframes, percents, strengths)
        return KeyframesOutput(hook_kf=_keyframes(previous, percents, strengths))


@loom.node(
    "SetHookKeyframes",
    category="advanced/hooks/scheduling",
    display_name="Set Hook Keyframes",
    experimental=True,
)
class SetHookKeyframes:
    hooks: Hooks
    hook_kf: HookKeyframesSocket = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Hooks:
        hooks = check_hooks(self.hooks, "SetHookKeyframes")
        if self.hook_kf is None:
            return hooks
        if not isinstance(self.hook_kf, HookKeyframes):
            raise loom.LoomError(
                f"SetHookKeyframes: input 'hook_kf' expects HOOK_KEYFRAMES, got {type(self.hook_kf).__name__}"
            )
        return hooks.with_keyframes(self.hook_kf)


@loom.outputs
class RangeOutputs:
    timesteps_range: TimestepsRangeSocket = loom.output(name="TIMESTEPS_RANGE")
    before_range: TimestepsRangeSocket = loom.output(name="BEFORE_RANGE")
    after_range: TimestepsRangeSocket = loom.output(name="AFTER_RANGE")


@loom.node(
    "ConditioningTimestepsRange",
    category="advanced/hooks",
    display_name="Timesteps Range",
    experimental=True,
)
class ConditioningTimestepsRange:
    start_percent: float = loom.ui.float(0.0, **_PERCENT)
    end_percent: float = loom.ui.float(1.0, **_PERCENT)

    def run(self, ctx: loom.RunContext) -> RangeOutputs:
        return RangeOutputs(
            timesteps_range=TimestepsRange(self.start_percent, self.end_percent),
            before_range=TimestepsRange(0.0, self.start_percent),
            after_range=TimestepsRange(self.end_percent, 1.0),
        )


NODES = (
    CreateHookKeyframe,
    CreateHookKeyframesInterpolated,
    CreateHookKeyframesFromFloats,
    SetHookKeyframes,
    ConditioningTimestepsRange,
)


@loom.hookimpl
def register_nodes(register: Callable[..., None]) -> None:
    for node_class in NODES:
        register(node_class, python_module=COMFY_MODULE)
