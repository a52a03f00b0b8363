"""ComfyUI's hook nodes that read weight files, and ``SetClipHooks``.

``CreateHookLora`` makes a :class:`loom.hooks.WeightHook` whose weights are a LoRA file
(:class:`LoraHookWeights`): nothing is patched until the sampler (or a hooked CLIP) adds
the hook's patches to a clone, with the same key maps and adapters ``LoraLoader`` uses.
``SetClipHooks`` gives a CLIP the hooks' text-encoder patches (at ``strength_clip``) and,
with ``apply_to_conds``, attaches the hooks to everything it encodes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs

import loom
from loom.errors import LoomError
from loom.hooks import HOOKS, HookGroup, Hooks, WeightHook, attach_hooks
from loom.types import AdapterTarget, Clip
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


def _check_prev(value: Any, node: str) -> HookGroup:
    if value is None:
        return HookGroup()
    if isinstance(value, HookGroup):
        return value
    raise LoomError(
        f"{node}: input 'prev_hooks' expects HOOKS, got {type(value).__name__}",
        hint="a HOOK_KEYFRAMES schedule goes to SetHookKeyframes' hook_kf",
    )


def create_lora_hook(
    ctx: loom.RunContext,
    node: str,
    lora_name: str,
    strength_model: float,
    strength_clip: float,
    prev_hooks: Any,
) -> HookGroup:
    previous = _check_prev(prev_hooks, node)
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


class HookedClip:
    """A CLIP whose encodings carry ``hooks`` (``SetClipHooks``' ``apply_to_conds``); the
    wrapped CLIP already holds the hooks' text-encoder patches. Everything else is the
    wrapped CLIP's."""

    def __init__(self, clip: Any, hooks: HookGroup) -> None:
        self._clip = clip
        self.hooks = hooks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clip, name)

    def clone(self) -> HookedClip:
        return HookedClip(self._clip.clone(), self.hooks)

    def encode(self, text: str) -> list:
        return attach_hooks(self._clip.encode(text), self.hooks)

    def set_last_layer(self, layer: int) -> None:
        self._clip.set_last_layer(layer)


def hooks_on_clip(clip: Any, hooks: HookGroup, apply_to_conds: bool) -> Any:
    """A clone of ``clip`` with each hook's CLIP patches at ``strength_clip`` (keyframes
    ignored: ComfyUI drops them unless the CLIP is scheduled)."""
    inner = clip._clip if isinstance(clip, HookedClip) else clip
    clone = inner.clone()
    for hook in hooks.hooks:
        if hook.strength_clip != 0:
            hook.weights.add_patches(clone, "clip", hook.strength_clip)
    if apply_to_conds:
        present = clip.hooks if isinstance(clip, HookedClip) else None
        return HookedClip(clone, present.combine(hooks) if present is not None else hooks)
    return clone


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
        if self.schedule_clip and any(len(h.keyframes) for h in self.hooks.hooks):
            log.warning(
                "SetClipHooks: schedule_clip is not supported; the CLIP encodes with the "
                "hooks at their strength_clip throughout"
            )
        return hooks_on_clip(self.clip, self.hooks, self.apply_to_conds)


NODES = (CreateHookLora, CreateHookLoraModelOnly, SetClipHooks)
__all__ = ["HOOKS", "NODES", "HookedClip", "LoraHookWeights"]
