"""Conditioning entries (:mod:`.cond_entries`) evaluated in batches, as ComfyUI's
``calc_cond_batch`` does (the guiders that combine the results are in :mod:`.guiders`).

* All entries of all groups that can share a batch are evaluated in one model call, in
  ComfyUI's order (the last compatible entry first, so ``[uncond, cond]``);
  ``memory_required`` + the memory manager may split the batch
  (:func:`.model_interface.batch_fits`). Entries outside their sigma range are skipped.
* Areas without a mask get ComfyUI's 8-pixel feathered edges; overlapping entries are
  averaged by their weights. Token-length padding by repetition up to the least common
  multiple (≤ 4x), as ``CONDCrossAttn``.
* ``control``: entries batch together only when they carry the same signal; its residuals for
  the batched call go to the model as ``cond["control"]``.
* ``hooks``: entries batch together only when they carry the same group, and each batch runs on
  the handle :class:`.hook_models.HookedModels` gives for its group (the MODEL with the group's
  weight patches at the current keyframe strength). ``default`` entries are evaluated only
  where the group's other entries leave weight: with a weight of ``relu(1 - sum of the others'
  weights)``, and not at all when that is zero everywhere (ComfyUI's
  ``finalize_default_conds``).

Not covered: ``model_options`` wrappers and pre/post-CFG functions, context windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from loom import RunContext
from loom.types import CONTROL_CONTEXT_INPUT
from loom_samplers.cond_entries import (
    CondEntry,
    pair_areas,
    resolve_conditioning,
    share_control_with_uncond,
)
from loom_samplers.hook_models import HookedModels, load_for_call
from loom_samplers.model_interface import batch_fits

if TYPE_CHECKING:
    from torch import Tensor

    from loom_samplers.step_cache import ModelCall

__all__ = [
    "CondEntry",
    "calc_cond_batch",
    "pair_areas",
    "resolve_conditioning",
    "share_control_with_uncond",
]


def _torch() -> Any:
    import torch

    return torch


@attrs.frozen
class _Chunk:
    x: Any
    mult: Any  # None for a plain chunk: all ones
    conds: dict[str, Any]
    area: tuple[int, ...] | None
    group: int
    plain: bool = False  # full size, no mask, strength 1: its weights are all ones
    control: Any = None
    hooks: Any = None
    key: object = None  # the entry's ``uid``: which conditioning entry this is


def _chunk(entry: CondEntry, x: Tensor, sigma: Tensor, group: int) -> _Chunk | None:
    torch = _torch()
    if entry.timestep_start is not None and float(sigma[0]) > entry.timestep_start:
        return None
    if entry.timestep_end is not None and float(sigma[0]) < entry.timestep_end:
        return None
    dims = x.ndim - 2
    area = None
    input_x = x
    if entry.area is not None:
        area = list(entry.area)
        for i in range(dims):
            area[i] = min(x.shape[i + 2] - area[dims + i], area[i])
            input_x = input_x.narrow(i + 2, area[dims + i], area[i])
    plain = entry.area is None and entry.mask is None and entry.strength == 1.0
    conds = {k: _process_cond(v, x, area, dims) for k, v in entry.model_conds.items()}
    if plain:
        return _Chunk(
            input_x, None, conds, None, group, True, entry.control, entry.hooks, entry.uid
        )
    if entry.mask is not None:
        mask = entry.mask[: input_x.shape[0]]
        if area is not None:
            for i in range(dims):
                mask = mask.narrow(i + 1, area[dims + i], area[i])
        mask = (mask * entry.mask_strength).unsqueeze(1)
        mask = mask.repeat(
            (input_x.shape[0] // mask.shape[0], input_x.shape[1]) + (1,) * (mask.ndim - 2)
        )
    else:
        mask = torch.ones_like(input_x)
    mult = mask * entry.strength
    if entry.mask is None and area is not None:
        _feather(mult, area, x.shape, dims)
    area_out = tuple(area) if area is not None else None
    return _Chunk(
        input_x, mult, conds, area_out, group, False, entry.control, entry.hooks, entry.uid
    )


def _feather(mult: Tensor, area: list[int], shape: Any, dims: int, fuzz: int = 8) -> None:
    for i in range(dims):
        rr = min(fuzz, mult.shape[2 + i] // 4)
        if area[dims + i] != 0:
            for t in range(rr):
                mult.narrow(i + 2, t, 1).mul_((1.0 / rr) * (t + 1))
        if area[i] + area[dims + i] < shape[i + 2]:
            for t in range(rr):
                mult.narrow(i + 2, area[i] - 1 - t, 1).mul_((1.0 / rr) * (t + 1))


def _process_cond(value: Any, x: Tensor, area: list[int] | None, dims: int) -> Any:
    """Repeat to the latent batch; crop spatial conds (same trailing shape as x) to the area."""
    if not hasattr(value, "shape"):
        return value
    batch = x.shape[0]
    if value.shape[0] != batch:
        repeats = -(-batch // value.shape[0])
        value = value.repeat(repeats, *([1] * (value.ndim - 1)))[:batch]
    if area is not None and value.ndim == x.ndim and tuple(value.shape[2:]) == tuple(x.shape[2:]):
        for i in range(dims):
            value = value.narrow(i + 2, area[dims + i], area[i])
    return value


def _can_concat(a: _Chunk, b: _Chunk) -> bool:
    if a.x.shape != b.x.shape or a.conds.keys() != b.conds.keys() or a.control is not b.control:
        return False
    if a.hooks is not b.hooks:
        return False
    for key, va in a.conds.items():
        vb = b.conds[key]
        if not hasattr(va, "shape"):
            if va is not vb:
                return False
        elif key in CROSS_ATTN_INPUTS:
            s1, s2 = va.shape, vb.shape
            if s1 != s2:
                if s1[0] != s2[0] or s1[2] != s2[2]:
                    return False
                if math.lcm(s1[1], s2[1]) // min(s1[1], s2[1]) > 4:
                    return False
        elif va.shape != vb.shape:
            return False
    return True


#: Model-call inputs holding text embeddings: rows of different token lengths are batched
#: by repeating each to the least common multiple (ComfyUI's ``CONDCrossAttn``).
CROSS_ATTN_INPUTS = frozenset({"c_crossattn", CONTROL_CONTEXT_INPUT})
_BATCHED_KEPT = 8  # batched conditionings a run keeps (one per batch layout it evaluates)


def _cat_conds(chunks: list[_Chunk], device: Any, kept: dict | None = None) -> dict[str, Any]:
    """The chunks' conditioning batched, tensors on ``device`` (the latent's, as ComfyUI).

    ``kept`` (a guider's, for one run) remembers what was batched from which tensors: the
    same conditioning tensors at every step give the same batch, made once instead of copied
    per step (the text conditioning of a CFG pair is most of a light model's step).
    """
    torch = _torch()
    out: dict[str, Any] = {}
    for key in chunks[0].conds:
        values = [c.conds[key] for c in chunks]
        if not hasattr(values[0], "shape"):
            out[key] = values[0]
            continue
        memo = (key, str(device), *map(id, values))
        if kept is not None and memo in kept:
            out[key] = kept[memo][1]  # kept[memo][0] holds the values: their ids stay theirs
            continue
        if key in CROSS_ATTN_INPUTS:
            length = math.lcm(*[v.shape[1] for v in values])
            out[key] = torch.cat(
                [v.repeat(1, length // v.shape[1], 1) if v.shape[1] < length else v for v in values]
            ).to(device)
        else:
            out[key] = torch.cat(values).to(device)
        if kept is not None:
            if len(kept) >= _BATCHED_KEPT:
                del kept[next(iter(kept))]
            kept[memo] = (values, out[key])
    return out


def calc_cond_batch(
    model: Any,
    groups: Sequence[list[CondEntry] | None],
    x: Tensor,
    sigma: Tensor,
    ctx: RunContext | None = None,
    kept: dict | None = None,
    model_call: ModelCall | None = None,
    hooked: HookedModels | None = None,
) -> list[Tensor]:
    """The weighted prediction of each group (None = not evaluated: zeros). ``kept``: see
    :func:`_cat_conds`; ``model_call``: makes each batched call in place of
    ``model.apply_model`` (EasyCache, :mod:`.step_cache`); ``hooked``: the run's hook-group
    handles (None: no entry has hooks)."""
    torch = _torch()
    outs: list[Any] = [None] * len(groups)  # made when a group needs them (ComfyUI's zeros)
    counts: list[Any] = [None] * len(groups)  # (and ones * 1e-37)
    direct: list[Any] = [_UNSET] * len(groups)
    to_run: list[_Chunk] = []
    defaults: dict[int, list[CondEntry]] = {}
    for g, entries in enumerate(groups):
        for entry in entries or ():
            if entry.default:
                defaults.setdefault(g, []).append(entry)
                continue
            chunk = _chunk(entry, x, sigma, g)
            if chunk is not None:
                to_run.append(chunk)
    for g, entries in defaults.items():
        to_run += _default_chunks(entries, [c for c in to_run if c.group == g], x, sigma, g)
    if hooked is not None:
        for chunk in to_run:
            if chunk.hooks is not None:
                hooked.advance(chunk.hooks, float(sigma[0]))
    entries_per_group = [sum(1 for c in to_run if c.group == g) for g in range(len(groups))]
    while to_run:
        first = to_run[0]
        compatible = [i for i in range(len(to_run)) if _can_concat(to_run[i], first)]
        compatible.reverse()
        batch = compatible[:1]
        for n in range(1, len(compatible) + 1):
            amount = compatible[: len(compatible) // n]
            shape = (len(amount) * first.x.shape[0], *first.x.shape[1:])
            if batch_fits(ctx, model, shape):
                batch = amount
                break
        chunks = [to_run.pop(i) for i in batch]
        input_x = torch.cat([c.x for c in chunks])
        sigma_in = torch.cat([sigma] * len(chunks))
        batched = _cat_conds(chunks, x.device, kept)
        # ComfyUI's ``cond_or_uncond``: the group of each chunk, for UNet patches that treat
        # the negative's items apart (SelfAttentionGuidance)
        batched = {**batched, "cond_or_uncond": tuple(c.group for c in chunks)}
        call_model = model
        if hooked is not None:
            call_model = hooked.model_for(first.hooks, model)
            load_for_call(ctx, call_model, input_x)
        if first.control is not None:
            residuals = first.control.residuals(input_x, sigma_in, batched, call_model, len(chunks))
            batched = {**batched, "control": residuals}
        if model_call is None:
            output = call_model.apply_model(input_x, sigma_in, batched)
        else:
            output = model_call(call_model, input_x, sigma_in, batched, [c.key for c in chunks])
        output = output.chunk(len(chunks))
        for c, out in zip(chunks, output, strict=True):
            if c.plain and entries_per_group[c.group] == 1:
                # the group's only entry, full size, weight 1: (0 + o*1) / (1e-37 + 1) == o exactly
                direct[c.group] = out
                continue
            if outs[c.group] is None:
                outs[c.group] = torch.zeros_like(x)
                counts[c.group] = torch.ones_like(x) * 1e-37
            target, count = outs[c.group], counts[c.group]
            if c.area is not None:
                dims = len(c.area) // 2
                for i in range(dims):
                    target = target.narrow(i + 2, c.area[i + dims], c.area[i])
                    count = count.narrow(i + 2, c.area[i + dims], c.area[i])
            if c.mult is None:  # weights of one: the same bits as adding out * ones and ones
                target += out
                count += 1.0
            else:
                target += out * c.mult
                count += c.mult
    results = []
    for d, o, c in zip(direct, outs, counts, strict=True):
        if d is not _UNSET:
            results.append(d)
        elif o is None:  # nothing evaluated for the group: 0 / 1e-37
            results.append(torch.zeros_like(x))
        else:
            results.append(o / c)
    return results


_UNSET = object()


def _default_chunks(
    entries: list[CondEntry], others: list[_Chunk], x: Tensor, sigma: Tensor, group: int
) -> list[_Chunk]:
    """Chunks for a group's default entries, weighted by what the group's other chunks
    leave uncovered (``relu(1 - their weights)``); none when nothing is left."""
    torch = _torch()
    left = torch.ones_like(x)
    for chunk in others:
        target = left
        if chunk.area is not None:
            dims = len(chunk.area) // 2
            for i in range(dims):
                target = target.narrow(i + 2, chunk.area[i + dims], chunk.area[i])
        target -= 1.0 if chunk.mult is None else chunk.mult
    torch.nn.functional.relu(left, inplace=True)
    if float(torch.max(left)) == 0.0:
        return []
    out = []
    for entry in entries:
        chunk = _chunk(entry, x, sigma, group)
        if chunk is None:
            continue
        mult = left
        if chunk.area is not None:
            dims = len(chunk.area) // 2
            for i in range(dims):
                mult = mult.narrow(i + 2, chunk.area[i + dims], chunk.area[i])
        out.append(attrs.evolve(chunk, mult=mult.clone(), plain=False))
    return out
