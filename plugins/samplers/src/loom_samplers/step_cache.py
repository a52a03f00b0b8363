"""Step caching (EasyCache, arXiv:2507.02860, and ComfyUI's LazyCache): skip a model call when
its input has changed little since the last real call, reusing that call's output change.

A MODEL handle carries the settings (:class:`StepCache`, its ``step_cache`` attribute, set by
the nodes on a clone); each sampling run starts fresh state from them (:meth:`StepCache.start`).
Both follow ComfyUI's rule. After a real call, ``k = |out - out_prev| / |in - in_prev|``
(mean absolute changes of subsampled tensors, every ``subsample``-th pixel). Before each call
from ``start_percent`` on, the predicted output change rate ``k * |in - in_prev| / |out_prev|``
is added up; while the sum is under ``reuse_threshold`` the call is skipped and its output is
``in + (out_last - in_last)`` (the change the last real call made); otherwise the sum is reset
to 0 and the model runs. From ``end_percent`` on, the model always runs.

- LazyCache wraps the guider's whole prediction (in: the noisy latent, out: the guided x0).
- EasyCache wraps each batched model call, in the network's own space (in: the scaled input
  ``calculate_input(sigma, x)``, out: the network output, recovered from x0 through the
  model sampling's affine ``calculate_denoised``), one cached change per conditioning entry
  (keyed by its ``CondEntry.uid``, ComfyUI's per-entry uuid). As ComfyUI's wraps the
  diffusion model, it sees every call of the run: every guider's, and the re-evaluations
  of CFG and post-CFG functions (PerpNeg's empty prompt, SAG, PAG, SkipLayerGuidance),
  each of which updates its entries' cached change. The first entry of the run's first
  call decides: when it skips, the rest of that evaluation (one ``Guider.evaluate``,
  ComfyUI's ``calc_cond_batch``) reuses its cached changes; the decision starts afresh at
  each evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

EASY_CACHE = "EasyCache"
LAZY_CACHE = "LazyCache"


@attrs.frozen
class StepCache:
    """A handle's step-cache settings (``kind``: :data:`EASY_CACHE` or :data:`LAZY_CACHE`)."""

    kind: str
    reuse_threshold: float
    start_percent: float
    end_percent: float
    verbose: bool = False
    subsample: int = 8

    def start(self, model: Any) -> EasyCacheRun | LazyCacheRun:
        """Fresh state for one sampling run of ``model``."""
        sampling = model.model_sampling
        window = (
            sampling.percent_to_sigma(self.start_percent),
            sampling.percent_to_sigma(self.end_percent),
        )
        tracker = ChangeTracker(self)
        if self.kind == EASY_CACHE:
            return EasyCacheRun(self, *window, tracker)
        return LazyCacheRun(self, *window, tracker)


def step_cache_of(model: Any) -> StepCache | None:
    """The handle's :class:`StepCache`, or None."""
    cache = getattr(model, "step_cache", None)
    return cache if isinstance(cache, StepCache) else None


@attrs.define
class ChangeTracker:
    """ComfyUI's change-rate bookkeeping, shared by both caches."""

    settings: StepCache
    x_prev: Any = None
    out_prev: Any = None
    out_prev_norm: Any = None
    rate: Any = None  # relative transformation rate k
    cumulative: Any = 0.0
    skipped: int = 0
    shape: Any = None

    def subsample(self, t: Tensor) -> Tensor:
        f = self.settings.subsample
        return t[..., ::f, ::f] if f > 1 else t

    def check_shape(self, x: Tensor) -> bool:
        """A change of shape, dtype or device starts the bookkeeping over; True if it did."""
        meta = (x.device, x.dtype, tuple(x.shape[1:]))
        changed = self.shape is not None and meta != self.shape
        if changed:
            log.warning("%s: latent shape, dtype or device changed; cache reset", self.name)
            self.x_prev = self.out_prev = self.out_prev_norm = self.rate = None
            self.cumulative = 0.0
        self.shape = meta
        return changed

    @property
    def name(self) -> str:
        return self.settings.kind

    def input_change(self, x_sub: Tensor) -> Tensor | None:
        if self.x_prev is None:
            return None
        return (x_sub - self.x_prev).flatten().abs().mean()

    def reuse(self, change: Tensor | None, *, cached: bool = True) -> bool:
        """Add the predicted output change; True to skip (the sum stays), False to run
        (the sum is reset). ``cached``: a cached change exists for every entry."""
        if self.out_prev_norm is None or self.rate is None or change is None:
            return False
        self.cumulative = self.cumulative + self.rate * change / self.out_prev_norm
        if self.cumulative < self.settings.reuse_threshold and cached:
            if self.settings.verbose:
                log.info("%s: skipping a step (change %.4g)", self.name, float(self.cumulative))
            return True
        self.cumulative = 0.0
        return False

    def record(self, x_sub: Tensor, out: Tensor, out_sub: Tensor, change: Tensor | None) -> None:
        """After a real call: the new rate, and this call's subsampled input and output."""
        if self.out_prev_norm is not None and change is not None:
            self.rate = (out_sub - self.out_prev).flatten().abs().mean() / change
        self.x_prev = x_sub.clone()
        self.out_prev = out_sub.clone()
        self.out_prev_norm = out.flatten().abs().mean()


