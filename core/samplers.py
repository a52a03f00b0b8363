"""The sampler contract: what a sampler or scheduler plugin implements and what it is given.

A sampler plugin needs only core: it implements :class:`Sampler` (k-diffusion's shape, with
types), registers it through the ``register_samplers`` hook with a :class:`SamplerInfo`
declaring how a sampling run must treat it, and receives a :class:`Denoiser` and a
:class:`NoiseSource` when it runs. Nodes find what was registered with :func:`find_sampler` and
:func:`find_scheduler`. :mod:`loom.types` re-exports the types. Torch is imported only for
type checking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from loom.errors import LoomError

if TYPE_CHECKING:
    from torch import Tensor

    from loom.model_sampling import ModelSampling
    from loom.registry import Registry

__all__ = [
    "CFGFunction",
    "CFGStep",
    "CondBatchFunction",
    "CondBatchStep",
    "DenoiseMaskFunction",
    "DenoiseMaskStep",
    "Denoiser",
    "GuidanceHooks",
    "NoiseSampler",
    "NoiseSource",
    "PostCFGFunction",
    "PostCFGStep",
    "PreCFGFunction",
    "PreCFGStep",
    "RegisteredSampler",
    "Sampler",
    "SamplerInfo",
    "Scheduler",
    "Step",
    "StepCallback",
    "UncondDenoiser",
    "denoise_mask_function_of",
    "find_sampler",
    "find_scheduler",
    "guidance_hooks_of",
]


class Denoiser(Protocol):
    """``D(x; σ) -> x0`` (Karras et al. 2022): the denoised estimate of ``x`` at noise ``sigma``.

    ``sigma`` has one value per batch item. A denoiser built from a MODEL also has the model's
    ``model_sampling`` (a :class:`loom.model_sampling.ModelSampling`), which samplers read where
    present: flow-matching models switch the ancestral and SDE samplers to their
    rectified-flow forms; without it the k-diffusion (variance-exploding) forms are used.
    """

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...


@runtime_checkable
class UncondDenoiser(Denoiser, Protocol):
    """A guided denoiser that also keeps its last unconditional prediction.

    Samplers registered with ``SamplerInfo(needs_uncond=True)`` (the CFG++ samplers) are given
    one, with CFG's cfg = 1 shortcut off: after each call, ``uncond_denoised`` is that call's
    unconditional x0.
    """

    uncond_denoised: Tensor | None


NoiseSampler = Callable[["Tensor", "Tensor"], "Tensor"]
"""``noise(sigma, sigma_next) -> Tensor`` shaped like the latent, unit variance."""


class NoiseSource(Protocol):
    """What a sampler may ask for: step noise, Brownian-tree noise and churn noise.

    Samplers never touch a global RNG; the source decides how noise is seeded (ComfyUI's
    seeds in loom-samplers' ``SeededNoise``).
    """

    def sampler(self, x: Tensor) -> NoiseSampler:
        """Independent Gaussian noise per call (ancestral samplers)."""
        ...

    def brownian(
        self, x: Tensor, sigma_min: Tensor, sigma_max: Tensor, *, cpu: bool = True
    ) -> NoiseSampler:
        """Brownian-tree noise over ``[sigma_min, sigma_max]`` (SDE samplers); ``cpu``: keep
        the tree on the CPU so that results do not depend on the compute device."""
        ...

    def randn_like(self, x: Tensor) -> Tensor:
        """Churn noise (``s_churn > 0`` in euler / heun / dpm_2)."""
        ...


@attrs.frozen
class Step:
    """What a sampler reports after each model evaluation of its main loop."""

    i: int
    x: Any
    sigma: Any
    sigma_hat: Any
    denoised: Any


StepCallback = Callable[[Step], None]
"""``on_step(step)``: progress and previews; called once per step of the main loop."""


class Sampler(Protocol):
    """``sampler(denoiser, x, sigmas, *, noise, on_step=None, **options) -> x``.

    ``x`` starts at ``sigmas[0]`` already scaled (``latent + σ₀ ε`` for eps / v models) and the
    result is the sample at ``sigmas[-1]``. ``options`` are the sampler's own knobs (``eta``,
    ``s_noise``, ...), given by nodes such as ``SamplerEulerAncestral``.
    """

    def __call__(
        self,
        denoiser: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        *,
        noise: NoiseSource,
        on_step: StepCallback | None = None,
        **options: Any,
    ) -> Tensor: ...


class Scheduler(Protocol):
    """``scheduler(model_sampling, steps) -> sigmas``: ``steps + 1`` values ending in 0."""

    def __call__(self, model_sampling: ModelSampling, steps: int) -> Tensor: ...


@attrs.frozen
class DenoiseMaskStep:
    """What a :class:`DenoiseMaskFunction` is given at each model evaluation of a masked run.

    ``sigma`` has one value per batch item; ``denoise_mask`` is the run's mask (1 = denoise),
    already at the latent's shape; ``sigmas`` is the whole schedule the sampler was given;
    ``model_sampling`` is the model's (for ``timestep(sigma)`` and ``sigma_min``).
    """

    sigma: Tensor
    denoise_mask: Tensor
    sigmas: Tensor
    model_sampling: ModelSampling


class DenoiseMaskFunction(Protocol):
    """A per-step rewrite of an inpainting run's denoise mask (ComfyUI's
    ``denoise_mask_function`` model option, set by ``DifferentialDiffusion``).

    A MODEL handle carries one in its ``denoise_mask_function`` attribute (``None``: the mask
    is used as given); the sampling run calls it before every model evaluation and uses the
    mask it returns, shaped like ``step.denoise_mask``, for that evaluation only.
    """

    def __call__(self, step: DenoiseMaskStep) -> Tensor: ...


def denoise_mask_function_of(model: Any) -> DenoiseMaskFunction | None:
    """The model handle's :class:`DenoiseMaskFunction`, or ``None`` when it has none."""
    return getattr(model, "denoise_mask_function", None)


