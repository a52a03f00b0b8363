"""The guidance arithmetic the guidance-patch nodes (:mod:`loom_samplers.cfg_nodes`) install:
CFG, pre-CFG and post-CFG functions of :class:`loom.samplers.GuidanceHooks`, each ComfyUI
0.8's rule written in x0 space (given and returning denoised predictions). Torch is
imported when a function runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from loom.samplers import CFGStep, PostCFGStep, PreCFGStep

if TYPE_CHECKING:
    from torch import Tensor


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
