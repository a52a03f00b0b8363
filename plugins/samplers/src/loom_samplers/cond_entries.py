"""Conditioning lists resolved for a latent into :class:`CondEntry` values, as ComfyUI's
``comfy/samplers.py`` prepares them before ``calc_cond_batch`` (:mod:`.conditioning_batches`
evaluates them).

Options of an entry: ``area`` (``(h, w, y, x)`` in latent pixels or ``("percentage", h, w, y,
x)``), ``strength``, ``mask`` (+ ``mask_strength``, ``set_area_to_bounds``), resized bilinearly
to the latent; ``start_percent`` / ``end_percent`` become sigma ranges (``timestep_start`` /
``timestep_end``), narrowed by ``clip_start_percent`` / ``clip_end_percent`` (entries of a
scheduled hooked CLIP); ``control`` (a :class:`loom.types.ControlSignal`), copied onto negative
entries that have none by ``control_apply_to_uncond`` (:func:`share_control_with_uncond`);
``hooks`` (a :class:`loom.hooks.HookGroup`) and ``default``. Each area entry gets a counterpart
with the same area in the other groups (``create_cond_with_same_area_if_none``,
:func:`pair_areas`). Family-specific options reach the model through its ``extra_conds``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from loom.errors import LoomError
from loom.hooks import DEFAULT, HOOKS, HookGroup
from loom.types import CONTROL_CONTEXT_INPUT, CONTROL_CROSS_ATTN_OPTION

if TYPE_CHECKING:
    from torch import Tensor


def _torch() -> Any:
    import torch

    return torch


@attrs.frozen
class CondEntry:
    """One conditioning entry, resolved for a latent shape."""

    model_conds: Mapping[str, Any]
    area: tuple[int, ...] | None = None
    strength: float = 1.0
    mask: Any = None
    mask_strength: float = 1.0
    timestep_start: float | None = None
    timestep_end: float | None = None
    control: Any = None  # a loom.types.ControlSignal
    control_apply_to_uncond: bool = False
    hooks: Any = None  # a loom.hooks.HookGroup
    default: bool = False
    #: which entry this is (ComfyUI's per-entry ``uuid``): a step cache keys its cached
    #: output by it; copies made from the entry (an area's counterpart, a shared control)
    #: keep it, as ComfyUI's dict copies keep the uuid
    uid: object = attrs.field(factory=object, eq=False, repr=False)


# --- preparing conditioning lists ------------------------------------------------------


def resolve_conditioning(
    conditioning: Sequence[Any],
    model: Any,
    noise: Tensor,
    *,
    prompt_type: str,
    latent_image: Tensor | None = None,
    denoise_mask: Tensor | None = None,
    seed: int | None = None,
) -> list[CondEntry]:
    """Turn a CONDITIONING list into :class:`CondEntry` objects for ``noise``'s shape."""
    dims = tuple(noise.shape[2:])
    sampling = model.model_sampling
    entries = []
    for item in conditioning:
        tensor, options = item[0], dict(item[1])
        area = _resolve_area(options.get("area"), dims)
        _check_area_overlaps(area, dims)
        mask = None
        if options.get("mask") is not None:
            mask, area = _resolve_mask(options["mask"], dims, noise.device, options, area)
        start, end = _sigma_range(sampling, options)
        model_conds = _model_conds(
            model,
            tensor,
            options,
            noise=noise,
            latent_image=latent_image,
            denoise_mask=denoise_mask,
            prompt_type=prompt_type,
            seed=seed,
        )
        entries.append(
            CondEntry(
                model_conds,
                area,
                float(options.get("strength", 1.0)),
                mask,
                float(options.get("mask_strength", 1.0)),
                start,
                end,
                options.get("control"),
                bool(options.get("control_apply_to_uncond", False)),
                _hooks_of(options),
                bool(options.get(DEFAULT, False)),
            )
        )
    return entries


def _sigma_range(sampling: Any, options: Mapping[str, Any]) -> tuple[Any, Any]:
    """The entry's sigma range: its ``start_percent`` / ``end_percent``; an entry a scheduled
    CLIP encoded for ``clip_start_percent .. clip_end_percent`` takes the overlap of both."""
    if "clip_start_percent" in options:
        low = max(options["clip_start_percent"], options.get("start_percent", 0.0))
        high = min(options["clip_end_percent"], options.get("end_percent", 1.0))
        return sampling.percent_to_sigma(low), sampling.percent_to_sigma(high)
    start = options.get("start_percent")
    end = options.get("end_percent")
    return (
        sampling.percent_to_sigma(start) if start is not None else None,
        sampling.percent_to_sigma(end) if end is not None else None,
    )


def _hooks_of(options: Mapping[str, Any]) -> Any:
    hooks = options.get(HOOKS)
    if hooks is None or isinstance(hooks, HookGroup):
        return hooks if hooks else None
    raise LoomError(
        f"a conditioning entry's 'hooks' option holds {type(hooks).__name__}, not HOOKS",
        hint="attach hooks with ConditioningSetProperties or SetClipHooks",
    )


