"""The sampling nodes, with ComfyUI 0.8's ids, input names, types and defaults.

KSampler, KSamplerAdvanced (``nodes.py``) and the custom-sampling family
(``comfy_extras/nodes_custom_sampler.py``): guiders, noise sources and SamplerCustom /
SamplerCustomAdvanced here; schedulers and sigma tools in :mod:`.schedule_nodes`, sampler
selectors in :mod:`.sampler_nodes`. :data:`NODES` lists them all.
"""

from __future__ import annotations

from typing import Any

import loom
from loom import RunContext
from loom.input_checks import check_text_context
from loom.samplers import find_sampler, find_scheduler
from loom.types import Conditioning, Guider, Latent, Model, Noise, SamplerRef, Sigmas
from loom_samplers import ksampler
from loom_samplers.advanced_sampler_nodes import NODES as ADVANCED_SAMPLER_NODES
from loom_samplers.guiders import DualCFGGuider as _DualCFG
from loom_samplers.guiders import Guider as _Guider
from loom_samplers.model_interface import fix_empty_latent_channels, process_latent_out
from loom_samplers.node_inputs import sampler_names, scheduler_names
from loom_samplers.noise import EmptyNoiseGen, RandomNoiseGen, prepare_noise
from loom_samplers.noise_level_nodes import NODES as NOISE_LEVEL_NODES
from loom_samplers.sampler_nodes import (
    KSamplerSelect,
    SamplerDPMAdaptative,
    SamplerDPMPP_2M_SDE,
    SamplerDPMPP_2S_Ancestral,
    SamplerDPMPP_3M_SDE,
    SamplerDPMPP_SDE,
    SamplerER_SDE,
    SamplerEulerAncestral,
    SamplerEulerAncestralCFGPP,
    SamplerLMS,
    SamplerSASolver,
    SamplerSEEDS2,
)
from loom_samplers.schedule_nodes import (
    BasicScheduler,
    BetaSamplingScheduler,
    ExponentialScheduler,
    FlipSigmas,
    KarrasScheduler,
    LaplaceScheduler,
    PolyexponentialScheduler,
    SDTurboScheduler,
    SplitSigmas,
    SplitSigmasDenoise,
    VPScheduler,
)
from loom_samplers.sigma_nodes import NODES as SIGMA_NODES

ui = loom.ui

SEED_MAX = 0xFFFFFFFFFFFFFFFF


