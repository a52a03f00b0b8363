"""The sampling nodes, with ComfyUI 0.8's ids, input names, types and defaults.

KSampler, KSamplerAdvanced (``nodes.py``) and the custom-sampling family
(``comfy_extras/nodes_custom_sampler.py``): schedulers, sigma tools, sampler selectors,
guiders, noise sources and SamplerCustom / SamplerCustomAdvanced.
"""

from __future__ import annotations

from typing import Any

import loom
from loom import RunContext
from loom.samplers import find_sampler, find_scheduler
from loom.types import Conditioning, Guider, Latent, Model, Noise, SamplerRef, Sigmas
from loom_samplers import ksampler
from loom_samplers.guiders import DualCFGGuider as _DualCFG
from loom_samplers.guiders import Guider as _Guider
from loom_samplers.model_interface import fix_empty_latent_channels, process_latent_out
from loom_samplers.noise import EmptyNoiseGen, RandomNoiseGen, prepare_noise

ui = loom.ui

SEED_MAX = 0xFFFFFFFFFFFFFFFF


def _sampler_names(registry: Any) -> list[str]:
    names = registry.sampler_names() if registry is not None else []
    if names:
        return names
    from loom_samplers.samplers import SAMPLERS

    return list(SAMPLERS)


def _scheduler_names(registry: Any) -> list[str]:
    names = registry.scheduler_names() if registry is not None else []
    if names:
        return names
    from loom_samplers.schedulers import SCHEDULERS

    return list(SCHEDULERS)


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
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> dict:
    """ComfyUI's ``common_ksampler``: noise, sigmas, CFG guider, one sampling run."""
    import torch

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
        _sampler_names,
        tooltip="The algorithm used when sampling, this can affect the quality, speed, and style of the generated output.",
    )
    scheduler: str = ui.combo(
        _scheduler_names,
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
            denoise=self.denoise,
        )


@loom.node("KSamplerAdvanced", category="sampling", display_name="KSampler (Advanced)")
class KSamplerAdvanced:
    model: Model
    add_noise: str = ui.combo(["enable", "disable"])
    noise_seed: int = ui.int(0, min=0, max=SEED_MAX, control_after_generate=True)
    steps: int = ui.int(20, min=1, max=10000)
    cfg: float = ui.float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name: str = ui.combo(_sampler_names)
    scheduler: str = ui.combo(_scheduler_names)
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
            denoise=1.0,
            disable_noise=self.add_noise == "disable",
            start_step=self.start_at_step,
            last_step=self.end_at_step,
            force_full_denoise=self.return_with_leftover_noise != "enable",
        )


# --- schedulers and sigma tools -----------------------------------------------------------


def _float(default: float, max: float, *, min: float = 0.0, step: float = 0.01) -> Any:
    return ui.float(default, min=min, max=max, step=step, round=False)


