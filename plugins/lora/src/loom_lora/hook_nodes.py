"""ComfyUI's hook nodes that read weight files, and ``SetClipHooks``.

``CreateHookLora`` makes a :class:`loom.hooks.WeightHook` whose weights are a LoRA file
(:class:`LoraHookWeights`): nothing is patched until the sampler (or a hooked CLIP) adds
the hook's patches to a clone, with the same key maps and adapters ``LoraLoader`` uses.
``SetClipHooks`` gives a CLIP the hooks' text-encoder patches (at ``strength_clip``, or per
keyframe range with ``schedule_clip``) and, with ``apply_to_conds``, attaches the hooks to
everything it encodes.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

import loom
from loom.errors import LoomError
from loom.hooks import HookGroup, Hooks, WeightHook, attach_hooks, check_hooks
from loom.types import AdapterKeyMap, AdapterTarget, Clip
from loom_lora.loader import Target, apply_report, plan_patches
from loom_lora.nodes import adapters_of, key_map_of, lora_files, resolve_lora

log = logging.getLogger(__name__)

_STRENGTH = {"min": -20.0, "max": 20.0, "step": 0.01}


@attrs.frozen(eq=False)
class LoraHookWeights:
    """A LoRA file as a hook's weights (implements :class:`loom.hooks.HookWeights`)."""

    label: str
    path: Path
    adapters: tuple[Any, ...]
    #: ``(value, kind) -> AdapterKeyMap``: the model families' ``adapter_key_map`` answer.
    key_map: Any

    def add_patches(self, value: Any, kind: AdapterTarget, strength: float) -> int:
        from loom.memory import open_safetensors

        answer = self.key_map(value, kind)
        target = Target(kind, answer.handle, answer.keys, strength, answer.slices)
        other = ("clip",) if kind == "model" else ("model",)
        report = plan_patches(open_safetensors(self.path), [target], self.adapters, other)
        count = apply_report(report, [target]).get(kind, 0)
        if count == 0 and report.unmatched:
            raise LoomError(
                f"{self.label}: none of the LoRA's {len(report.unmatched)} {kind} keys fits "
                f"this {'MODEL' if kind == 'model' else 'CLIP'} ({type(value).__name__}); "
                "is it a LoRA for another model family?",
                hint="use a LoRA made for the checkpoint being sampled",
            )
        log.info("hook %s: %d %s weights patched at %.3g", self.label, count, kind, strength)
        return count


def create_lora_hook(
    ctx: loom.RunContext,
    node: str,
    lora_name: str,
    strength_model: float,
    strength_clip: float,
    prev_hooks: Any,
) -> HookGroup:
    previous = check_hooks(prev_hooks, node, "prev_hooks") or HookGroup()
    if strength_model == 0 and strength_clip == 0:
        return previous
    path = resolve_lora(ctx, lora_name)
    weights = LoraHookWeights(
        label=f"{node} (lora_name {lora_name!r}, file {path})",
        path=path,
        adapters=tuple(adapters_of(ctx)),
        key_map=lambda value, kind: key_map_of(ctx, value, kind),
    )
    hook = WeightHook(weights, strength_model=strength_model, strength_clip=strength_clip)
    return previous.combine(HookGroup((hook,)))


@loom.node(
    "CreateHookLora",
    category="advanced/hooks/create",
    display_name="Create Hook LoRA",
    experimental=True,
)
class CreateHookLora:
    lora_name: str = loom.ui.combo(lora_files)
    strength_model: float = loom.ui.float(1.0, **_STRENGTH)
    strength_clip: float = loom.ui.float(1.0, **_STRENGTH)
    prev_hooks: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Hooks:
        return create_lora_hook(
            ctx,
            "CreateHookLora",
            self.lora_name,
            self.strength_model,
            self.strength_clip,
            self.prev_hooks,
        )


@loom.node(
    "CreateHookLoraModelOnly",
    category="advanced/hooks/create",
    display_name="Create Hook LoRA (MO)",
    experimental=True,
)
class CreateHookLoraModelOnly:
    lora_name: str = loom.ui.combo(lora_files)
    strength_model: float = loom.ui.float(1.0, **_STRENGTH)
    prev_hooks: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Hooks:
        return create_lora_hook(
            ctx,
            "CreateHookLoraModelOnly",
            self.lora_name,
            self.strength_model,
            0.0,
            self.prev_hooks,
        )


def clip_schedule(hooks: HookGroup) -> list[tuple[tuple[float, float], list[float]]]:
    """``[((start, end), [keyframe strength of each hook])]``: the percent ranges a scheduled
    CLIP encodes separately (ComfyUI's ``get_hooks_for_clip_schedule``).

    Each hook's keyframes become ranges wherever its strength changes (a keyframe starting
    where the previous one did replaces it); all hooks' range ends, with 0, cut ``[0, 1]``
    into the ranges returned; in each, a hook has the strength of its first range that
    overlaps it, or 1 where none does.
    """
    per_hook: list[list[tuple[tuple[float, float], float]]] = []
    for hook in hooks.hooks:
        frames = hook.keyframes.keyframes
        if not frames:
            per_hook.append([((0.0, 1.0), 1.0)])
            continue
        ranges = []
        previous = frames[0]
        for frame in frames:
            if frame.start_percent > previous.start_percent and not math.isclose(
                frame.strength, previous.strength
            ):
                ranges.append(((previous.start_percent, frame.start_percent), previous.strength))
                previous = frame
            elif frame.start_percent == previous.start_percent:
                previous = frame
        if not math.isclose(previous.start_percent, 1.0):
            ranges.append(((previous.start_percent, 1.0), previous.strength))
        per_hook.append(ranges)
    bounds = sorted({0.0, *(v for ranges in per_hook for (span, _) in ranges for v in span)})
    out = []
    for low, high in itertools.pairwise(bounds):
        strengths = []
        for ranges in per_hook:
            found = [s for (a, b), s in ranges if a < high and b > low]
            strengths.append(float(found[0]) if found else 1.0)
        out.append(((low, high), strengths))
    return out


