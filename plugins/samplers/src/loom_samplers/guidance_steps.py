"""The guidance arithmetic the guiders share: CFG (Ho & Salimans 2022, arXiv:2207.12598),
Perp-Neg, and a MODEL's :class:`~loom.samplers.GuidanceHooks` applied around them in
ComfyUI's order (pre-CFG functions, the CFG function or plain CFG, post-CFG functions).

The re-evaluations a post-CFG function may ask for (``predict_positive`` /
``predict_negative``) are built here from the guider's own evaluation (:data:`Evaluate`), so
they see the run's hook groups and step cache as the guider's own calls do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from loom.samplers import CFGStep, GuidanceHooks, PostCFGStep, PreCFGStep

if TYPE_CHECKING:
    from torch import Tensor

    from loom_samplers.cond_entries import CondEntry

Evaluate = Callable[[Any, Sequence[Any], "Tensor"], "list[Tensor]"]
"""``(handle, groups, x) -> x0 of each group`` at the step's sigma: a guider's evaluation of
conditioning groups (None: not evaluated, zeros) by ``handle`` (the MODEL or a clone of it)."""


def cfg_combine(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    return uncond + (cond - uncond) * scale


def positive_predictor(
    evaluate: Evaluate, positive: list[CondEntry] | None, x: Tensor
) -> Callable[[Any], Tensor] | None:
    """``handle -> x0`` of the ``positive`` entries at ``x`` by another MODEL handle
    (:attr:`loom.samplers.PostCFGStep.predict_positive`); None without entries."""
    if positive is None:
        return None
    return lambda handle: evaluate(handle, [positive], x)[0]


def negative_predictor(
    evaluate: Evaluate, model: Any, negative: list[CondEntry] | None
) -> Callable[[Tensor], Tensor] | None:
    """``x -> x0`` of the ``negative`` entries at another input, same sigma, by ``model``
    (:attr:`loom.samplers.PostCFGStep.predict_negative`); None without entries."""
    if negative is None:
        return None
    return lambda x: evaluate(model, [negative], x)[0]


def guided(
    hooks: GuidanceHooks,
    model: Any,
    x: Tensor,
    sigma: Tensor,
    cond: Tensor,
    uncond: Tensor,
    scale: float,
    *,
    uncond_evaluated: bool = True,
    predict_positive: Callable[[Any], Tensor] | None = None,
    predict_negative: Callable[[Tensor], Tensor] | None = None,
    evaluate: Evaluate | None = None,
) -> tuple[Tensor, Tensor]:
    """``(guided x0, unconditional x0)`` with a model's :class:`GuidanceHooks` applied in
    ComfyUI's order: pre-CFG functions, the CFG function (or plain CFG), post-CFG functions."""
    evaluated = (True, uncond_evaluated)
    for pre in hooks.pre_cfg:
        cond, uncond = pre(PreCFGStep(x, sigma, (cond, uncond), scale, model, evaluated))
    out = hooked_cfg(
        hooks,
        model,
        x,
        sigma,
        cond,
        uncond,
        scale,
        predict_positive=predict_positive,
        predict_negative=predict_negative,
        evaluate=evaluate,
    )
    return out, uncond


def hooked_cfg(
    hooks: GuidanceHooks,
    model: Any,
    x: Tensor,
    sigma: Tensor,
    cond: Tensor,
    uncond: Tensor,
    scale: float,
    *,
    predict_positive: Callable[[Any], Tensor] | None = None,
    predict_negative: Callable[[Tensor], Tensor] | None = None,
    evaluate: Evaluate | None = None,
) -> Tensor:
    """The CFG function (or plain CFG) then the post-CFG functions: ComfyUI's
    ``cfg_function``, which guiders with their own combination rule call on one pair.
    ``predict_positive`` / ``predict_negative`` re-evaluate that pair's conditioning."""
    if hooks.cfg_function is None:
        out = cfg_combine(cond, uncond, scale)
    else:
        step = CFGStep(x, sigma, cond, uncond, scale, model, _at_sigma(evaluate, x))
        out = hooks.cfg_function(step)
    for post in hooks.post_cfg:
        step = PostCFGStep(
            x, sigma, out, cond, uncond, scale, model, predict_positive, predict_negative
        )
        out = post(step)
    return out


def _at_sigma(evaluate: Evaluate | None, x: Tensor) -> Any:
    """:attr:`loom.samplers.CFGStep.evaluate` (``(handle, groups) -> x0s`` at the step's
    input) from a guider's :data:`Evaluate`."""
    if evaluate is None:
        return None
    return lambda handle, groups: evaluate(handle, groups, x)


def perp_neg(
    positive: Tensor, negative: Tensor, empty: Tensor, neg_scale: float, scale: float
) -> Tensor:
    """Perp-Neg (Armandpour et al. 2023, arXiv:2304.04968) as ComfyUI computes it: the
    negative's direction from the empty prompt, less its projection on the positive's (over
    the whole batch at once), subtracted at ``neg_scale`` before scaling by ``scale``."""
    import torch

    pos = positive - empty
    neg = negative - empty
    perpendicular = neg - (torch.mul(neg, pos).sum() / torch.norm(pos) ** 2) * pos
    return empty + scale * (pos - perpendicular * neg_scale)
