"""Guiders: a model and named conditioning groups predicting x0 (ComfyUI's ``CFGGuider``,
``Guider_DualCFG``, ``Guider_PerpNeg``).

With ``cfg == 1`` the negative is not evaluated (unless a CFG++ sampler needs the
unconditional prediction). The conditioning is resolved and batched by
:mod:`.conditioning_batches`; the arithmetic and the MODEL's guidance hooks are in
:mod:`.guidance_steps`. Every evaluation of conditioning groups in a run, the guider's own and
the re-evaluations its CFG and post-CFG functions ask for, goes through
:meth:`Guider.evaluate`, as every ComfyUI ``calc_cond_batch`` goes through the model's
wrappers: EasyCache and the hook groups see them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from loom import RunContext
from loom.samplers import CondBatchStep, PostCFGStep, PreCFGStep, guidance_hooks_of
from loom_samplers.conditioning_batches import (
    CondEntry,
    calc_cond_batch,
    pair_areas,
    resolve_conditioning,
    share_control_with_uncond,
)
from loom_samplers.guidance_steps import (
    Evaluate,
    cfg_combine,
    guided,
    hooked_cfg,
    negative_predictor,
    perp_neg,
    positive_predictor,
)
from loom_samplers.guided_denoiser import GuidedDenoiser
from loom_samplers.hook_models import HookedModels
from loom_samplers.step_cache import EasyCacheRun, LazyCacheRun, step_cache_of

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "DualCFGGuider",
    "GuidedDenoiser",
    "Guider",
    "PerpNegGuider",
    "cfg_combine",
    "guided",
    "hooked_cfg",
    "negative_predictor",
    "perp_neg",
    "positive_predictor",
]


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
        if self.hooked is not None:
            self.hooked.release()
        self.hooked = None
        if hooked:
            top = float(sigmas.max()) if sigmas is not None and sigmas.numel() else float("inf")
            self.hooked = HookedModels(self.model, top)

    def finish(self) -> None:
        """The run is over: let go of what it kept (hook-group clones, merged weights)."""
        if self.hooked is not None:
            self.hooked.release()
            self.hooked = None
        self.batched = {}

    def evaluate(
        self,
        handle: Any,
        groups: Sequence[list[CondEntry] | None],
        x: Tensor,
        sigma: Tensor,
        ctx: RunContext | None = None,
    ) -> list[Tensor]:
        """The x0 of each of ``groups`` (None: zeros) at ``x``, ``sigma`` by ``handle``: one
        ComfyUI ``calc_cond_batch``. EasyCache sees each batched call (its skip decision
        starts afresh here); hooked entries run on their group's clone of ``handle``."""
        easy = self.cache_run if isinstance(self.cache_run, EasyCacheRun) else None
        if easy is not None:
            easy.new_evaluation()
        return calc_cond_batch(
            handle,
            list(groups),
            x,
            sigma,
            ctx,
            self.batched,
            model_call=easy,
            hooked=self.hooked,
        )

    def evaluator(self, sigma: Tensor, ctx: RunContext | None) -> Evaluate:
        """:meth:`evaluate` at ``sigma`` as an :data:`~.guidance_steps.Evaluate`."""
        return lambda handle, groups, x: self.evaluate(handle, groups, x, sigma, ctx)

    def predict(
        self, x: Tensor, sigma: Tensor, *, need_uncond: bool = False, ctx: RunContext | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``(guided x0, unconditional x0 or None)``, with the model's
        :class:`~loom.samplers.GuidanceHooks` applied."""
        hooks = guidance_hooks_of(self.model)
        evaluate = self.evaluator(sigma, ctx)
        positive = self.resolved.get("positive")
        negative = self.resolved.get("negative")
        if math.isclose(self.cfg, 1.0) and not (need_uncond or hooks.disable_cfg1_optimization):
            negative = None
        groups = (positive, negative)
        if hooks.cond_batch_function is None:
            cond, uncond = evaluate(self.model, groups, x)
        else:

            def chosen(handle: Any, chosen_groups: Sequence[Any]) -> list[Tensor]:
                return evaluate(handle, chosen_groups, x)

            step = CondBatchStep(x, sigma, self.model, groups, chosen)
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
            predict_positive=positive_predictor(evaluate, positive, x),
            predict_negative=negative_predictor(evaluate, self.model, negative),
            evaluate=evaluate,
        )


@attrs.define(eq=False)
class DualCFGGuider(Guider):
    """Two prompts against a negative (ComfyUI ``Guider_DualCFG``).

    ``regular``: ``cfg(cond2 vs negative, cfg2) + (cond1 - cond2) * cfg1``; ``nested``:
    ``negative + cfg2 * (cfg(cond1 vs cond2, cfg1) - negative)``. The inner ``cfg`` is
    :func:`hooked_cfg`: the model's CFG function and post-CFG functions apply to that pair
    (its unconditional side is the one a CFG++ sampler gets, and the one a post-CFG
    function re-evaluates as the negative: ``negative`` in regular style, ``middle`` in
    nested; its conditional side is ``middle`` / ``positive``); its pre-CFG functions do
    not, as in ComfyUI, whose guider bypasses the step that runs them.
    """

    cfg2: float = 1.0
    nested: bool = False

    def predict(
        self, x: Tensor, sigma: Tensor, *, need_uncond: bool = False, ctx: RunContext | None = None
    ) -> tuple[Tensor, Tensor | None]:
        hooks = guidance_hooks_of(self.model)
        evaluate = self.evaluator(sigma, ctx)
        negative = self.resolved.get("negative")
        middle = self.resolved.get("middle")
        positive = self.resolved.get("positive")
        if self.nested:
            out = evaluate(self.model, [negative, middle, positive], x)
            text = hooked_cfg(
                hooks,
                self.model,
                x,
                sigma,
                out[2],
                out[1],
                self.cfg,
                predict_positive=positive_predictor(evaluate, positive, x),
                predict_negative=negative_predictor(evaluate, self.model, middle),
                evaluate=evaluate,
            )
            return out[0] + self.cfg2 * (text - out[0]), out[1]
        shortcut = not (need_uncond or hooks.disable_cfg1_optimization)
        if shortcut and math.isclose(self.cfg2, 1.0):
            negative = None
            if math.isclose(self.cfg, 1.0):
                middle = None
        out = evaluate(self.model, [negative, middle, positive], x)
        combined = hooked_cfg(
            hooks,
            self.model,
            x,
            sigma,
            out[1],
            out[0],
            self.cfg2,
            predict_positive=positive_predictor(evaluate, middle, x),
            predict_negative=negative_predictor(evaluate, self.model, negative),
            evaluate=evaluate,
        )
        return combined + (out[2] - out[1]) * self.cfg, out[0]


@attrs.define(eq=False)
class PerpNegGuider(Guider):
    """A positive, a negative and an empty prompt combined by :func:`perp_neg` (ComfyUI's
    ``Guider_PerpNeg``), all three in one batch.

    With ``neg_scale`` 0 the negative is not evaluated, and the empty prompt neither when
    ``cfg`` is 1 too (unless the model's guidance hooks disable that shortcut). The model's
    pre-CFG and post-CFG functions apply (a post-CFG function's pair is the positive and the
    negative); its CFG function does not (Perp-Neg is the rule).
    """

    negative_groups: frozenset[str] = frozenset({"negative", "empty_negative_prompt"})
    neg_scale: float = 1.0

    def predict(
        self, x: Tensor, sigma: Tensor, *, need_uncond: bool = False, ctx: RunContext | None = None
    ) -> tuple[Tensor, Tensor | None]:
        hooks = guidance_hooks_of(self.model)
        evaluate = self.evaluator(sigma, ctx)
        groups = [self.resolved.get(name) for name in ("positive", "negative")]
        groups.append(self.resolved.get("empty_negative_prompt"))
        if not (hooks.disable_cfg1_optimization or need_uncond) and math.isclose(
            self.neg_scale, 0.0
        ):
            groups[1] = None
            if math.isclose(self.cfg, 1.0):
                groups[2] = None
        outputs = tuple(evaluate(self.model, groups, x))
        evaluated = tuple(group is not None for group in groups)
        for pre in hooks.pre_cfg:
            outputs = tuple(pre(PreCFGStep(x, sigma, outputs, self.cfg, self.model, evaluated)))
        positive, negative, empty = outputs
        out = perp_neg(positive, negative, empty, self.neg_scale, self.cfg)
        predict_positive = positive_predictor(evaluate, groups[0], x)
        predict_negative = negative_predictor(evaluate, self.model, groups[1])
        for post in hooks.post_cfg:
            step = PostCFGStep(
                x,
                sigma,
                out,
                positive,
                negative,
                self.cfg,
                self.model,
                predict_positive,
                predict_negative,
            )
            out = post(step)
        return out, negative