def _patched(clip: Any, hooks: HookGroup, multipliers: list[float] | None = None) -> Any:
    """A clone of ``clip`` with each hook's CLIP patches at ``strength_clip`` (times its
    keyframe strength in ``multipliers``)."""
    clone = clip.clone()
    for index, hook in enumerate(hooks.hooks):
        strength = hook.strength_clip * (multipliers[index] if multipliers else 1.0)
        if strength != 0:
            hook.weights.add_patches(clone, "clip", strength)
    return clone


@attrs.frozen
class _BothHandles:
    """Two clones of one CLIP module patched alike (what ``adapter_key_map`` hands back
    for a :class:`HookedClip`)."""

    first: Any
    second: Any

    @property
    def module(self) -> Any:
        return self.second.module

    def add_patches(self, patches: Any, strength: float = 1.0) -> list[str]:
        self.first.add_patches(patches, strength)
        return self.second.add_patches(patches, strength)


class HookedClip:
    """A CLIP given hooks by ``SetClipHooks``.

    Unscheduled, it encodes with every hook at ``strength_clip`` (keyframes ignored, as in
    ComfyUI). Scheduled, a prompt is encoded once per :func:`clip_schedule` range, with the
    hooks at their keyframe strengths there, and each entry gets ``clip_start_percent`` /
    ``clip_end_percent`` (the sampler uses it only within that range). With
    ``apply_to_conds`` the entries carry the hooks. Everything else is the wrapped CLIP's.
    """

    def __init__(
        self,
        base: Any,
        hooks: HookGroup,
        apply_to_conds: bool,
        scheduled: bool,
        key_map: Callable[[Any, AdapterTarget], AdapterKeyMap],
    ) -> None:
        self._base = base
        self._clip = _patched(base, hooks)
        self.hooks = hooks
        self.apply_to_conds = apply_to_conds
        self.scheduled = scheduled
        self._key_map = key_map

    def adapter_key_map(self, kind: AdapterTarget) -> AdapterKeyMap | None:
        """The wrapped CLIP's key map, its handle patching both the unhooked CLIP and the
        hooked one (so a LoraLoader after SetClipHooks patches every encoding)."""
        if kind != "clip":
            return None
        base, hooked = self._key_map(self._base, kind), self._key_map(self._clip, kind)
        return attrs.evolve(hooked, handle=_BothHandles(base.handle, hooked.handle))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # private and dunder names are never the wrapped CLIP's
            raise AttributeError(name)
        return getattr(self._clip, name)

    def clone(self) -> HookedClip:
        other = copy.copy(self)
        other._base, other._clip = self._base.clone(), self._clip.clone()
        return other

    def _attach(self, conditioning: list) -> list:
        return attach_hooks(conditioning, self.hooks) if self.apply_to_conds else conditioning

    def encode_hooked(self, encode: Callable[[Any], list]) -> list:
        """``encode`` (a node's encoding, given a CLIP handle) run on the hooked CLIP (per
        schedule range when scheduled), the hooks attached with ``apply_to_conds``
        (:func:`loom.hooks.encode_scheduled`)."""
        if not self.scheduled:
            return self._attach(encode(self._clip))
        out = []
        for (start, end), multipliers in clip_schedule(self.hooks):
            encoded = encode(_patched(self._base, self.hooks, multipliers))
            span = {"clip_start_percent": start, "clip_end_percent": end}
            out += [[tensor, {**options, **span}] for tensor, options in encoded]
        return self._attach(out)

    def plain_encoder(self) -> Any:
        """The CLIP with every hook at ``strength_clip``, attaching nothing."""
        return self._clip

    def encode(self, text: str) -> list:
        return self.encode_hooked(lambda clip: clip.encode(text))

    def set_last_layer(self, layer: int) -> None:
        self._base.set_last_layer(layer)
        self._clip.set_last_layer(layer)


@loom.node(
    "SetClipHooks",
    category="advanced/hooks/clip",
    display_name="Set CLIP Hooks",
    experimental=True,
)
class SetClipHooks:
    clip: Clip
    apply_to_conds: bool = loom.ui.boolean(True)
    schedule_clip: bool = loom.ui.boolean(False)
    hooks: Hooks = loom.ui.input(optional=True)

    def run(self, ctx: loom.RunContext) -> Clip:
        if self.hooks is None:
            return self.clip
        if not isinstance(self.hooks, HookGroup):
            raise LoomError(
                f"SetClipHooks: input 'hooks' expects HOOKS, got {type(self.hooks).__name__}"
            )
        clip, hooks = self.clip, self.hooks
        if isinstance(clip, HookedClip):  # hooks set twice: both sets, on the unhooked CLIP
            clip, hooks = clip._base, clip.hooks.combine(hooks)
        if not self.apply_to_conds and not self.schedule_clip:
            return _patched(clip, hooks)
        key_map = lambda value, kind: key_map_of(ctx, value, kind)  # noqa: E731
        return HookedClip(clip, hooks, self.apply_to_conds, self.schedule_clip, key_map)


NODES = (CreateHookLora, CreateHookLoraModelOnly, SetClipHooks)
__all__ = ["NODES", "HookedClip", "LoraHookWeights", "clip_schedule"]