def share_control_with_uncond(positive: list[CondEntry], negative: list[CondEntry]) -> None:
    """Give negative entries the control signals of positive entries marked
    ``control_apply_to_uncond`` (in place), as ComfyUI does for its old ControlNetApply node:
    only full-size entries take part, and nothing changes when a negative entry already
    carries a signal. The i-th signal goes to the (i mod n)-th negative entry without one,
    replacing it the first time and adding a copy after that."""
    signals = [
        e.control
        for e in positive
        if e.area is None and e.control is not None and e.control_apply_to_uncond
    ]
    full = [(i, e) for i, e in enumerate(negative) if e.area is None]
    if not signals or not full or any(e.control is not None for _, e in full):
        return
    for n, signal in enumerate(signals):
        index, entry = full[n % len(full)]
        if negative[index].control is None:
            negative[index] = attrs.evolve(entry, control=signal)
        else:
            negative.append(attrs.evolve(entry, control=signal))


def _model_conds(model: Any, tensor: Any, options: dict, **extra: Any) -> dict[str, Any]:
    conds: dict[str, Any] = {}
    if tensor is not None:
        conds["c_crossattn"] = tensor
    control_text = options.get(CONTROL_CROSS_ATTN_OPTION)
    if control_text is not None:
        conds[CONTROL_CONTEXT_INPUT] = control_text
    hook = getattr(model, "extra_conds", None)
    if callable(hook):
        produced = hook({**options, "cross_attn": tensor}, **extra) or {}
        conds.update({k: v for k, v in produced.items() if v is not None})
    return conds


def _check_area_overlaps(area: tuple[int, ...] | None, dims: tuple[int, ...]) -> None:
    """An area that ends past the latent is clipped at sampling (as ComfyUI does); one that
    starts past it covers nothing, which is an error naming the area, not a bare narrow()."""
    if area is None:
        return
    half = len(area) // 2
    sizes, offsets = area[:half], area[half:]
    if all(0 <= o < d for o, d in zip(offsets, dims, strict=True)) and min(sizes) > 0:
        return
    pixels = "x".join(str(v * 8) for v in reversed(sizes))
    at = ", ".join(str(v * 8) for v in reversed(offsets))
    image = "x".join(str(d * 8) for d in reversed(dims))
    raise LoomError(
        f"an area conditioning of {pixels} at ({at}) lies outside the {image} image "
        "(sizes in pixels for a latent 8 times smaller)",
        hint="move the area inside the image: ConditioningSetArea's x/y, or "
        "ConditioningSetAreaPercentage's values below 1",
    )


def _resolve_area(area: Any, dims: tuple[int, ...]) -> tuple[int, ...] | None:
    if area is None:
        return None
    if area[0] == "percentage":
        values = area[1:]
        half = len(values) // 2
        sizes = tuple(max(1, round(values[d] * dims[d])) for d in range(len(dims)))
        offsets = tuple(round(values[d + half] * dims[d]) for d in range(len(dims)))
        return sizes + offsets
    return tuple(int(v) for v in area)


def _resolve_mask(
    mask: Any, dims: tuple[int, ...], device: Any, options: dict, area: tuple[int, ...] | None
) -> tuple[Any, tuple[int, ...] | None]:
    torch = _torch()
    mask = mask.to(device=device)
    if mask.ndim == len(dims):
        mask = mask.unsqueeze(0)
    if tuple(mask.shape[1:]) != dims:
        mask = torch.nn.functional.interpolate(
            mask.unsqueeze(1), size=dims, mode="bilinear"
        ).squeeze(1)
    if options.get("set_area_to_bounds", False):
        bounds = torch.max(torch.abs(mask), dim=0).values
        ys, xs = torch.where(bounds != 0)
        if len(ys) == 0:
            area = (8, 8, 0, 0)
        else:
            y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
            area = (max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0)
    return mask, area


def pair_areas(groups: Mapping[str, list[CondEntry]]) -> None:
    """Give each area entry a same-area counterpart in every other group (in place)."""
    for key, entries in groups.items():
        for entry in list(entries):
            for other_key, others in groups.items():
                if other_key != key:
                    _add_same_area(others, entry)


def _add_same_area(entries: list[CondEntry], c: CondEntry) -> None:
    if c.area is None:
        return
    h, w, y, x = c.area[0], c.area[1], c.area[2], c.area[3]
    smallest = None
    for e in entries:
        if e.area is None:
            smallest = smallest or e
            continue
        a = e.area
        if y >= a[2] and x >= a[3] and a[0] + a[2] >= h + y and a[1] + a[3] >= w + x:
            if (
                smallest is None
                or smallest.area is None
                or smallest.area[0] * smallest.area[1] > a[0] * a[1]
            ):
                smallest = e
    if smallest is None or (smallest.area is not None and tuple(smallest.area) == tuple(c.area)):
        return
    entries.append(attrs.evolve(c, model_conds=dict(smallest.model_conds)))