@attrs.frozen
class PreCFGStep:
    """What a :class:`PreCFGFunction` is given once the model has been evaluated.

    ``outputs`` holds the x0 prediction of each conditioning group, positive first, then
    negative (all zeros when the cfg = 1 shortcut skipped it: ``evaluated`` says which were
    evaluated); ``x`` is the noisy input and ``sigma`` has one value per batch item.
    """

    x: Tensor
    sigma: Tensor
    outputs: tuple[Tensor, ...]
    cond_scale: float
    model: Any
    evaluated: tuple[bool, ...] = ()


class PreCFGFunction(Protocol):
    """A rewrite of the group predictions before they are combined (ComfyUI's
    ``sampler_pre_cfg_function`` model option); returns as many tensors as it was given."""

    def __call__(self, step: PreCFGStep) -> Sequence[Tensor]: ...


@attrs.frozen
class CFGStep:
    """What a :class:`CFGFunction` is given: the positive and negative x0 predictions of one
    model evaluation, the noisy input ``x`` and ``sigma`` (one value per batch item).

    ``evaluate(handle, groups)``: the x0 of other conditioning groups (lists of resolved
    entries; None: zeros) at ``x``, ``sigma`` by ``handle``, made as the guider makes its own
    calls (with the run's hook groups and step cache: ComfyUI's ``calc_cond_batch`` with the
    step's ``model_options``); None where the caller has no guider run.
    """

    x: Tensor
    sigma: Tensor
    cond_denoised: Tensor
    uncond_denoised: Tensor
    cond_scale: float
    model: Any
    evaluate: Callable[[Any, Sequence[Any]], list[Tensor]] | None = None


class CFGFunction(Protocol):
    """A replacement of ``uncond + (cond - uncond) * cond_scale`` (ComfyUI's
    ``sampler_cfg_function``). Loom's returns the guided x0 (ComfyUI's is given and returns
    noise, ``x - x0``: the same rule written in the other space)."""

    def __call__(self, step: CFGStep) -> Tensor: ...


@attrs.frozen
class PostCFGStep:
    """What a :class:`PostCFGFunction` is given: the guided x0 ``denoised`` so far, with the
    step's :class:`CFGStep` fields.

    ``predict_positive(handle)``: the x0 of the step's positive conditioning at ``x``,
    ``sigma`` predicted by another MODEL handle (a patched clone of ``model``: ComfyUI's
    re-evaluation of ``cond`` with changed ``model_options``, as PerturbedAttentionGuidance
    does); None where the guider has no positive conditioning. ``predict_negative(x)``: the
    x0 of the step's negative conditioning at another input ``x`` (same ``sigma``) by
    ``model`` (ComfyUI's re-evaluation of ``uncond``, as SelfAttentionGuidance does); None
    where the guider has no negative conditioning.
    """

    x: Tensor
    sigma: Tensor
    denoised: Tensor
    cond_denoised: Tensor
    uncond_denoised: Tensor
    cond_scale: float
    model: Any
    predict_positive: Callable[[Any], Tensor] | None = None
    predict_negative: Callable[[Tensor], Tensor] | None = None


class PostCFGFunction(Protocol):
    """A rewrite of the guided x0 (ComfyUI's ``sampler_post_cfg_function``); returns the new
    guided x0."""

    def __call__(self, step: PostCFGStep) -> Tensor: ...


@attrs.frozen
class CondBatchStep:
    """What a :class:`CondBatchFunction` is given at each model evaluation of a CFG guider.

    ``groups`` are the conditioning groups to evaluate, positive first, then negative (None:
    not evaluated, as the cfg = 1 shortcut leaves the negative); ``evaluate(handle, groups)``
    returns the x0 prediction of each of ``groups`` (zeros for None) at ``x``, ``sigma`` by
    ``handle`` (the step's ``model`` or a patched clone of it).
    """

    x: Tensor
    sigma: Tensor
    model: Any
    groups: tuple[Any, ...]
    evaluate: Callable[[Any, Sequence[Any]], list[Tensor]]


