"""Guidance-patch nodes: MODEL in, a clone with a CFG, pre-CFG or post-CFG function out.

Each node sets a function of :class:`loom.samplers.GuidanceHooks` on a clone of the model;
the CFG guider applies them at every model evaluation. The rules are ComfyUI 0.8's
(``comfy_extras``: ``nodes_model_advanced`` RescaleCFG, ``nodes_cfg`` CFGZeroStar and
CFGNorm, ``nodes_mahiro`` Mahiro, ``nodes_eps`` Epsilon Scaling and TemporalScoreRescaling,
``nodes_tcfg`` TCFG, ``nodes_apg`` APG, ``nodes_perpneg`` PerpNeg; PerpNegGuider builds a
guider); the functions themselves are in :mod:`loom_samplers.cfg_functions`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import loom
from loom.input_checks import check_text_context
from loom.samplers import PostCFGStep, PreCFGStep, guidance_hooks_of
from loom.types import Conditioning, Guider, Model
from loom_samplers.cfg_functions import (
    EpsilonScaled,
    NormalizedCFG,
    PerpNegCFG,
    ProjectedGuidance,
    RescaledCFG,
    TemporalScoreRescaled,
    cfg_zero_star,
    mahiro,
    tangential_damping_cfg,
)

if TYPE_CHECKING:
    from torch import Tensor

ui = loom.ui

PATCHED_MODEL = [loom.OutputDef("MODEL", "patched_model")]


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

        inputs = {
            "positive": self.positive,
            "negative": self.negative,
            "empty_conditioning": self.empty_conditioning,
        }
        check_text_context("PerpNegGuider", self.model, inputs)
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
