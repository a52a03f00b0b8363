"""Sampler selectors of ComfyUI's ``comfy_extras/nodes_advanced_samplers.py``: SamplerLCMUpscale
and SamplerEulerCFGpp, whose samplers are not in the sampler list."""

from __future__ import annotations

import loom
from loom.samplers import RegisteredSampler
from loom.types import SamplerInfo, SamplerRef
from loom_samplers import ksampler
from loom_samplers.sampler_nodes import _choice

ui = loom.ui

# Kept here (not imported from samplers.advanced) so registration stays torch-free.
UPSCALE_METHODS = ["bislerp", "nearest-exact", "bilinear", "area", "bicubic"]


def _unlisted(name: str, function_name: str, info: SamplerInfo, **options) -> SamplerRef:
    from loom_samplers.samplers import advanced

    function = getattr(advanced, function_name)
    return ksampler.SamplerChoice(RegisteredSampler(name, function, info), options)


@loom.node("SamplerLCMUpscale", category="sampling/custom_sampling/samplers", v3=True)
class SamplerLCMUpscale:
    """LCM that enlarges the latent by ``scale_ratio`` over ``scale_steps`` steps (-1: half)."""

    scale_ratio: float = ui.float(1.0, min=0.1, max=20.0, step=0.01)
    scale_steps: int = ui.int(-1, min=-1, max=1000, step=1)
    upscale_method: str = ui.combo(UPSCALE_METHODS)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        return _unlisted(
            "lcm_upscale",
            "lcm_upscale",
            SamplerInfo(),
            total_upscale=self.scale_ratio,
            upscale_steps=None if self.scale_steps < 0 else self.scale_steps,
            upscale_method=self.upscale_method,
        )


@loom.node(
    "SamplerEulerCFGpp",
    category="_for_testing",
    display_name="SamplerEulerCFG++",
    experimental=True,
    v3=True,
)
class SamplerEulerCFGpp:
    """euler_cfg_pp ("regular") or the older CFG++ Euler step ("alternative")."""

    version: str = ui.combo(["regular", "alternative"])

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        if self.version == "alternative":
            info = SamplerInfo(needs_uncond=True)
            return _unlisted("euler_cfg_pp_alternative", "euler_cfg_pp_alternative", info)
        return _choice(ctx, "euler_cfg_pp")


NODES = [SamplerLCMUpscale, SamplerEulerCFGpp]