class CondBatchFunction(Protocol):
    """A replacement of the guider's evaluation of its conditioning groups (ComfyUI's
    ``sampler_calc_cond_batch_function``, set by SkipLayerGuidanceDiTSimple); returns one x0
    prediction per group of ``step.groups``."""

    def __call__(self, step: CondBatchStep) -> Sequence[Tensor]: ...


@attrs.frozen
class GuidanceHooks:
    """How a MODEL handle changes classifier-free guidance; a handle carries one in its
    ``guidance`` attribute (read with :func:`guidance_hooks_of`).

    Applied by the CFG guider in ComfyUI's order at each model evaluation: the groups are
    evaluated (by ``cond_batch_function`` when set), then the pre-CFG
    functions in the order added, then ``cfg_function`` (or plain CFG), then the post-CFG
    functions in the order added. ``disable_cfg1_optimization``: evaluate the negative even
    at cfg 1. Immutable: nodes build a new one with the ``with_*`` methods on a clone, so the
    original handle keeps its own.
    """

    cfg_function: CFGFunction | None = None
    pre_cfg: tuple[PreCFGFunction, ...] = ()
    post_cfg: tuple[PostCFGFunction, ...] = ()
    disable_cfg1_optimization: bool = False
    #: evaluates the conditioning groups in place of the guider's own batching (None: its own)
    cond_batch_function: CondBatchFunction | None = None

    def with_cond_batch_function(self, function: CondBatchFunction) -> GuidanceHooks:
        return attrs.evolve(self, cond_batch_function=function)

    def with_cfg_function(
        self, function: CFGFunction, *, disable_cfg1_optimization: bool = False
    ) -> GuidanceHooks:
        return attrs.evolve(
            self,
            cfg_function=function,
            disable_cfg1_optimization=self.disable_cfg1_optimization or disable_cfg1_optimization,
        )

    def with_pre_cfg(
        self, function: PreCFGFunction, *, disable_cfg1_optimization: bool = False
    ) -> GuidanceHooks:
        return attrs.evolve(
            self,
            pre_cfg=(*self.pre_cfg, function),
            disable_cfg1_optimization=self.disable_cfg1_optimization or disable_cfg1_optimization,
        )

    def with_post_cfg(
        self, function: PostCFGFunction, *, disable_cfg1_optimization: bool = False
    ) -> GuidanceHooks:
        return attrs.evolve(
            self,
            post_cfg=(*self.post_cfg, function),
            disable_cfg1_optimization=self.disable_cfg1_optimization or disable_cfg1_optimization,
        )


NO_GUIDANCE_HOOKS = GuidanceHooks()


def guidance_hooks_of(model: Any) -> GuidanceHooks:
    """The model handle's :class:`GuidanceHooks` (none set: hooks that change nothing)."""
    hooks = getattr(model, "guidance", None)
    return hooks if isinstance(hooks, GuidanceHooks) else NO_GUIDANCE_HOOKS


@attrs.frozen
class SamplerInfo:
    """How a sampling run treats a sampler, declared when the sampler is registered."""

    #: Schedule one step more and drop the second-to-last sigma (ComfyUI's dpm_2,
    #: dpm_2_ancestral, uni_pc, uni_pc_bh2).
    discard_penultimate_sigma: bool = False
    #: When inpainting, noise the kept area with fresh noise (seed + 1) rather than the
    #: initial noise (ComfyUI's ddim).
    inpaint_random_noise: bool = False
    #: The sampler reads the unconditional prediction: it is given an
    #: :class:`UncondDenoiser` (the CFG++ samplers).
    needs_uncond: bool = False


@attrs.frozen
class RegisteredSampler:
    """A sampler as registered: its name, the function and its :class:`SamplerInfo`."""

    name: str
    function: Sampler = attrs.field(eq=False)
    info: SamplerInfo = SamplerInfo()


def find_sampler(registry: Registry, name: str) -> RegisteredSampler:
    """The sampler registered as ``name``; a :class:`~loom.errors.LoomError` naming the
    installed ones if there is none."""
    entry = registry.samplers.get(name)
    if entry is None:
        raise LoomError(
            f"unknown sampler {name!r}", hint=f"installed samplers: {_listed(registry.samplers)}"
        )
    return entry


def find_scheduler(registry: Registry, name: str) -> Scheduler:
    """The scheduler registered as ``name``; a :class:`~loom.errors.LoomError` naming the
    installed ones if there is none."""
    scheduler = registry.schedulers.get(name)
    if scheduler is None:
        raise LoomError(
            f"unknown scheduler {name!r}",
            hint=f"installed schedulers: {_listed(registry.schedulers)}",
        )
    return scheduler


def _listed(table: dict[str, Any]) -> str:
    return ", ".join(table) if table else "none (is loom-samplers installed?)"
