"""Which MODEL a hooked conditioning entry runs on (ComfyUI's weight hooks while sampling).

Conditioning entries carrying a :class:`loom.hooks.HookGroup` are batched per group; each
batch runs on a clone of the sampled MODEL with the group's weight patches added at
``strength_model`` times the hook's current keyframe strength, and entries without hooks
run on the MODEL (a clone of it for the run). Clones are made once per (group, strengths)
and kept for the run; they share one :class:`loom.memory.MergedWeightCache`, so switching
between them (every step, when only some entries are hooked) merges each group's weights
once per (group, strengths), as ComfyUI's hook mode MaxSpeed does, within the memory
manager's budget (a weight that does not fit is merged again at its next load). A group
whose strengths are all 0 runs on the MODEL.

Keyframes advance as ComfyUI's do: once per distinct sigma, a hook's schedule moves to the
last later keyframe whose start (as a sigma) is at or above the current sigma, once the
current keyframe has been used for its guaranteed steps (a keyframe starting before the
sampled range guarantees none); the search stops at the first keyframe that guarantees a
step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from loom import RunContext
from loom.hooks import HookGroup, HookKeyframes, WeightHook

if TYPE_CHECKING:
    from torch import Tensor


@attrs.define
class KeyframeCursor:
    """Where one keyframe schedule stands during one sampling run."""

    keyframes: HookKeyframes
    #: each keyframe's start as a sigma (``percent_to_sigma`` of its start percent)
    starts: tuple[float, ...]
    max_sigma: float
    index: int = 0
    used_steps: int = 0
    last_sigma: float | None = None

    @property
    def strength(self) -> float:
        if not self.keyframes.keyframes:
            return 1.0
        return float(self.keyframes.keyframes[self.index].strength)

    def _guaranteed(self, index: int) -> int:
        if self.starts[index] > self.max_sigma:
            return 0
        return self.keyframes.keyframes[index].guarantee_steps

    def advance(self, sigma: float) -> None:
        """Move to the keyframe for ``sigma`` (no-op when called again at the same sigma)."""
        frames = self.keyframes.keyframes
        if not frames or sigma == self.last_sigma:
            return
        if self.used_steps >= self._guaranteed(self.index):
            for index in range(self.index + 1, len(frames)):
                if self.starts[index] < sigma:
                    break
                self.index, self.used_steps = index, 0
                if self._guaranteed(index) > 0:
                    break
        self.used_steps += 1
        self.last_sigma = sigma


class HookedModels:
    """The MODEL clones one sampling run's hook groups run on (see the module doc)."""

    def __init__(self, model: Any, max_sigma: float) -> None:
        self.model = model
        self.max_sigma = float(max_sigma)
        #: the run's merged weights, shared by its clones (ComfyUI's hook mode MaxSpeed)
        self.cache = _new_cache(model)
        #: the MODEL's entries run on a clone sharing the cache (its own patches are
        #: merged once too)
        self.plain = model
        if self.cache is not None:
            self.plain = model.clone()
            self.plain.merged_cache = self.cache
        self._cursors: dict[int, tuple[HookKeyframes, KeyframeCursor]] = {}
        self._clones: dict[tuple[int, tuple[float, ...]], tuple[HookGroup, Any]] = {}
        self._foreign: tuple[Any, dict] | None = None

    def _cursor(self, hook: WeightHook) -> KeyframeCursor:
        found = self._cursors.get(id(hook.keyframes))
        if found is None:
            frames = hook.keyframes.keyframes
            sampling = self.model.model_sampling if frames else None
            starts = tuple(float(sampling.percent_to_sigma(k.start_percent)) for k in frames)
            cursor = KeyframeCursor(hook.keyframes, starts, self.max_sigma)
            found = self._cursors[id(hook.keyframes)] = (hook.keyframes, cursor)
        return found[1]

    def advance(self, hooks: HookGroup, sigma: float) -> None:
        """Advance the keyframes of every hook of ``hooks`` to ``sigma``."""
        for hook in hooks.hooks:
            self._cursor(hook).advance(sigma)

    def strengths(self, hooks: HookGroup) -> tuple[float, ...]:
        """Each hook's model strength at its current keyframe."""
        return tuple(h.strength_model * self._cursor(h).strength for h in hooks.hooks)

    def model_for(self, hooks: HookGroup | None, base: Any = None) -> Any:
        """The handle to run ``hooks``' entries on now: ``base`` (default: the MODEL) with
        the group's weight patches; ``base`` itself for None or all-zero strengths.

        ``base`` is the MODEL or a clone of it (a post-CFG function's patched handle, as
        PerturbedAttentionGuidance's): its hooked entries carry their hooks there too, as
        ComfyUI patches the hook weights whatever the call's model options."""
        base = self.plain if base is None or base is self.model else base
        if hooks is None:
            return base
        strengths = self.strengths(hooks)
        if all(s == 0 for s in strengths):
            return base
        clones = self._clones if base is self.plain else self._foreign_clones(base)
        key = (id(hooks), strengths)
        found = clones.get(key)
        if found is None:
            clone = base.clone()
            if self.cache is not None:
                clone.merged_cache = self.cache
            for hook, strength in zip(hooks.hooks, strengths, strict=True):
                if strength != 0:
                    hook.weights.add_patches(clone, "model", strength)
            found = clones[key] = (hooks, clone)
        return found[1]

    def _foreign_clones(self, base: Any) -> dict:
        """Hook-group clones of ``base``, a handle other than the MODEL; only the latest such
        base's are kept (post-CFG functions make a fresh one per step)."""
        if self._foreign is None or self._foreign[0] is not base:
            self._foreign = (base, {})
        return self._foreign[1]

    def release(self) -> None:
        """Drop the run's clones and the merged weights they kept."""
        self._clones.clear()
        self._foreign = None
        if self.cache is not None:
            self.cache.clear()


def _new_cache(model: Any) -> Any:
    """A merged-weights cache for a run of ``model``; None for a handle that cannot use one
    (not a :class:`loom.memory.ModelHandle`)."""
    if not hasattr(model, "merged_cache"):
        return None
    from loom.memory import MergedWeightCache

    return MergedWeightCache()


def load_for_call(ctx: RunContext | None, handle: Any, x: Tensor) -> None:
    """Make ``handle`` the applied clone before a model call on ``x`` (a no-op when it
    already is, or without a memory manager)."""
    from loom_samplers.model_interface import _is_model_handle, _memory

    memory = _memory(ctx)
    if memory is None or not _is_model_handle(handle):
        return
    required = getattr(handle, "memory_required", None)
    extra = int(required(tuple(x.shape))) if callable(required) else 0
    memory.load([handle], extra_memory=extra)
