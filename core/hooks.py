"""Hooks: weight patches scoped to the conditioning entries that carry them (ComfyUI's
``advanced/hooks`` nodes).

A :class:`HookGroup` (the HOOKS socket) is an ordered set of :class:`WeightHook` objects.
Each hook holds a :class:`HookWeights` source (a LoRA file, a checkpoint taken "as a
LoRA"), its model and CLIP strengths, and a :class:`HookKeyframes` schedule
(HOOK_KEYFRAMES socket) that scales both strengths by sampling percent.

Conditioning entries carry a group under the :data:`HOOKS` option. While sampling, entries
are batched per group and each batch runs on a clone of the MODEL with the group's patches
added at the current keyframe strength; entries without hooks run on the MODEL as given.
Entries marked :data:`DEFAULT` are only evaluated where the other entries of their group
leave the latent uncovered. A CLIP given hooks (``SetClipHooks``) encodes with them and may
attach them to what it encodes: text encoder nodes build their conditioning through
:func:`encode_scheduled` (ComfyUI's ``CLIP.encode_from_tokens_scheduled``), the one place a
hooked CLIP (:class:`HookedEncoder`) schedules the encoding and attaches its hooks.

Torch-free: the patches themselves are built by the :class:`HookWeights` implementation
(loom-lora) when the sampler or CLIP asks for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Protocol, runtime_checkable

import attrs

from loom.errors import LoomError
from loom.types import AdapterTarget, Socket

#: Conditioning option holding a :class:`HookGroup` (ComfyUI's key).
HOOKS = "hooks"
#: Conditioning option marking a default entry (ComfyUI's key): evaluated only where the
#: group's other entries leave weight uncovered.
DEFAULT = "default"

#: The HOOKS socket: a :class:`HookGroup`.
Hooks = Annotated[Any, Socket("HOOKS")]
#: The HOOK_KEYFRAMES socket: a :class:`HookKeyframes`.
HookKeyframesSocket = Annotated[Any, Socket("HOOK_KEYFRAMES")]
#: The TIMESTEPS_RANGE socket: a :class:`TimestepsRange`.
TimestepsRangeSocket = Annotated[Any, Socket("TIMESTEPS_RANGE")]


@runtime_checkable
class HookWeights(Protocol):
    """Where a weight hook's patches come from (a LoRA file, a checkpoint as a LoRA).

    Implementations resolve weight names against the value they are given (through the
    model family's ``adapter_key_map``), so one hook works on whichever MODEL or CLIP it
    meets.
    """

    #: Says where the weights come from in messages (``CreateHookLora 'style.safetensors'``).
    label: str

    def add_patches(self, value: Any, kind: AdapterTarget, strength: float) -> int:
        """Queue this source's patches at ``strength`` on ``value``, a fresh clone of a
        MODEL (``kind == "model"``) or CLIP (``"clip"``); returns how many weights were
        patched. Raises :class:`loom.errors.LoomError` naming :attr:`label` when the
        weights fit nothing of ``value`` (weights of another model family)."""
        ...


@attrs.frozen
class HookKeyframe:
    """From ``start_percent`` of sampling on, hooks are applied at ``strength`` times their
    own strengths; the keyframe holds for at least ``guarantee_steps`` model steps once
    reached (unless it starts before the sampled range)."""

    strength: float
    start_percent: float = 0.0
    guarantee_steps: int = 1


@attrs.frozen
class HookKeyframes:
    """A schedule of :class:`HookKeyframe` sorted by ``start_percent`` (equal percents keep
    the order they were added in). Empty: strength 1 throughout."""

    keyframes: tuple[HookKeyframe, ...] = ()

    def add(self, *keyframes: HookKeyframe) -> HookKeyframes:
        """A new schedule with ``keyframes`` added."""
        merged = [*self.keyframes, *keyframes]
        return HookKeyframes(tuple(sorted(merged, key=lambda k: k.start_percent)))

    def __len__(self) -> int:
        return len(self.keyframes)


class _HookRef:
    """Identity shared by a hook and its re-keyframed copies (ComfyUI's ``hook_ref``)."""


@attrs.frozen(eq=False)
class WeightHook:
    """Patches from ``weights`` at ``strength_model`` on the MODEL and ``strength_clip`` on
    the CLIP, both scaled by the current keyframe's strength.

    ``ref`` identifies the hook across :meth:`with_keyframes` copies: a group never holds
    two hooks of one ref.
    """

    weights: HookWeights
    strength_model: float = 1.0
    strength_clip: float = 1.0
    keyframes: HookKeyframes = HookKeyframes()
    ref: _HookRef = attrs.field(factory=_HookRef)

    def with_keyframes(self, keyframes: HookKeyframes | None) -> WeightHook:
        return attrs.evolve(self, keyframes=keyframes or HookKeyframes())


@attrs.frozen(eq=False)
class HookGroup:
    """The HOOKS value: hooks applied together. Compared by identity: conditioning entries
    are batched together when they carry the same group object (as ComfyUI does)."""

    hooks: tuple[WeightHook, ...] = ()

    def __len__(self) -> int:
        return len(self.hooks)

    def combine(self, other: HookGroup | None) -> HookGroup:
        """A new group: this group's hooks then ``other``'s not already here (by ref)."""
        found = list(self.hooks)
        refs = {h.ref for h in found}
        for hook in other.hooks if other is not None else ():
            if hook.ref not in refs:
                found.append(hook)
                refs.add(hook.ref)
        return HookGroup(tuple(found))

    def with_keyframes(self, keyframes: HookKeyframes | None) -> HookGroup:
        """A new group whose every hook follows ``keyframes`` (None: no schedule)."""
        return HookGroup(tuple(h.with_keyframes(keyframes) for h in self.hooks))

    @staticmethod
    def combine_all(groups: Iterable[HookGroup | None]) -> HookGroup | None:
        """The given groups combined in order; None when none is given, and the group
        itself (not a copy) when only one is."""
        present = [g for g in groups if g is not None]
        if not present:
            return None
        if len(present) == 1:
            return present[0]
        out = present[0]
        for group in present[1:]:
            out = out.combine(group)
        return out


@attrs.frozen
class TimestepsRange:
    """A TIMESTEPS_RANGE value: sampling percents ``start_percent .. end_percent``."""

    start_percent: float = 0.0
    end_percent: float = 1.0


def attach_hooks(
    conditioning: Sequence[Any],
    hooks: HookGroup | None,
    cache: dict[tuple[int, int], HookGroup] | None = None,
) -> list[Any]:
    """New conditioning pairs carrying ``hooks``: an entry that already has hooks gets its
    group combined with ``hooks`` (one combined group per distinct pair, shared through
    ``cache`` so the entries still batch together)."""
    if hooks is None:
        return [[tensor, dict(options)] for tensor, options in conditioning]
    cache = {} if cache is None else cache
    out = []
    for tensor, options in conditioning:
        options = dict(options)
        present = options.get(HOOKS)
        if present is None:
            options[HOOKS] = hooks
        else:
            key = (id(present), id(hooks))
            if key not in cache:
                cache[key] = present.combine(hooks)
            options[HOOKS] = cache[key]
        out.append([tensor, options])
    return out


@runtime_checkable
class HookedEncoder(Protocol):
    """A CLIP given hooks (``SetClipHooks``): :meth:`encode_hooked` runs a text encoder
    node's encoding on the hooked CLIP (once per keyframe range when the CLIP schedules its
    hooks, each entry then limited to its range) and attaches the hooks to the entries when
    asked to (``apply_to_conds``)."""

    def encode_hooked(self, encode: Callable[[Any], list]) -> list: ...

    def plain_encoder(self) -> Any:
        """The CLIP with the hooks' weights at their CLIP strength, keyframes ignored, that
        attaches nothing (what ComfyUI's plain ``encode_from_tokens`` encodes with)."""
        ...


def encode_scheduled(clip: Any, encode: Callable[[Any], list]) -> list:
    """The CONDITIONING a text encoder node makes with ``clip``: ``encode(handle)`` builds
    the entries from a CLIP handle (the family's own, which it may check and call any
    method of). A hooked CLIP (:class:`HookedEncoder`) runs it with its hooked weights, per
    schedule range, and attaches its hooks, as ComfyUI's ``encode_from_tokens_scheduled``
    does for every encoder node that goes through it; any other CLIP is passed as it is.
    Nodes that only read tensors from a CLIP (ComfyUI's plain ``encode_from_tokens``:
    PhotoMakerEncode, CLIPTextEncodeControlnet) use the hooked weights without this."""
    if isinstance(clip, HookedEncoder):
        return clip.encode_hooked(encode)
    return encode(clip)


def plain_encoder(clip: Any) -> Any:
    """The CLIP a node that only reads tensors from ``clip`` encodes with (ComfyUI's
    ``encode_from_tokens``): a hooked CLIP's weights, unscheduled, attaching nothing."""
    return clip.plain_encoder() if isinstance(clip, HookedEncoder) else clip


__all__ = [
    "DEFAULT",
    "HOOKS",
    "HookGroup",
    "HookKeyframe",
    "HookKeyframes",
    "HookKeyframesSocket",
    "HookWeights",
    "HookedEncoder",
    "Hooks",
    "TimestepsRange",
    "TimestepsRangeSocket",
    "WeightHook",
    "attach_hooks",
    "check_hooks",
    "encode_scheduled",
    "plain_encoder",
]


def check_hooks(value: Any, node: str, name: str = "hooks") -> HookGroup | None:
    """``value`` (a node's input ``name``) if it is a HOOKS value or None; otherwise an error
    naming node and input (a HOOK_KEYFRAMES schedule wired where hooks are expected, say)."""
    if value is None or isinstance(value, HookGroup):
        return value
    what = "a HOOK_KEYFRAMES schedule" if isinstance(value, HookKeyframes) else type(value).__name__
    raise LoomError(
        f"{node}: input '{name}' expects HOOKS (from CreateHookLora, CombineHooks...), got {what}",
        hint="connect keyframes to SetHookKeyframes' hook_kf, and its HOOKS output here",
    )