@loom.node("BasicScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class BasicScheduler:
    model: Model
    scheduler: str = ui.combo(_scheduler_names)
    steps: int = ui.int(20, min=1, max=10000)
    denoise: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        import torch

        total = self.steps
        if self.denoise < 1.0:
            if self.denoise <= 0.0:
                return torch.FloatTensor([])
            total = int(self.steps / self.denoise)
        schedule = find_scheduler(ksampler.registry_of(ctx), self.scheduler)
        sigmas = ksampler.calculate_sigmas(self.model.model_sampling, schedule, total).cpu()
        return sigmas[-(self.steps + 1) :]


@loom.node("KarrasScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class KarrasScheduler:
    steps: int = ui.int(20, min=1, max=10000)
    sigma_max: float = _float(14.614642, 5000.0)
    sigma_min: float = _float(0.0291675, 5000.0)
    rho: float = _float(7.0, 100.0)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import karras_sigmas

        return karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)


@loom.node("ExponentialScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class ExponentialScheduler:
    steps: int = ui.int(20, min=1, max=10000)
    sigma_max: float = _float(14.614642, 5000.0)
    sigma_min: float = _float(0.0291675, 5000.0)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import exponential_sigmas

        return exponential_sigmas(self.steps, self.sigma_min, self.sigma_max)


@loom.node("PolyexponentialScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class PolyexponentialScheduler:
    steps: int = ui.int(20, min=1, max=10000)
    sigma_max: float = _float(14.614642, 5000.0)
    sigma_min: float = _float(0.0291675, 5000.0)
    rho: float = _float(1.0, 100.0)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import polyexponential_sigmas

        return polyexponential_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)


@loom.node("SDTurboScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class SDTurboScheduler:
    model: Model
    steps: int = ui.int(1, min=1, max=10)
    denoise: float = ui.float(1.0, min=0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import sd_turbo

        return sd_turbo(self.model.model_sampling, self.steps, self.denoise)


@loom.node("BetaSamplingScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class BetaSamplingScheduler:
    model: Model
    steps: int = ui.int(20, min=1, max=10000)
    alpha: float = _float(0.6, 50.0)
    beta: float = _float(0.6, 50.0)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import beta

        return beta(self.model.model_sampling, self.steps, alpha=self.alpha, beta=self.beta)


@loom.outputs
class SigmasPair:
    high_sigmas: Sigmas = loom.output()
    low_sigmas: Sigmas = loom.output()


@loom.node("SplitSigmas", category="sampling/custom_sampling/sigmas", v3=True)
class SplitSigmas:
    sigmas: Sigmas
    step: int = ui.int(0, min=0, max=10000)

    def run(self, ctx: loom.RunContext) -> SigmasPair:
        return SigmasPair(
            high_sigmas=self.sigmas[: self.step + 1], low_sigmas=self.sigmas[self.step :]
        )


@loom.node("SplitSigmasDenoise", category="sampling/custom_sampling/sigmas", v3=True)
class SplitSigmasDenoise:
    sigmas: Sigmas
    denoise: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> SigmasPair:
        steps = max(self.sigmas.shape[-1] - 1, 0)
        total = round(steps * self.denoise)
        return SigmasPair(high_sigmas=self.sigmas[:-total], low_sigmas=self.sigmas[-(total + 1) :])


@loom.node("FlipSigmas", category="sampling/custom_sampling/sigmas", v3=True)
class FlipSigmas:
    sigmas: Sigmas

    def run(self, ctx: loom.RunContext) -> Sigmas:
        if len(self.sigmas) == 0:
            return self.sigmas
        sigmas = self.sigmas.flip(0)
        if sigmas[0] == 0:
            sigmas[0] = 0.0001
        return sigmas


# --- samplers -----------------------------------------------------------------------------


def _choice(ctx: RunContext, name: str, **options: Any) -> ksampler.SamplerChoice:
    return ksampler.SamplerChoice(find_sampler(ksampler.registry_of(ctx), name), options)


@loom.node("KSamplerSelect", category="sampling/custom_sampling/samplers", v3=True)
class KSamplerSelect:
    sampler_name: str = ui.combo(_sampler_names)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        return _choice(ctx, self.sampler_name)


@loom.node("SamplerEulerAncestral", category="sampling/custom_sampling/samplers", v3=True)
class SamplerEulerAncestral:
    eta: float = _float(1.0, 100.0)
    s_noise: float = _float(1.0, 100.0)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        return _choice(ctx, "euler_ancestral", eta=self.eta, s_noise=self.s_noise)


@loom.node("SamplerLMS", category="sampling/custom_sampling/samplers", v3=True)
class SamplerLMS:
    order: int = ui.int(4, min=1, max=100)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        return _choice(ctx, "lms", order=self.order)


@loom.node("SamplerDPMPP_2M_SDE", category="sampling/custom_sampling/samplers", v3=True)
class SamplerDPMPP_2M_SDE:
    solver_type: str = ui.combo(["midpoint", "heun"])
    eta: float = _float(1.0, 100.0)
    s_noise: float = _float(1.0, 100.0)
    noise_device: str = ui.combo(["gpu", "cpu"])

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        name = "dpmpp_2m_sde" if self.noise_device == "cpu" else "dpmpp_2m_sde_gpu"
        return _choice(ctx, name, eta=self.eta, s_noise=self.s_noise, solver_type=self.solver_type)


@loom.node("SamplerDPMPP_SDE", category="sampling/custom_sampling/samplers", v3=True)
class SamplerDPMPP_SDE:
    eta: float = _float(1.0, 100.0)
    s_noise: float = _float(1.0, 100.0)
    r: float = _float(0.5, 100.0)
    noise_device: str = ui.combo(["gpu", "cpu"])

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        name = "dpmpp_sde" if self.noise_device == "cpu" else "dpmpp_sde_gpu"
        return _choice(ctx, name, eta=self.eta, s_noise=self.s_noise, r=self.r)


@loom.node("SamplerSASolver", category="sampling/custom_sampling/samplers", v3=True)
class SamplerSASolver:
    """SA-Solver with its stochastic interval given as fractions of the model's schedule."""

    model: Model
    eta: float = _float(1.0, 10.0)
    sde_start_percent: float = ui.float(0.2, min=0.0, max=1.0, step=0.001)
    sde_end_percent: float = ui.float(0.8, min=0.0, max=1.0, step=0.001)
    s_noise: float = _float(1.0, 100.0)
    predictor_order: int = ui.int(3, min=1, max=6)
    corrector_order: int = ui.int(4, min=0, max=6)
    use_pece: bool = ui.boolean(False)
    simple_order_2: bool = ui.boolean(False)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        model_sampling = self.model.model_sampling
        return _choice(
            ctx,
            "sa_solver",
            eta=self.eta,
            sde_start_sigma=model_sampling.percent_to_sigma(self.sde_start_percent),
            sde_end_sigma=model_sampling.percent_to_sigma(self.sde_end_percent),
            s_noise=self.s_noise,
            predictor_order=self.predictor_order,
            corrector_order=self.corrector_order,
            use_pece=self.use_pece,
            simple_order_2=self.simple_order_2,
        )


@loom.node("SamplerSEEDS2", category="sampling/custom_sampling/samplers", v3=True)
class SamplerSEEDS2:
    """SEEDS-2; ``phi_2`` with r = 1 is exp_heun_2_x0 (eta 0) or exp_heun_2_x0_sde (eta 1)."""

    solver_type: str = ui.combo(["phi_1", "phi_2"])
    eta: float = ui.float(
        1.0, min=0.0, max=100.0, step=0.01, round=False, tooltip="Stochastic strength"
    )
    s_noise: float = ui.float(
        1.0, min=0.0, max=100.0, step=0.01, round=False, tooltip="SDE noise multiplier"
    )
    r: float = ui.float(
        0.5,
        min=0.01,
        max=1.0,
        step=0.01,
        round=False,
        tooltip="Relative step size for the intermediate stage (c2 node)",
    )

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        return _choice(
            ctx,
            "seeds_2",
            eta=self.eta,
            s_noise=self.s_noise,
            r=self.r,
            solver_type=self.solver_type,
        )


# --- guiders and noise ----------------------------------------------------------------------


@loom.node("CFGGuider", category="sampling/custom_sampling/guiders", v3=True)
class CFGGuider:
    model: Model
    positive: Conditioning
    negative: Conditioning
    cfg: float = ui.float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)

    def run(self, ctx: loom.RunContext) -> Guider:
        return _Guider(self.model, {"positive": self.positive, "negative": self.negative}, self.cfg)


@loom.node("BasicGuider", category="sampling/custom_sampling/guiders", v3=True)
class BasicGuider:
    model: Model
    conditioning: Conditioning

    def run(self, ctx: loom.RunContext) -> Guider:
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
        guider = _Guider(
            self.model, {"positive": self.positive, "negative": self.negative}, self.cfg
        )
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
]