def _common_ksampler(
    ctx: loom.RunContext,
    model: Any,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: list,
    negative: list,
    latent: dict,
    *,
    node: str,
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> dict:
    """ComfyUI's ``common_ksampler``: noise, sigmas, CFG guider, one sampling run."""
    import torch

    check_text_context(node, model, {"positive": positive, "negative": negative})

    latent_image = fix_empty_latent_channels(model, latent["samples"])
    if disable_noise:
        noise = torch.zeros(
            latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout
        )
    else:
        noise = prepare_noise(latent_image, seed, latent.get("batch_index"))
    registry = ksampler.registry_of(ctx)
    registered = find_sampler(registry, sampler_name)
    sigmas = ksampler.ksampler_sigmas(
        model.model_sampling,
        find_scheduler(registry, scheduler),
        steps,
        denoise,
        discard_penultimate=registered.info.discard_penultimate_sigma,
        start_step=start_step,
        last_step=last_step,
        force_full_denoise=force_full_denoise,
    )
    out = dict(latent)
    if sigmas is None:  # start_at_step past the end: the latent as it is
        out["samples"] = latent_image
        return out
    guider = _Guider(model, {"positive": positive, "negative": negative}, cfg)
    on_step = ksampler.step_reporter(ctx, model, steps)
    out["samples"] = ksampler.sample(
        guider,
        noise,
        latent_image,
        ksampler.SamplerChoice(registered),
        sigmas,
        denoise_mask=latent.get("noise_mask"),
        seed=seed,
        ctx=ctx,
        on_step=on_step,
    )
    return out


_LATENT_OUT = [loom.OutputDef("LATENT", "LATENT", tooltip="The denoised latent.")]


@loom.node("KSampler", category="sampling", outputs=_LATENT_OUT)
class KSampler:
    """Uses the provided model, positive and negative conditioning to denoise the latent image."""

    model: Model = ui.input(tooltip="The model used for denoising the input latent.")
    seed: int = ui.int(
        0,
        min=0,
        max=SEED_MAX,
        control_after_generate=True,
        tooltip="The random seed used for creating the noise.",
    )
    steps: int = ui.int(
        20, min=1, max=10000, tooltip="The number of steps used in the denoising process."
    )
    cfg: float = ui.float(
        8.0,
        min=0.0,
        max=100.0,
        step=0.1,
        round=0.01,
        tooltip="The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality.",
    )
    sampler_name: str = ui.combo(
        sampler_names,
        tooltip="The algorithm used when sampling, this can affect the quality, speed, and style of the generated output.",
    )
    scheduler: str = ui.combo(
        scheduler_names,
        tooltip="The scheduler controls how noise is gradually removed to form the image.",
    )
    positive: Conditioning = ui.input(
        tooltip="The conditioning describing the attributes you want to include in the image."
    )
    negative: Conditioning = ui.input(
        tooltip="The conditioning describing the attributes you want to exclude from the image."
    )
    latent_image: Latent = ui.input(tooltip="The latent image to denoise.")
    denoise: float = ui.float(
        1.0,
        min=0.0,
        max=1.0,
        step=0.01,
        tooltip="The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling.",
    )

    def run(self, ctx: loom.RunContext) -> Latent:
        return _common_ksampler(
            ctx,
            self.model,
            self.seed,
            self.steps,
            self.cfg,
            self.sampler_name,
            self.scheduler,
            self.positive,
            self.negative,
            self.latent_image,
            node="KSampler",
            denoise=self.denoise,
        )


@loom.node("KSamplerAdvanced", category="sampling", display_name="KSampler (Advanced)")
class KSamplerAdvanced:
    model: Model
    add_noise: str = ui.combo(["enable", "disable"])
    noise_seed: int = ui.int(0, min=0, max=SEED_MAX, control_after_generate=True)
    steps: int = ui.int(20, min=1, max=10000)
    cfg: float = ui.float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name: str = ui.combo(sampler_names)
    scheduler: str = ui.combo(scheduler_names)
    positive: Conditioning
    negative: Conditioning
    latent_image: Latent
    start_at_step: int = ui.int(0, min=0, max=10000)
    end_at_step: int = ui.int(10000, min=0, max=10000)
    return_with_leftover_noise: str = ui.combo(["disable", "enable"])

    def run(self, ctx: loom.RunContext) -> Latent:
        return _common_ksampler(
            ctx,
            self.model,
            self.noise_seed,
            self.steps,
            self.cfg,
            self.sampler_name,
            self.scheduler,
            self.positive,
            self.negative,
            self.latent_image,
            node="KSamplerAdvanced",
            denoise=1.0,
            disable_noise=self.add_noise == "disable",
            start_step=self.start_at_step,
            last_step=self.end_at_step,
            force_full_denoise=self.return_with_leftover_noise != "enable",
        )


# --- guiders and noise ----------------------------------------------------------------------


@loom.node("CFGGuider", category="sampling/custom_sampling/guiders", v3=True)
class CFGGuider:
    model: Model
    positive: Conditioning
    negative: Conditioning
    cfg: float = ui.float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)

    def run(self, ctx: loom.RunContext) -> Guider:
        conds = {"positive": self.positive, "negative": self.negative}
        check_text_context("CFGGuider", self.model, conds)
        return _Guider(self.model, conds, self.cfg)


@loom.node("BasicGuider", category="sampling/custom_sampling/guiders", v3=True)
class BasicGuider:
    model: Model
    conditioning: Conditioning

    def run(self, ctx: loom.RunContext) -> Guider:
        check_text_context("BasicGuider", self.model, {"conditioning": self.conditioning})
        return _Guider(self.model, {"positive": self.conditioning}, 1.0)


@loom.node("DualCFGGuider", category="sampling/custom_sampling/guiders", v3=True)
class DualCFGGuider:
    model: Model
    cond1: Conditioning
    cond2: Conditioning
    negative: Conditioning
    cfg_conds: float = ui.float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    cfg_cond2_negative: float = ui.float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    style: str = ui.combo(["regular", "nested"])

    def run(self, ctx: loom.RunContext) -> Guider:
        inputs = {"cond1": self.cond1, "cond2": self.cond2, "negative": self.negative}
        check_text_context("DualCFGGuider", self.model, inputs)
        conds = {"positive": self.cond1, "middle": self.cond2, "negative": self.negative}
        return _DualCFG(
            self.model,
            conds,
            self.cfg_conds,
            cfg2=self.cfg_cond2_negative,
            nested=self.style == "nested",
        )


