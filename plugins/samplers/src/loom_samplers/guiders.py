"""Guiders: a model and named conditioning groups predicting x0, and the denoiser a sampler calls.

CFG is ``uncond + (cond - uncond) * cfg`` (Ho & Salimans 2022, arXiv:2207.12598); with
``cfg == 1`` the negative is not evaluated (unless a CFG++ sampler needs the unconditional
prediction). The conditioning is resolved and batched by :mod:`.conditioning_batches`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from loom import RunContext
from loom.samplers import (
    CFGStep,
    CondBatchStep,
    DenoiseMaskStep,
    GuidanceHooks,
    PostCFGStep,
    PreCFGStep,
    denoise_mask_function_of,
    guidance_hooks_of,
)
from loom_samplers.conditioning_batches import (
    CondEntry,
    calc_cond_batch,
    pair_areas,
    resolve_conditioning,
    share_control_with_uncond,
)
from loom_samplers.hook_models import HookedModels
from loom_samplers.step_cache import EasyCacheRun, LazyCacheRun, step_cache_of

if TYPE_CHECKING:
    from torch import Tensor


def cfg_combine(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    return uncond + (cond - uncond) * scale


def positive_predictor(
    positive: list[CondEntry] | None, x: Tensor, sigma: Tensor, ctx: RunContext | None
) -> Callable[[Any], Tensor] | None:
    """``handle -> x0`` of the resolved ``positive`` entries at ``x``, ``sigma`` by another
    MODEL handle (:attr:`loom.samplers.PostCFGStep.predict_positive`)."""
    if positive is None:
        return None
    return lambda model: calc_cond_batch(model, [positive], x, sigma, ctx)[0]


def negative_predictor(
    model: Any, negative: list[CondEntry] | None, sigma: Tensor, ctx: RunContext | None
) -> Callable[[Tensor], Tensor] | None:
    """``x -> x0`` of the resolved ``negative`` entries at another input, same ``sigma``
    (:attr:`loom.samplers.PostCFGStep.predict_negative`)."""
    if negative is None:
        return None
    return lambda x: calc_cond_batch(model, [negative], x, sigma, ctx)[0]


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
) -> Tensor:
    """The CFG function (or plain CFG) then the post-CFG functions: ComfyUI's
    ``cfg_function``, which guiders with their own combination rule call on one pair."""
    if hooks.cfg_function is None:
        out = cfg_combine(cond, uncond, scale)
    else:
        out = hooks.cfg_function(CFGStep(x, sigma, cond, uncond, scale, model))
    for post in hooks.post_cfg:
        step = PostCFGStep(
            x, sigma, out, cond, uncond, scale, model, predict_positive, predict_negative
        )
        out = post(step)
    return out


@attrs.define(eq=False)
class Guider:
    """A GUIDER: a model and named conditioning groups, predicting x0 for a noisy latent.

    ``conds`` holds CONDITIONING lists by group name; :meth:`prepare` resolves them for a
    latent; :meth:`predict` is called once per model evaluation. ``cfg`` is the scale for
    :class:`CFGGuider`; the ``BasicGuider`` is a CFG guider without a negative (cfg 1).
    """

    model: Any
    conds: dict[str, list] = attrs.field(factory=dict)
    cfg: float = 1.0
    #: group names whose entries are prompt_type "negative" for ``extra_conds``.
    negative_groups: frozenset[str] = frozenset({"negative", "middle"})
    resolved: dict[str, list[CondEntry]] = attrs.field(factory=dict, init=False)
    #: conditioning batched by :func:`calc_cond_batch` during this run (see ``_cat_conds``)
    batched: dict = attrs.field(factory=dict, init=False)
    #: this run's step cache (EasyCache / LazyCache, :mod:`.step_cache`), or None
    cache_run: EasyCacheRun | LazyCacheRun | None = attrs.field(default=None, init=False)
    #: the run's hook-group handles; None when no entry carries hooks
    hooked: HookedModels | None = attrs.field(default=None, init=False)

    def prepare(
        self,
        noise: Tensor,
        latent_image: Tensor | None,
        denoise_mask: Tensor | None,
        seed: int | None,
        sigmas: Tensor | None = None,
    ) -> None:
        """Resolve the conditioning for ``noise``; ``sigmas`` (the run's schedule) place
        hook keyframes that start before the sampled range."""
        self.batched = {}
        cache = step_cache_of(self.model)
        self.cache_run = None if cache is None else cache.start(self.model)
        self.resolved = {
            name: resolve_conditioning(
                cond,
                self.model,
                noise,
                latent_image=latent_image,
                denoise_mask=denoise_mask,
                seed=seed,
                prompt_type="negative" if name in self.negative_groups else "positive",
            )
            for name, cond in self.conds.items()
        }
        pair_areas(self.resolved)
        positive = self.resolved.get("positive")
        for name, entries in self.resolved.items():
            if positive is not None and name != "positive":
                share_control_with_uncond(positive, entries)
        hooked = any(e.hooks is not None for es in self.resolved.values() for e in es)
        self.hooked = None
        if hooked:
            top = float(sigmas.max()) if sigmas is not None and sigmas.numel() else float("inf")
            self.hooked = HookedModels(self.model, top)

    def predict(
        self, x: Tensor, sigma: Tensor, *, need_uncond: bool = False, ctx: RunContext | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``(guided x0, unconditional x0 or None)``, with the model's
        :class:`~loom.samplers.GuidanceHooks` applied."""
        hooks = guidance_hooks_of(self.model)
        negative = self.resolved.get("negative")
        if math.isclose(self.cfg, 1.0) and not (need_uncond or hooks.disable_cfg1_optimization):
            negative = None
        groups = (self.resolved.get("positive"), negative)
        easy = self.cache_run if isinstance(self.cache_run, EasyCacheRun) else None
        if easy is not None:
            easy.new_evaluation()
        if hooks.cond_batch_function is None:
            cond, uncond = calc_cond_batch(
                self.model,
                list(groups),
                x,
                sigma,
                ctx,
                self.batched,
                model_call=easy,
                hooked=self.hooked,
            )
        else:

            def evaluate(handle: Any, chosen: Sequence[Any]) -> list[Tensor]:
                call = easy if handle is self.model else None
                hooked = self.hooked if handle is self.model else None
                return calc_cond_batch(
                    handle,
                    list(chosen),
                    x,
                    sigma,
                    ctx,
                    self.batched,
                    model_call=call,
                    hooked=hooked,
                )

            step = CondBatchStep(x, sigma, self.model, groups, evaluate)
            cond, uncond = hooks.cond_batch_function(step)
        return guided(
            hooks,
            self.model,
            x,
            sigma,
            cond,
            uncond,
            self.cfg,
            uncond_evaluated=negative is not None,
            predict_positive=positive_predictor(self.resolved.get("positive"), x, sigma, ctx),
            predict_negative=negative_predictor(self.model, negative, sigma, ctx),
        )


@attrs.define(eq=False)
class DualCFGGuider(Guider):
    """Two prompts against a negative (ComfyUI ``Guider_DualCFG``).

    ``regular``: ``cfg(cond2 vs negative, cfg2) + (cond1 - cond2) * cfg1``; ``nested``:
    ``negative + cfg2 * (cfg(cond1 vs cond2, cfg1) - negative)``. The inner ``cfg`` is
    :func:`hooked_cfg`: the model's CFG function and post-CFG functions apply to that pair
    (its unconditional side is the one a CFG++ sampler gets); its pre-CFG functions do not,
    as in ComfyUI, whose guider bypasses the step that runs them.
    """

    cfg2: float = 1.0
    nested: bool = False

    def predict(
        self, x: Tensor, sigma: Tensor, *, need_uncond: bool = False, ctx: RunContext | None = None
    ) -> tuple[Tensor, Tensor | None]:
        hooks = guidance_hooks_of(self.model)
        negative = self.resolved.get("negative")
        middle = self.resolved.get("middle")
        positive = self.resolved.get("positive")
        if self.nested:
            out = calc_cond_batch(
                self.model,
                [negative, middle, positive],
                x,
                sigma,
                ctx,
                self.batched,
                hooked=self.hooked,
            )
            text = hooked_cfg(hooks, self.model, x, sigma, out[2], out[1], self.cfg)
            return out[0] + self.cfg2 * (text - out[0]), out[1]
        shortcut = not (need_uncond or hooks.disable_cfg1_optimization)
        if shortcut and math.isclose(self.cfg2, 1.0):
            negative = None
            if math.isclose(self.cfg, 1.0):
                middle = None
        out = calc_cond_batch(
            self.model,
            [negative, middle, positive],
            x,
            sigma,
            ctx,
            self.batched,
            hooked=self.hooked,
        )
        combined = hooked_cfg(hooks, self.model, x, sigma, out[1], out[0], self.cfg2)
        return combined + (out[2] - out[1]) * self.cfg, out[0]


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


@attrs.define(eq=False)
class PerpNegGuider(Guider):
    """A positive, a negative and an empty prompt combined by :func:`perp_neg` (ComfyUI's
    ``Guider_PerpNeg``), all three in one batch.

    With ``neg_scale`` 0 the negative is not evaluated, and the empty prompt neither when
    ``cfg`` is 1 too (unless the model's guidance hooks disable that shortcut). The model's
    pre-CFG and post-CFG functions apply; its CFG function does not (Perp-Neg is the rule).
    """

    negative_groups: frozenset[str] = frozenset({"negative", "empty_negative_prompt"})
    neg_scale: float = 1.0

    def predict(
        self, x: Tensor, sigma: Tensor, *, need_uncond: bool = False, ctx: RunContext | None = None
    ) -> tuple[Tensor, Tensor | None]:
        hooks = guidance_hooks_of(self.model)
        groups = [self.resolved.get(name) for name in ("positive", "negative")]
        groups.append(self.resolved.get("empty_negative_prompt"))
        if not (hooks.disable_cfg1_optimization or need_uncond) and math.isclose(
            self.neg_scale, 0.0
        ):
            groups[1] = None
            if math.isclose(self.cfg, 1.0):
                groups[2] = None
        outputs = tuple(
            calc_cond_batch(self.model, groups, x, sigma, ctx, self.batched, hooked=self.hooked)
        )
        evaluated = tuple(group is not None for group in groups)
        for pre in hooks.pre_cfg:
            outputs = tuple(pre(PreCFGStep(x, sigma, outputs, self.cfg, self.model, evaluated)))
        positive, negative, empty = outputs
        out = perp_neg(positive, negative, empty, self.neg_scale, self.cfg)
        for post in hooks.post_cfg:
            predict = positive_predictor(self.resolved.get("positive"), x, sigma, ctx)
            step = PostCFGStep(x, sigma, out, positive, negative, self.cfg, self.model, predict)
            out = post(step)
        return out, negative


class GuidedDenoiser:
    """``D(x, σ)`` for the samplers: a guider's prediction, with inpainting applied.

    With a ``denoise_mask`` (1 = denoise), the kept area of ``x`` is replaced by the original
    latent noised to σ before the call and by the original latent after it (ComfyUI's
    ``KSamplerX0Inpaint``); a model with a ``denoise_mask_function`` (DifferentialDiffusion)
    rewrites that mask for each call from σ and the whole schedule ``sigmas``. With
    ``keep_uncond`` (samplers registered with ``SamplerInfo(needs_uncond=True)``) the
    unconditional prediction is always evaluated and kept in ``uncond_denoised``: it is then
    a :class:`loom.types.UncondDenoiser`.
    """

    def __init__(
        self,
        guider: Guider,
        *,
        latent_image: Tensor,
        noise: Tensor,
        denoise_mask: Tensor | None = None,
        sigmas: Tensor | None = None,
        keep_uncond: bool = False,
        ctx: RunContext | None = None,
    ) -> None:
        self.guider = guider
        self.model_sampling = guider.model.model_sampling
        self.latent_image = latent_image
        self.noise = noise
        self.denoise_mask = denoise_mask
        self.sigmas = sigmas
        self.mask_function = denoise_mask_function_of(guider.model)
        self.ctx = ctx
        self.keep_uncond = keep_uncond
        if keep_uncond:
            self.uncond_denoised: Tensor | None = None

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        mask = self.denoise_mask
        if mask is not None and self.mask_function is not None:
            mask = self.mask_function(
                DenoiseMaskStep(sigma, mask, self.sigmas, self.model_sampling)
            )
        if mask is not None:
            kept = 1.0 - mask
            sigma_b = sigma.reshape([sigma.shape[0]] + [1] * (self.noise.ndim - 1))
            x = (
                x * mask
                + self.model_sampling.noise_scaling(sigma_b, self.noise, self.latent_image) * kept
            )
        lazy = getattr(self.guider, "cache_run", None)
        if isinstance(lazy, LazyCacheRun):
            found: list[Tensor | None] = [None]

            def call() -> Tensor:
                out, found[0] = self.guider.predict(
                    x, sigma, need_uncond=self.keep_uncond, ctx=self.ctx
                )
                return out

            out, uncond = lazy.predict(x, sigma, call), found[0]
        else:
            out, uncond = self.guider.predict(x, sigma, need_uncond=self.keep_uncond, ctx=self.ctx)
        if self.keep_uncond and uncond is not None:
            self.uncond_denoised = uncond
        if mask is not None:
            out = out * mask + self.latent_image * kept
        return out
