"""Schedulers and sigma tools of ComfyUI's custom sampling (``comfy_extras/nodes_custom_sampler.py``):
BasicScheduler and the other SIGMAS sources, SplitSigmas, SplitSigmasDenoise, FlipSigmas."""

from __future__ import annotations

import loom
from loom.input_checks import check_positive
from loom.samplers import find_scheduler
from loom.types import Model, Sigmas
from loom_samplers import ksampler
from loom_samplers.node_inputs import scheduler_names, unrounded_float

ui = loom.ui


@loom.node("BasicScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class BasicScheduler:
    model: Model
    scheduler: str = ui.combo(scheduler_names)
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
    sigma_max: float = unrounded_float(14.614642, 5000.0)
    sigma_min: float = unrounded_float(0.0291675, 5000.0)
    rho: float = unrounded_float(7.0, 100.0)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import karras_sigmas

        check_positive("KarrasScheduler", {"rho": self.rho}, "the schedule takes the 1/rho power")
        return karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)


@loom.node("ExponentialScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class ExponentialScheduler:
    steps: int = ui.int(20, min=1, max=10000)
    sigma_max: float = unrounded_float(14.614642, 5000.0)
    sigma_min: float = unrounded_float(0.0291675, 5000.0)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import exponential_sigmas

        check_positive(
            "ExponentialScheduler",
            {"sigma_max": self.sigma_max, "sigma_min": self.sigma_min},
            "the schedule is spaced by log(sigma)",
        )
        return exponential_sigmas(self.steps, self.sigma_min, self.sigma_max)


@loom.node("PolyexponentialScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class PolyexponentialScheduler:
    steps: int = ui.int(20, min=1, max=10000)
    sigma_max: float = unrounded_float(14.614642, 5000.0)
    sigma_min: float = unrounded_float(0.0291675, 5000.0)
    rho: float = unrounded_float(1.0, 100.0)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import polyexponential_sigmas

        check_positive(
            "PolyexponentialScheduler",
            {"sigma_max": self.sigma_max, "sigma_min": self.sigma_min},
            "the schedule is spaced by log(sigma)",
        )
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
    alpha: float = unrounded_float(0.6, 50.0)
    beta: float = unrounded_float(0.6, 50.0)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import beta

        check_positive(
            "BetaSamplingScheduler",
            {"alpha": self.alpha, "beta": self.beta},
            "the beta distribution needs both",
        )
        return beta(self.model.model_sampling, self.steps, alpha=self.alpha, beta=self.beta)


@loom.node("LaplaceScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class LaplaceScheduler:
    steps: int = ui.int(20, min=1, max=10000)
    sigma_max: float = unrounded_float(14.614642, 5000.0)
    sigma_min: float = unrounded_float(0.0291675, 5000.0)
    mu: float = unrounded_float(0.0, 10.0, min=-10.0, step=0.1)
    beta: float = unrounded_float(0.5, 10.0, step=0.1)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import laplace_sigmas

        return laplace_sigmas(self.steps, self.sigma_min, self.sigma_max, self.mu, self.beta)


@loom.node("VPScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class VPScheduler:
    steps: int = ui.int(20, min=1, max=10000)
    beta_d: float = unrounded_float(19.9, 5000.0)
    beta_min: float = unrounded_float(0.1, 5000.0)
    eps_s: float = unrounded_float(0.001, 1.0, step=0.0001)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.schedulers import vp_sigmas

        return vp_sigmas(self.steps, self.beta_d, self.beta_min, self.eps_s)


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
