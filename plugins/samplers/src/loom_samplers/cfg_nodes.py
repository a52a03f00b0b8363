"""Guidance-patch nodes: MODEL in, a clone with a CFG, pre-CFG or post-CFG function out.

Each node sets a function of :class:`loom.samplers.GuidanceHooks` on a clone of the model;
the CFG guider applies them at every model evaluation. The rules are ComfyUI 0.8's
(``comfy_extras``: ``nodes_model_advanced`` RescaleCFG, ``nodes_cfg`` CFGZeroStar and
CFGNorm, ``nodes_mahiro`` Mahiro, ``nodes_eps`` Epsilon Scaling and TemporalScoreRescaling,
``nodes_tcfg`` TCFG, ``nodes_apg`` APG, ``nodes_perpneg`` PerpNeg; PerpNegGuider builds a
guider), written in x0 space: the functions are given and return denoised predictions. Torch is imported when a function runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

import loom
from loom.samplers import CFGStep, PostCFGStep, PreCFGStep, guidance_hooks_of
from loom.types import Conditioning, Guider, Model

if TYPE_CHECKING:
    from torch import Tensor

ui = loom.ui

PATCHED_MODEL = [loom.OutputDef("MODEL", "patched_model")]


def _batch_view(sigma: Tensor, like: Tensor) -> Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


@attrs.frozen
class RescaledCFG:
    """Rescaled CFG (Lin et al. 2023, arXiv:2305.08891 §3.4) as ComfyUI computes it.

    Both predictions are turned into v-predictions with the eps-model relation (whatever the
    model's parameterisation, as ComfyUI does), combined by CFG, rescaled to the positive's
    per-item standard deviation and mixed back by ``multiplier``; the result is turned back
    into x0.
    """

    multiplier: float

    def __call__(self, step: CFGStep) -> Tensor:
        import torch

        sigma = _batch_view(step.sigma, step.x)
        root = (sigma * sigma + 1.0) ** 0.5
        scaled_x = step.x / (sigma * sigma + 1.0)
        cond = (scaled_x - step.cond_denoised) * root / sigma
        uncond = (scaled_x - step.uncond_denoised) * root / sigma
        guided = uncond + step.cond_scale * (cond - uncond)
        dims = tuple(range(1, guided.ndim))
        rescaled = guided * (
            torch.std(cond, dim=dims, keepdim=True) / torch.std(guided, dim=dims, keepdim=True)
        )
        final = self.multiplier * rescaled + (1.0 - self.multiplier) * guided
        return scaled_x - final * sigma / root


def optimized_scale(positive: Tensor, negative: Tensor) -> Tensor:
    """CFG-Zero*'s per-item projection ``<p, n> / (|n|² + 1e-8)``, shaped to broadcast."""
    import torch

    flat_p = positive.reshape(positive.shape[0], -1)
    flat_n = negative.reshape(negative.shape[0], -1)
    dot = torch.sum(flat_p * flat_n, dim=1, keepdim=True)
    norm = torch.sum(flat_n**2, dim=1, keepdim=True) + 1e-8
    return (dot / norm).reshape([positive.shape[0]] + [1] * (positive.ndim - 1))


def cfg_zero_star(step: PostCFGStep) -> Tensor:
    """CFG-Zero* (Fan et al. 2025): the negative's x0 scaled by the projection ``alpha`` of
    the positive noise on the negative noise, ``out + u (alpha - 1) + cfg u (1 - alpha)``."""
    uncond = step.uncond_denoised
    alpha = optimized_scale(step.x - step.cond_denoised, step.x - uncond)
    return step.denoised + uncond * (alpha - 1.0) + step.cond_scale * uncond * (1.0 - alpha)


@attrs.frozen
class NormalizedCFG:
    """CFGNorm: the guided x0 scaled down, per pixel, to at most the positive's channel norm,
    times ``strength``."""

    strength: float

    def __call__(self, step: PostCFGStep) -> Tensor:
        import torch

        cond_norm = torch.norm(step.cond_denoised, dim=1, keepdim=True)
        guided_norm = torch.norm(step.denoised, dim=1, keepdim=True)
        scale = (cond_norm / (guided_norm + 1e-8)).clamp(min=0.0, max=1.0)
        return step.denoised * scale * self.strength


def mahiro(step: PostCFGStep) -> Tensor:
    """Mahiro: mix the guided x0 with the positive's ``cfg``-scaled x0 by how similar the
    (signed square roots of the) scaled negative and their average are."""
    import torch
    import torch.nn.functional as F

    leap = step.cond_denoised * step.cond_scale
    uncond_leap = step.uncond_denoised * step.cond_scale
    merge = (leap + step.denoised) / 2
    root_u = torch.sqrt(uncond_leap.abs()) * uncond_leap.sign()
    root_m = torch.sqrt(merge.abs()) * merge.sign()
    similarity = F.cosine_similarity(root_u, root_m).mean()
    weight = 2 * (similarity + 1)
    return (weight * step.denoised + (4 - weight) * leap) / 4


@attrs.frozen
class EpsilonScaled:
    """Epsilon scaling (Ning et al. 2023, arXiv:2308.15321, uniform schedule): the guided
    noise ``x - x0`` divided by ``scaling_factor``."""

    scaling_factor: float

    def __call__(self, step: PostCFGStep) -> Tensor:
        factor = self.scaling_factor or 1e-9
        return step.x - (step.x - step.denoised) / factor


def tangential_damping(cond_score: Tensor, uncond_score: Tensor) -> Tensor:
    """TCFG's negative score: its projection on the first right singular vector of the
    ``[uncond; cond]`` score matrix of each batch item (computed in float32)."""
    import torch

    batch = cond_score.shape[0]
    cond_flat = cond_score.reshape(batch, 1, -1).float()
    uncond_flat = uncond_score.reshape(batch, 1, -1).float()
    matrix = torch.cat((uncond_flat, cond_flat), dim=1)
    try:
        _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    except RuntimeError:  # some backends lack this SVD
        _, _, vh = torch.linalg.svd(matrix.cpu(), full_matrices=False)
    first = vh[:, 0:1, :].to(uncond_flat.device)
    damped = (uncond_flat @ first.transpose(-2, -1)) * first
    return damped.reshape_as(uncond_score).to(uncond_score.dtype)


def tangential_damping_cfg(step: PreCFGStep) -> tuple[Tensor, ...]:
    """TCFG (Kwon et al. 2025, arXiv:2503.18137): the negative x0 rebuilt from its damped
    noise; unchanged when the negative was not evaluated."""
    if len(step.outputs) < 2 or not all(step.evaluated[:2]):
        return step.outputs
    cond, uncond = step.outputs[:2]
    damped = tangential_damping(step.x - cond, step.x - uncond)
    return (cond, step.x - damped, *step.outputs[2:])


@attrs.define(eq=False)
class ProjectedGuidance:
    """APG (Sadat et al. 2024, arXiv:2410.02416) as a pre-CFG rewrite of the positive x0.

    The guidance ``cond - uncond`` is averaged with ``momentum`` over the run (restarted when
    sigma rises: a new run), clipped to L2 norm ``norm_threshold`` (0: off), split into parts
    parallel and orthogonal to ``cond`` and recombined with the parallel part times ``eta``;
    the positive becomes ``uncond + modified + (cond - uncond) / cond_scale``, so that plain
    CFG then gives ``uncond + cond_scale * modified + (cond - uncond)``. Holds the running
    average: one instance per patched model, as ComfyUI's closure.
    """

    eta: float
    norm_threshold: float
    momentum: float
    running: Any = None
    previous_sigma: float | None = None

    def __call__(self, step: PreCFGStep) -> tuple[Tensor, ...]:
        import torch

        if len(step.outputs) < 2:
            return step.outputs
        cond, uncond = step.outputs[:2]
        sigma = float(step.sigma[0])
        if self.previous_sigma is not None and sigma > self.previous_sigma:
            self.running = None
        self.previous_sigma = sigma
        guidance = cond - uncond
        if self.momentum != 0:
            self.running = (
                guidance if self.running is None else self.momentum * self.running + guidance
            )
            guidance = self.running
        dims = [-1, -2, -3]
        if self.norm_threshold > 0:
            norm = guidance.norm(p=2, dim=dims, keepdim=True)
            guidance = guidance * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        unit = torch.nn.functional.normalize(cond, dim=dims)
        parallel = (guidance * unit).sum(dim=dims, keepdim=True) * unit
        modified = (guidance - parallel) + self.eta * parallel
        positive = (uncond + modified) + (cond - uncond) / step.cond_scale
        return (positive, uncond, *step.outputs[2:])


@attrs.frozen
class PerpNegCFG:
    """The deprecated PerpNeg node's CFG function: the empty prompt evaluated at each call
    (resolved for the call's latent as a negative prompt, once per latent shape and model,
    as ComfyUI converts it once) and combined with the positive and negative x0 by
    :func:`loom_samplers.guidance_steps.perp_neg`. The evaluation is the guider's
    (``step.evaluate``: its hook groups and step cache), as ComfyUI's goes through
    ``calc_cond_batch`` with the step's model options."""

    empty_conditioning: list
    neg_scale: float
    _resolved: dict = attrs.field(factory=dict, eq=False, repr=False, init=False)

    def __call__(self, step: CFGStep) -> Tensor:
        from loom_samplers.conditioning_batches import calc_cond_batch, resolve_conditioning
        from loom_samplers.guidance_steps import perp_neg

        memo = (id(step.model), tuple(step.x.shape), str(step.x.device))
        found = self._resolved.get(memo)
        if found is None or found[0] is not step.model:
            entries = resolve_conditioning(
                self.empty_conditioning, step.model, step.x, prompt_type="negative"
            )
            self._resolved.clear()  # one latent layout at a time
            found = self._resolved[memo] = (step.model, entries)
        entries = found[1]
        if step.evaluate is not None:
            (empty,) = step.evaluate(step.model, [entries])
        else:
            (empty,) = calc_cond_batch(step.model, [entries], step.x, step.sigma)
        return perp_neg(
            step.cond_denoised, step.uncond_denoised, empty, self.neg_scale, step.cond_scale
        )


@loom.node("RescaleCFG", category="advanced/model")
class RescaleCFG:
    model: Model
    multiplier: float = ui.float(0.7, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        model = self.model.clone()
        hooks = guidance_hooks_of(model)
        model.guidance = hooks.with_cfg_function(RescaledCFG(float(self.multiplier)))
        return model


def _with_post_cfg(model: Model, function: Callable[[PostCFGStep], Tensor]) -> Model:
    patched = model.clone()
    patched.guidance = guidance_hooks_of(patched).with_post_cfg(function)
    return patched


@loom.node("CFGZeroStar", category="advanced/guidance", outputs=PATCHED_MODEL, v3=True)
class CFGZeroStar:
    model: Model

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        return loom.NodeOutput((_with_post_cfg(self.model, cfg_zero_star),))


@loom.node(
    "CFGNorm", category="advanced/guidance", outputs=PATCHED_MODEL, experimental=True, v3=True
)
class CFGNorm:
    model: Model
    strength: float = ui.float(1.0, min=0.0, max=100.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        return loom.NodeOutput((_with_post_cfg(self.model, NormalizedCFG(float(self.strength))),))


@loom.node(
    "Mahiro",
    category="_for_testing",
    display_name="Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)",
    outputs=PATCHED_MODEL,
    experimental=True,
    v3=True,
)
class Mahiro:
    """Modify the guidance to scale more on the 'direction' of the positive prompt rather than the difference between the negative prompt."""

    model: Model

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        return loom.NodeOutput((_with_post_cfg(self.model, mahiro),))


# ComfyUI's id has a space; saved workflows and API prompts name the node by it
@loom.node("Epsilon Scaling", category="model_patches/unet", v3=True)
class EpsilonScaling:
    # no docstring: /object_info's description is ComfyUI's (empty); EpsilonScaled says what it does

    model: Model
    scaling_factor: float = ui.float(1.005, min=0.5, max=1.5, step=0.001, display="number")

    def run(self, ctx: loom.RunContext) -> Model:
        return _with_post_cfg(self.model, EpsilonScaled(float(self.scaling_factor)))


@attrs.frozen
class TemporalScoreRescaled:
    """Temporal score rescaling (arXiv:2510.01184, eq. 6): the guided x0 is pulled from
    ``x / α`` by ``r = (snr·s² + 1) / (snr·s²/k + 1)`` (``r = k`` at infinite snr), which
    scales the predicted noise by ``r``. One sigma per step (the batch's first), as ComfyUI."""

    k: float
    sigma: float

    def __call__(self, step: PostCFGStep) -> Tensor:
        import torch

        from loom_samplers.samplers.base import half_log_snr, is_flow

        sigma = step.sigma.reshape(-1)[0]
        if self.k == 1 or sigma.item() == 0:
            return step.denoised
        lam = half_log_snr(sigma, is_flow(step.model))
        snr = (2 * lam).exp()
        if snr.item() == 0:
            return step.denoised
        variance = self.sigma**2
        rescale = torch.where(
            torch.isposinf(snr),
            torch.tensor(self.k, dtype=snr.dtype),
            (snr * variance + 1) / (snr * variance / self.k + 1),
        )
        alpha = sigma * lam.exp()
        return torch.lerp(step.x / alpha, step.denoised, rescale.to(step.denoised.dtype))


@loom.node(
    "TemporalScoreRescaling",
    category="model_patches/unet",
    display_name="TSR - Temporal Score Rescaling",
    outputs=PATCHED_MODEL,
    v3=True,
)
class TemporalScoreRescaling:
    """[Post-CFG Function] Temporal Score Rescaling (arXiv:2510.01184): scales the model's
    predicted noise by a factor that depends on the step's noise level, to make samples more
    detailed (k < 1) or smoother (k > 1)."""

    model: Model
    tsr_k: float = ui.float(
        0.95,
        min=0.01,
        max=100.0,
        step=0.001,
        display="number",
        tooltip="Rescaling strength: below 1 more detail, above 1 smoother; 1 turns it off.",
    )
    tsr_sigma: float = ui.float(
        1.0,
        min=0.01,
        max=100.0,
        step=0.001,
        display="number",
        tooltip="How early in sampling the rescaling starts: larger starts earlier.",
    )

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        rescaled = TemporalScoreRescaled(float(self.tsr_k), float(self.tsr_sigma))
        return loom.NodeOutput((_with_post_cfg(self.model, rescaled),))


def _with_pre_cfg(model: Model, function: Callable[[PreCFGStep], Any]) -> Model:
    patched = model.clone()
    patched.guidance = guidance_hooks_of(patched).with_pre_cfg(function)
    return patched


@loom.node(
    "TCFG",
    category="advanced/guidance",
    display_name="Tangential Damping CFG",
    outputs=PATCHED_MODEL,
    v3=True,
)
class TCFG:
    """TCFG – Tangential Damping CFG (2503.18137)

    Refine the uncond (negative) to align with the cond (positive) for improving quality."""

    model: Model

    def run(self, ctx: loom.RunContext) -> loom.NodeOutput:
        return loom.NodeOutput((_with_pre_cfg(self.model, tangential_damping_cfg),))


@loom.node(
    "APG", category="sampling/custom_sampling", display_name="Adaptive Projected Guidance", v3=True
)
class APG:
    # no docstring: /object_info's description is ComfyUI's (empty)

    model: Model
    eta: float = ui.float(
        1.0,
        min=-10.0,
        max=10.0,
        step=0.01,
        tooltip="Controls the scale of the parallel guidance vector. Default CFG behavior at a setting of 1.",
    )
    norm_threshold: float = ui.float(
        5.0,
        min=0.0,
        max=50.0,
        step=0.1,
        tooltip="Normalize guidance vector to this value, normalization disable at a setting of 0.",
    )
    momentum: float = ui.float(
        0.0,
        min=-5.0,
        max=1.0,
        step=0.01,
        tooltip="Controls a running average of guidance during diffusion, disabled at a setting of 0.",
    )

    def run(self, ctx: loom.RunContext) -> Model:
        rule = ProjectedGuidance(float(self.eta), float(self.norm_threshold), float(self.momentum))
        return _with_pre_cfg(self.model, rule)


@loom.node(
    "PerpNeg",
    category="_for_testing",
    display_name="Perp-Neg (DEPRECATED by PerpNegGuider)",
    experimental=True,
    deprecated=True,
    v3=True,
)
class PerpNeg:
    model: Model
    empty_conditioning: Conditioning
    neg_scale: float = ui.float(1.0, min=0.0, max=100.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        model = self.model.clone()
        rule = PerpNegCFG(list(self.empty_conditioning), float(self.neg_scale))
        model.guidance = guidance_hooks_of(model).with_cfg_function(rule)
        return model


@loom.node("PerpNegGuider", category="_for_testing", experimental=True, v3=True)
class PerpNegGuider:
    model: Model
    positive: Conditioning
    negative: Conditioning
    empty_conditioning: Conditioning
    cfg: float = ui.float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    neg_scale: float = ui.float(1.0, min=0.0, max=100.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Guider:
        from loom_samplers.guiders import PerpNegGuider as _PerpNeg

        conds = {
            "positive": self.positive,
            "empty_negative_prompt": self.empty_conditioning,
            "negative": self.negative,
        }
        return _PerpNeg(self.model, conds, float(self.cfg), neg_scale=float(self.neg_scale))


CFG_NODES = {
    RescaleCFG: "comfy_extras.nodes_model_advanced",
    CFGZeroStar: "comfy_extras.nodes_cfg",
    CFGNorm: "comfy_extras.nodes_cfg",
    Mahiro: "comfy_extras.nodes_mahiro",
    EpsilonScaling: "comfy_extras.nodes_eps",
    TemporalScoreRescaling: "comfy_extras.nodes_eps",
    TCFG: "comfy_extras.nodes_tcfg",
    APG: "comfy_extras.nodes_apg",
    PerpNegGuider: "comfy_extras.nodes_perpneg",
    PerpNeg: "comfy_extras.nodes_perpneg",
}
"""The nodes and where ComfyUI 0.8 defines them (/object_info's ``python_module``)."""
