"""ComfyUI's DiT patch nodes for Flux: SkipLayerGuidanceDiT, SkipLayerGuidanceDiTSimple and
ScaleROPE.

Skip-layer guidance (after Perturbed Attention Guidance, arXiv:2403.17377) predicts with
some double / single blocks skipped (:class:`~loom_flux.dit_options.BlockSkip` on a clone
of the MODEL handle) and guides away from that prediction:

- SkipLayerGuidanceDiT, post-CFG: inside the sigma window, with ``scale > 0``, the positive
  is predicted again with the blocks skipped and ``denoised + (cond - skipped) * scale`` is
  returned, then, with ``rescaling_scale`` r, multiplied by ``r * std(cond) / std(out) +
  1 - r``;
- SkipLayerGuidanceDiTSimple, in place of the guider's batching: inside the window the
  negative is predicted with the blocks skipped (and the positive on its own).

ScaleROPE scales and shifts the image tokens' rotary position ids
(:class:`~loom_flux.dit_options.RopeScale`).
"""

from __future__ import annotations

from typing import Any

import attrs

import loom
from loom.errors import LoomError
from loom.samplers import CondBatchStep, PostCFGStep, guidance_hooks_of
from loom.types import Model
from loom_flux.dit_options import BlockSkip, RopeScale, parse_layers

ui = loom.ui

NODES_SLG = "comfy_extras.nodes_slg"
NODES_ROPE = "comfy_extras.nodes_rope"


def skipping_model(model: Any, skip: BlockSkip) -> Any:
    """A clone of ``model`` skipping ``skip``'s blocks as well as those it already skips."""
    skipping = model.clone()
    before = getattr(model, "block_skip", None) or BlockSkip()
    skipping.block_skip = BlockSkip(before.double | skip.double, before.single | skip.single)
    return skipping


def _flux_handle(model: Any, node: str, attribute: str) -> None:
    if not hasattr(model, attribute):
        name = getattr(model, "name", type(model).__name__)
        raise LoomError(
            f"{node}: the model {name} (input 'model') is not a Flux DiT",
            hint=f"{node} applies to Flux models (load them with UNETLoader or a checkpoint)",
        )


def _block_skip(node: str, double_layers: str, single_layers: str) -> BlockSkip:
    return BlockSkip(
        parse_layers(double_layers, node=node, input_name="double_layers"),
        parse_layers(single_layers, node=node, input_name="single_layers"),
    )


@attrs.frozen
class SigmaWindow:
    """Sigmas from ``end`` to ``start`` inclusive (ComfyUI compares the first row's sigma)."""

    start: float
    end: float

    def holds(self, sigma: Any) -> bool:
        value = float(sigma[0])
        return self.end <= value <= self.start

    @classmethod
    def of(cls, model: Any, start_percent: float, end_percent: float) -> SigmaWindow:
        sampling = model.model_sampling
        return cls(sampling.percent_to_sigma(start_percent), sampling.percent_to_sigma(end_percent))


@attrs.frozen
class SkipLayerGuidance:
    """The post-CFG function of SkipLayerGuidanceDiT."""

    skip: BlockSkip
    scale: float
    window: SigmaWindow
    rescaling_scale: float = 0.0

    def __call__(self, step: PostCFGStep) -> Any:
        if not (self.scale > 0 and self.window.holds(step.sigma)):
            return step.denoised
        if step.predict_positive is None:
            return step.denoised
        skipped = step.predict_positive(skipping_model(step.model, self.skip))
        out = step.denoised + (step.cond_denoised - skipped) * self.scale
        if self.rescaling_scale != 0:
            factor = step.cond_denoised.std() / out.std()
            out = out * (self.rescaling_scale * factor + (1 - self.rescaling_scale))
        return out


