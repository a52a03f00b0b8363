"""PerturbedAttentionGuidance (Ahn et al. 2024, arXiv:2403.17377) for the SD1.x / SDXL UNet.

A post-CFG function: the positive prompt is evaluated a second time with the middle block's
self-attention replaced by identity (each token's attention output is its own value, the
attention map taken to be the identity matrix), and the guided x0 is pushed away from that
perturbed prediction: ``denoised + (cond - perturbed) * scale`` (ComfyUI's
``comfy_extras/nodes_pag.py`` rule). The perturbation goes through the UNet's
:class:`loom_sd15.unet.SelfAttentionReplacement` hook on a clone of the MODEL handle.
"""

from __future__ import annotations

from typing import Any

import attrs

import loom
from loom.errors import LoomError
from loom.samplers import PostCFGStep, guidance_hooks_of
from loom.types import Model

ui = loom.ui

#: where ComfyUI's node perturbs the self-attention
PERTURBED_BLOCK = ("middle", 0)


def identity_attention(q: Any, k: Any, v: Any, heads: int, site: Any = None) -> Any:
    """Self-attention whose map is the identity: the output is the value."""
    return v


def perturbed_model(model: Any) -> Any:
    """A clone of ``model`` whose middle-block self-attention is :func:`identity_attention`."""
    perturbed = model.clone()
    perturbed.self_attention_replacements = {
        **model.self_attention_replacements,
        PERTURBED_BLOCK: identity_attention,
    }
    return perturbed


@attrs.frozen
class PerturbedAttention:
    """The post-CFG function: ``denoised + (cond_denoised - perturbed) * scale``."""

    scale: float

    def __call__(self, step: PostCFGStep) -> Any:
        if self.scale == 0 or step.predict_positive is None:
            return step.denoised
        perturbed = step.predict_positive(perturbed_model(step.model))
        return step.denoised + (step.cond_denoised - perturbed) * self.scale


@loom.node("PerturbedAttentionGuidance", category="model_patches/unet", v3=True)
class PerturbedAttentionGuidance:
    """Guide away from the prediction with the middle block's self-attention perturbed."""

    model: Model
    scale: float = ui.float(3.0, min=0.0, max=100.0, step=0.01, round=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        if not hasattr(self.model, "self_attention_replacements"):
            raise LoomError(
                "PerturbedAttentionGuidance: the model "
                f"{getattr(self.model, 'name', type(self.model).__name__)} is not a UNet with "
                "self-attention blocks",
                hint="PerturbedAttentionGuidance applies to SD1.x and SDXL models",
            )
        patched = self.model.clone()
        function = PerturbedAttention(float(self.scale))
        patched.guidance = guidance_hooks_of(patched).with_post_cfg(function)
        return patched


NODES = [PerturbedAttentionGuidance]