@attrs.define
class LazyCacheRun:
    """LazyCache for one run: wraps the guider's prediction ``x -> x0``."""

    settings: StepCache
    start_sigma: float
    end_sigma: float
    tracker: ChangeTracker
    diff: Any = None

    def predict(self, x: Tensor, sigma: Tensor, call: Callable[[], Tensor]) -> Tensor:
        """``call()``'s x0, or the cached change applied to ``x`` when skipped."""
        if not past(sigma, self.end_sigma):
            return call()
        t = self.tracker
        x_sub = t.subsample(x)
        change = None
        if not past(sigma, self.start_sigma):
            if t.check_shape(x):
                self.diff = None
            change = t.input_change(x_sub)
            if t.reuse(change, cached=self.diff is not None):
                t.skipped += 1
                return x + self.diff.to(x.device)
        out = call()
        t.record(x_sub, out, t.subsample(out), change)
        self.diff = out - x
        return out


ModelCall = Callable[[Any, "Tensor", "Tensor", dict, Sequence[Hashable]], "Tensor"]
"""``(model, x, sigma, cond, keys) -> x0``: one batched model call; ``keys`` name the
conditioning entry of each equal slice of the batch."""


@attrs.define
class EasyCacheRun:
    """EasyCache for one run: wraps each batched model call (:data:`ModelCall`)."""

    settings: StepCache
    start_sigma: float
    end_sigma: float
    tracker: ChangeTracker
    diffs: dict = attrs.Factory(dict)
    first_key: Any = None
    skip_this_step: bool = False

    def new_evaluation(self) -> None:
        """A guider evaluation begins: the first entry decides afresh."""
        self.skip_this_step = False

    def __call__(
        self, model: Any, x: Tensor, sigma: Tensor, cond: dict, keys: Sequence[Hashable]
    ) -> Tensor:
        if not past(sigma, self.end_sigma):
            return model.apply_model(x, sigma, cond)
        sampling = model.model_sampling
        xc = sampling.calculate_input(sigma, x)
        t = self.tracker
        rows = x.shape[0] // len(keys)
        has_first = self.first_key in keys
        change = None
        if not past(sigma, self.start_sigma):
            if t.check_shape(xc):
                self.diffs.clear()
                self.first_key = None
                has_first = False
            cached = all(key in self.diffs for key in keys)
            if self.skip_this_step and cached:
                return self._reuse(sampling, x, xc, sigma, keys)
            if self.first_key is None:
                self.first_key = keys[0]
                has_first = True
            if has_first:
                change = t.input_change(self._first_rows(t.subsample(xc), keys, rows))
                if t.reuse(change, cached=cached):
                    self.skip_this_step = True
                    return self._reuse(sampling, x, xc, sigma, keys)
        x0 = model.apply_model(x, sigma, cond)
        out = network_output(sampling, sigma, x0, x)
        if has_first:
            first = self._first_rows(out, keys, rows)
            t.record(self._first_rows(t.subsample(xc), keys, rows), out, t.subsample(first), change)
        for i, key in enumerate(keys):
            self.diffs[key] = (out - xc)[i * rows : (i + 1) * rows]
        return x0

    def _first_rows(self, t: Tensor, keys: Sequence[Hashable], rows: int) -> Tensor:
        i = list(keys).index(self.first_key)
        return t[i * rows : (i + 1) * rows]

    def _reuse(
        self, sampling: Any, x: Tensor, xc: Tensor, sigma: Tensor, keys: Sequence[Hashable]
    ) -> Tensor:
        import torch

        if self.first_key in keys:
            self.tracker.skipped += 1
        out = xc + torch.cat([self.diffs[key].to(xc.device) for key in keys])
        return sampling.calculate_denoised(sigma, out, x)


def past(sigma: Tensor, bound: float) -> bool:
    """``sigma[0] > bound`` compared as ComfyUI does (in sigma's dtype): still before it."""
    return bool(sigma[0] > bound)


def network_output(sampling: Any, sigma: Tensor, x0: Tensor, x: Tensor) -> Tensor:
    """The network output that ``calculate_denoised(sigma, output, x)`` turns into ``x0``.

    Every parameterisation's ``calculate_denoised`` is affine in the output,
    ``a(sigma) x + b(sigma) output``: solved for the output."""
    import torch

    zero = torch.zeros_like(x0)
    offset = sampling.calculate_denoised(sigma, zero, x)
    slope = sampling.calculate_denoised(sigma, torch.ones_like(x0), torch.zeros_like(x))
    return (x0 - offset) / slope
