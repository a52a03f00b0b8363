"""Sampler selectors of ComfyUI's custom sampling (``comfy_extras/nodes_custom_sampler.py``):
KSamplerSelect and the Sampler* nodes that fix a sampler's options."""

from __future__ import annotations

from typing import Any

import attrs

import loom
from loom import RunContext
from loom.samplers import find_sampler
from loom.types import Model, SamplerRef
from loom_samplers import ksampler
from loom_samplers.node_inputs import sampler_names, unrounded_float

ui = loom.ui


def _choice(ctx: RunContext, name: str, **options: Any) -> ksampler.SamplerChoice:
    return ksampler.SamplerChoice(find_sampler(ksampler.registry_of(ctx), name), options)


@loom.node("KSamplerSelect", category="sampling/custom_sampling/samplers", v3=True)
class KSamplerSelect:
    sampler_name: str = ui.combo(sampler_names)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        return _choice(ctx, self.sampler_name)


@loom.node("SamplerEulerAncestral", category="sampling/custom_sampling/samplers", v3=True)
class SamplerEulerAncestral:
    eta: float = unrounded_float(1.0, 100.0)
    s_noise: float = unrounded_float(1.0, 100.0)

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
    eta: float = unrounded_float(1.0, 100.0)
    s_noise: float = unrounded_float(1.0, 100.0)
    noise_device: str = ui.combo(["gpu", "cpu"])

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        name = "dpmpp_2m_sde" if self.noise_device == "cpu" else "dpmpp_2m_sde_gpu"
        return _choice(ctx, name, eta=self.eta, s_noise=self.s_noise, solver_type=self.solver_type)


@loom.node("SamplerDPMPP_SDE", category="sampling/custom_sampling/samplers", v3=True)
class SamplerDPMPP_SDE:
    eta: float = unrounded_float(1.0, 100.0)
    s_noise: float = unrounded_float(1.0, 100.0)
    r: float = unrounded_float(0.5, 100.0)
    noise_device: str = ui.combo(["gpu", "cpu"])

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        name = "dpmpp_sde" if self.noise_device == "cpu" else "dpmpp_sde_gpu"
        return _choice(ctx, name, eta=self.eta, s_noise=self.s_noise, r=self.r)


@loom.node("SamplerSASolver", category="sampling/custom_sampling/samplers", v3=True)
class SamplerSASolver:
    """SA-Solver with its stochastic interval given as fractions of the model's schedule."""

    model: Model
    eta: float = unrounded_float(1.0, 10.0)
    sde_start_percent: float = ui.float(0.2, min=0.0, max=1.0, step=0.001)
    sde_end_percent: float = ui.float(0.8, min=0.0, max=1.0, step=0.001)
    s_noise: float = unrounded_float(1.0, 100.0)
    predictor_order: int = ui.int(3, min=1, max=6)
    corrector_order: int = ui.int(4, min=0, max=6)
    use_pece: bool = ui.boolean(None)
    simple_order_2: bool = ui.boolean(None)

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


@loom.node("SamplerDPMPP_3M_SDE", category="sampling/custom_sampling/samplers", v3=True)
class SamplerDPMPP_3M_SDE:
    eta: float = unrounded_float(1.0, 100.0)
    s_noise: float = unrounded_float(1.0, 100.0)
    noise_device: str = ui.combo(["gpu", "cpu"])

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        name = "dpmpp_3m_sde" if self.noise_device == "cpu" else "dpmpp_3m_sde_gpu"
        return _choice(ctx, name, eta=self.eta, s_noise=self.s_noise)


@loom.node("SamplerDPMPP_2S_Ancestral", category="sampling/custom_sampling/samplers", v3=True)
class SamplerDPMPP_2S_Ancestral:
    eta: float = unrounded_float(1.0, 100.0)
    s_noise: float = unrounded_float(1.0, 100.0)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        return _choice(ctx, "dpmpp_2s_ancestral", eta=self.eta, s_noise=self.s_noise)


@loom.node(
    "SamplerEulerAncestralCFGPP",
    category="sampling/custom_sampling/samplers",
    display_name="SamplerEulerAncestralCFG++",
    v3=True,
)
class SamplerEulerAncestralCFGPP:
    eta: float = unrounded_float(1.0, 1.0)
    s_noise: float = unrounded_float(1.0, 10.0)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        return _choice(ctx, "euler_ancestral_cfg_pp", eta=self.eta, s_noise=self.s_noise)


@loom.node("SamplerDPMAdaptative", category="sampling/custom_sampling/samplers", v3=True)
class SamplerDPMAdaptative:
    """DPM-Solver adaptive with its PID step-size controller's settings."""

    order: int = ui.int(3, min=2, max=3)
    rtol: float = unrounded_float(0.05, 100.0)
    atol: float = unrounded_float(0.0078, 100.0)
    h_init: float = unrounded_float(0.05, 100.0)
    pcoeff: float = unrounded_float(0.0, 100.0)
    icoeff: float = unrounded_float(1.0, 100.0)
    dcoeff: float = unrounded_float(0.0, 100.0)
    accept_safety: float = unrounded_float(0.81, 100.0)
    eta: float = unrounded_float(0.0, 100.0)
    s_noise: float = unrounded_float(1.0, 100.0)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        return _choice(
            ctx,
            "dpm_adaptive",
            order=self.order,
            rtol=self.rtol,
            atol=self.atol,
            h_init=self.h_init,
            pcoeff=self.pcoeff,
            icoeff=self.icoeff,
            dcoeff=self.dcoeff,
            accept_safety=self.accept_safety,
            eta=self.eta,
            s_noise=self.s_noise,
        )


@attrs.frozen
class ReverseTimeSDENoiseScaler:
    """ER-SDE's noise scaler for the reverse-time SDE: ``λ ↦ λ^(η+1)``."""

    eta: float

    def __call__(self, x: Any) -> Any:
        return x ** (self.eta + 1)


@loom.node("SamplerER_SDE", category="sampling/custom_sampling/samplers", v3=True)
class SamplerER_SDE:
    """ER-SDE as its own solver, the reverse-time SDE (strength ``eta``) or the ODE."""

    solver_type: str = ui.combo(["ER-SDE", "Reverse-time SDE", "ODE"])
    max_stage: int = ui.int(3, min=1, max=3)
    eta: float = ui.float(
        1.0,
        min=0.0,
        max=100.0,
        step=0.01,
        round=False,
        tooltip="Stochastic strength of reverse-time SDE.\n"
        "When eta=0, it reduces to deterministic ODE. This setting doesn't apply to ER-SDE "
        "solver type.",
    )
    s_noise: float = unrounded_float(1.0, 100.0)

    def run(self, ctx: loom.RunContext) -> SamplerRef:
        eta, s_noise = self.eta, self.s_noise
        if self.solver_type == "ODE" or (self.solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0, 0
        # ER-SDE proper uses er_sde's own default scaler.
        scaler = None if self.solver_type == "ER-SDE" else ReverseTimeSDENoiseScaler(eta)
        return _choice(
            ctx, "er_sde", s_noise=s_noise, noise_scaler=scaler, max_stage=self.max_stage
        )