@loom.node("RandomNoise", category="sampling/custom_sampling/noise", v3=True)
class RandomNoise:
    noise_seed: int = ui.int(0, min=0, max=SEED_MAX, control_after_generate=True)

    def run(self, ctx: loom.RunContext) -> Noise:
        return RandomNoiseGen(self.noise_seed)


@loom.node("DisableNoise", category="sampling/custom_sampling/noise", v3=True)
class DisableNoise:
    def run(self, ctx: loom.RunContext) -> Noise:
        return EmptyNoiseGen()


# --- custom sampling ------------------------------------------------------------------------


@loom.outputs
class SampledLatents:
    output: Latent = loom.output()
    denoised_output: Latent = loom.output()


def _custom_sample(
    ctx: RunContext, guider: _Guider, noise_gen: Any, sampler: Any, sigmas: Any, latent: dict
) -> SampledLatents:
    model = guider.model
    latent = dict(latent)
    latent_image = fix_empty_latent_channels(model, latent["samples"])
    latent["samples"] = latent_image
    x0_out: dict = {}
    on_step = ksampler.step_reporter(ctx, model, sigmas.shape[-1] - 1, x0_out)
    samples = ksampler.sample(
        guider,
        noise_gen.generate_noise(latent),
        latent_image,
        sampler,
        sigmas,
        denoise_mask=latent.get("noise_mask"),
        seed=noise_gen.seed,
        ctx=ctx,
        on_step=on_step,
    )
    out = {**latent, "samples": samples}
    if "x0" in x0_out:
        denoised = {**latent, "samples": process_latent_out(model, x0_out["x0"].cpu())}
    else:
        denoised = out
    return SampledLatents(output=out, denoised_output=denoised)


@loom.node("SamplerCustom", category="sampling/custom_sampling", v3=True)
class SamplerCustom:
    model: Model
    add_noise: bool = ui.boolean(True)
    noise_seed: int = ui.int(0, min=0, max=SEED_MAX, control_after_generate=True)
    cfg: float = ui.float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    positive: Conditioning
    negative: Conditioning
    sampler: SamplerRef
    sigmas: Sigmas
    latent_image: Latent

    def run(self, ctx: loom.RunContext) -> SampledLatents:
        conds = {"positive": self.positive, "negative": self.negative}
        check_text_context("SamplerCustom", self.model, conds)
        guider = _Guider(self.model, conds, self.cfg)
        noise = (
            RandomNoiseGen(self.noise_seed) if self.add_noise else EmptyNoiseGen(self.noise_seed)
        )
        return _custom_sample(ctx, guider, noise, self.sampler, self.sigmas, self.latent_image)


@loom.node("SamplerCustomAdvanced", category="sampling/custom_sampling", v3=True)
class SamplerCustomAdvanced:
    noise: Noise
    guider: Guider
    sampler: SamplerRef
    sigmas: Sigmas
    latent_image: Latent

    def run(self, ctx: loom.RunContext) -> SampledLatents:
        return _custom_sample(
            ctx, self.guider, self.noise, self.sampler, self.sigmas, self.latent_image
        )


NODES = [
    KSampler,
    KSamplerAdvanced,
    SamplerCustom,
    SamplerCustomAdvanced,
    KSamplerSelect,
    BasicScheduler,
    KarrasScheduler,
    ExponentialScheduler,
    PolyexponentialScheduler,
    SDTurboScheduler,
    BetaSamplingScheduler,
    SplitSigmas,
    SplitSigmasDenoise,
    FlipSigmas,
    CFGGuider,
    BasicGuider,
    DualCFGGuider,
    RandomNoise,
    DisableNoise,
    SamplerEulerAncestral,
    SamplerDPMPP_2M_SDE,
    SamplerDPMPP_SDE,
    SamplerLMS,
    SamplerSASolver,
    SamplerSEEDS2,
    SamplerDPMPP_3M_SDE,
    SamplerDPMPP_2S_Ancestral,
    SamplerEulerAncestralCFGPP,
    SamplerDPMAdaptative,
    SamplerER_SDE,
    LaplaceScheduler,
    VPScheduler,
    *SIGMA_NODES,
    *NOISE_LEVEL_NODES,
    *ADVANCED_SAMPLER_NODES,
]