@attrs.frozen
class SkipLayerUncond:
    """The group evaluation of SkipLayerGuidanceDiTSimple: inside the window, the negative
    is predicted with the blocks skipped and the positive on its own."""

    skip: BlockSkip
    window: SigmaWindow

    def __call__(self, step: CondBatchStep) -> list[Any]:
        positive, negative = step.groups
        if negative is None or not self.window.holds(step.sigma):
            return step.evaluate(step.model, step.groups)
        cond = step.evaluate(step.model, (positive, None))[0]
        uncond = step.evaluate(skipping_model(step.model, self.skip), (None, negative))[1]
        return [cond, uncond]


@loom.node("SkipLayerGuidanceDiT", category="advanced/guidance", experimental=True, v3=True)
class SkipLayerGuidanceDiT:
    """Generic version of SkipLayerGuidance node that can be used on every DiT model."""

    model: Model
    double_layers: str = ui.string("7, 8, 9", multiline=False)
    single_layers: str = ui.string("7, 8, 9", multiline=False)
    scale: float = ui.float(3.0, min=0.0, max=10.0, step=0.1)
    start_percent: float = ui.float(0.01, min=0.0, max=1.0, step=0.001)
    end_percent: float = ui.float(0.15, min=0.0, max=1.0, step=0.001)
    rescaling_scale: float = ui.float(0.0, min=0.0, max=10.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Model:
        node = "SkipLayerGuidanceDiT"
        skip = _block_skip(node, self.double_layers, self.single_layers)
        if not skip:
            return self.model
        _flux_handle(self.model, node, "block_skip")
        function = SkipLayerGuidance(
            skip,
            float(self.scale),
            SigmaWindow.of(self.model, self.start_percent, self.end_percent),
            float(self.rescaling_scale),
        )
        patched = self.model.clone()
        patched.guidance = guidance_hooks_of(patched).with_post_cfg(function)
        return patched


@loom.node("SkipLayerGuidanceDiTSimple", category="advanced/guidance", experimental=True, v3=True)
class SkipLayerGuidanceDiTSimple:
    """Simple version of the SkipLayerGuidanceDiT node that only modifies the uncond pass."""

    model: Model
    double_layers: str = ui.string("7, 8, 9", multiline=False)
    single_layers: str = ui.string("7, 8, 9", multiline=False)
    start_percent: float = ui.float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent: float = ui.float(1.0, min=0.0, max=1.0, step=0.001)

    def run(self, ctx: loom.RunContext) -> Model:
        node = "SkipLayerGuidanceDiTSimple"
        skip = _block_skip(node, self.double_layers, self.single_layers)
        if not skip:
            return self.model
        _flux_handle(self.model, node, "block_skip")
        function = SkipLayerUncond(
            skip, SigmaWindow.of(self.model, self.start_percent, self.end_percent)
        )
        patched = self.model.clone()
        patched.guidance = guidance_hooks_of(patched).with_cond_batch_function(function)
        return patched


@loom.node("ScaleROPE", category="advanced/model_patches", experimental=True, v3=True)
class ScaleROPE:
    """Scale and shift the ROPE of the model."""

    model: Model
    scale_x: float = ui.float(1.0, min=0.0, max=100.0, step=0.1)
    shift_x: float = ui.float(0.0, min=-256.0, max=256.0, step=0.1)
    scale_y: float = ui.float(1.0, min=0.0, max=100.0, step=0.1)
    shift_y: float = ui.float(0.0, min=-256.0, max=256.0, step=0.1)
    scale_t: float = ui.float(1.0, min=0.0, max=100.0, step=0.1)
    shift_t: float = ui.float(0.0, min=-256.0, max=256.0, step=0.1)

    def run(self, ctx: loom.RunContext) -> Model:
        _flux_handle(self.model, "ScaleROPE", "rope_scale")
        patched = self.model.clone()
        patched.rope_scale = RopeScale(
            float(self.scale_x),
            float(self.shift_x),
            float(self.scale_y),
            float(self.shift_y),
            float(self.scale_t),
            float(self.shift_t),
        )
        return patched


NODES: tuple[tuple[type, str], ...] = (
    (SkipLayerGuidanceDiT, NODES_SLG),
    (SkipLayerGuidanceDiTSimple, NODES_SLG),
    (ScaleROPE, NODES_ROPE),
)
