"""The sampler selectors, schedulers and sigma tools added for ComfyUI 0.8 coverage: their
/object_info entries (written by hand from ComfyUI 0.8's node schemas) and their outputs
(hand-computed sigmas; a selector's sampler and options equal the direct call)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from loom_samplers.noise import EmptyNoiseGen, RandomNoiseGen, prepare_noise
from loom_samplers.sampler_nodes import ReverseTimeSDENoiseScaler

from loom.executor.context import InterruptFlag, RunContext
from loom.model_sampling import DiscreteEps
from loom.nodes.object_info import to_json
from loom.types import LatentFormat


class _Runtime:
    def __init__(self, registry):
        self.registry = registry


def _ctx(registry):
    return RunContext(
        node_id="1",
        prompt_id="p",
        prompt={},
        extra_data={},
        runtime=_Runtime(registry),
        interrupt=InterruptFlag(),
    )


def _run(registry, class_type, **inputs):
    node = registry.get_node(class_type)
    return node.impl.execute(node.impl.create(), inputs, _ctx(registry)).values


def _unrounded(default, max, min=0.0, step=0.01):
    return ["FLOAT", {"default": default, "min": min, "max": max, "step": step, "round": False}]


_SIGMA_RANGE = {
    "sigma_max": _unrounded(14.614642, 5000.0),
    "sigma_min": _unrounded(0.0291675, 5000.0),
}
_STEPS = {"steps": ["INT", {"default": 20, "min": 1, "max": 10000}]}
_ETA_NOISE = {"eta": _unrounded(1.0, 100.0), "s_noise": _unrounded(1.0, 100.0)}
_DEVICE = {"noise_device": ["COMBO", {"multiselect": False, "options": ["gpu", "cpu"]}]}
_ER_SDE_TOOLTIP = (
    "Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to deterministic ODE. "
    "This setting doesn't apply to ER-SDE solver type."
)
_ACTUAL_SIGMA_TOOLTIP = (
    "Return the actual sigma value instead of the value used for interval checks.\n"
    "This only affects results at 0.0 and 1.0."
)

SAMPLERS = "sampling/custom_sampling/samplers"
SCHEDULERS = "sampling/custom_sampling/schedulers"
SIGMAS = "sampling/custom_sampling/sigmas"

# class_type: (required inputs, outputs, output names, category, display_name, experimental)
EXPECTED = {
    "SamplerDPMPP_3M_SDE": ({**_ETA_NOISE, **_DEVICE}, ["SAMPLER"], ["SAMPLER"], SAMPLERS),
    "SamplerDPMPP_2S_Ancestral": (_ETA_NOISE, ["SAMPLER"], ["SAMPLER"], SAMPLERS),
    "SamplerEulerAncestralCFGPP": (
        {"eta": _unrounded(1.0, 1.0), "s_noise": _unrounded(1.0, 10.0)},
        ["SAMPLER"],
        ["SAMPLER"],
        SAMPLERS,
        "SamplerEulerAncestralCFG++",
    ),
    "SamplerDPMAdaptative": (
        {
            "order": ["INT", {"default": 3, "min": 2, "max": 3}],
            "rtol": _unrounded(0.05, 100.0),
            "atol": _unrounded(0.0078, 100.0),
            "h_init": _unrounded(0.05, 100.0),
            "pcoeff": _unrounded(0.0, 100.0),
            "icoeff": _unrounded(1.0, 100.0),
            "dcoeff": _unrounded(0.0, 100.0),
            "accept_safety": _unrounded(0.81, 100.0),
            "eta": _unrounded(0.0, 100.0),
            "s_noise": _unrounded(1.0, 100.0),
        },
        ["SAMPLER"],
        ["SAMPLER"],
        SAMPLERS,
    ),
    "SamplerER_SDE": (
        {
            "solver_type": [
                "COMBO",
                {"multiselect": False, "options": ["ER-SDE", "Reverse-time SDE", "ODE"]},
            ],
            "max_stage": ["INT", {"default": 3, "min": 1, "max": 3}],
            "eta": ["FLOAT", {**_unrounded(1.0, 100.0)[1], "tooltip": _ER_SDE_TOOLTIP}],
            "s_noise": _unrounded(1.0, 100.0),
        },
        ["SAMPLER"],
        ["SAMPLER"],
        SAMPLERS,
    ),
    "LaplaceScheduler": (
        {
            **_STEPS,
            **_SIGMA_RANGE,
            "mu": _unrounded(0.0, 10.0, min=-10.0, step=0.1),
            "beta": _unrounded(0.5, 10.0, step=0.1),
        },
        ["SIGMAS"],
        ["SIGMAS"],
        SCHEDULERS,
    ),
    "VPScheduler": (
        {
            **_STEPS,
            "beta_d": _unrounded(19.9, 5000.0),
            "beta_min": _unrounded(0.1, 5000.0),
            "eps_s": _unrounded(0.001, 1.0, step=0.0001),
        },
        ["SIGMAS"],
        ["SIGMAS"],
        SCHEDULERS,
    ),
    "ExtendIntermediateSigmas": (
        {
            "sigmas": ["SIGMAS", {}],
            "steps": ["INT", {"default": 2, "min": 1, "max": 100}],
            "start_at_sigma": _unrounded(-1.0, 20000.0, min=-1.0),
            "end_at_sigma": _unrounded(12.0, 20000.0),
            "spacing": ["COMBO", {"multiselect": False, "options": ["linear", "cosine", "sine"]}],
        },
        ["SIGMAS"],
        ["SIGMAS"],
        SIGMAS,
    ),
    "SamplingPercentToSigma": (
        {
            "model": ["MODEL", {}],
            "sampling_percent": ["FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.0001}],
            "return_actual_sigma": [
                "BOOLEAN",
                {"default": False, "tooltip": _ACTUAL_SIGMA_TOOLTIP},
            ],
        },
        ["FLOAT"],
        ["sigma_value"],
        SIGMAS,
    ),
    "ManualSigmas": (
        {"sigmas": ["STRING", {"default": "1, 0.5", "multiline": False}]},
        ["SIGMAS"],
        ["SIGMAS"],
        "_for_testing/custom_sampling",
        None,
        True,
    ),
    "AddNoise": (
        {
            "model": ["MODEL", {}],
            "noise": ["NOISE", {}],
            "sigmas": ["SIGMAS", {}],
            "latent_image": ["LATENT", {}],
        },
        ["LATENT"],
        ["LATENT"],
        "_for_testing/custom_sampling/noise",
        None,
        True,
    ),
}


@pytest.mark.parametrize("class_type", sorted(EXPECTED))
def test_samplers_more_nodes_object_info(samplers_registry, class_type):
    required, outputs, names, category, *rest = EXPECTED[class_type]
    display_name = rest[0] if rest else None
    experimental = rest[1] if len(rest) > 1 else False
    entry = to_json(samplers_registry.get_node(class_type), samplers_registry)
    assert entry["input"] == {"required": required}
    assert entry["input_order"] == {"required": list(required)}
    assert entry["output"] == outputs and entry["output_name"] == names
    assert entry["output_is_list"] == [False] * len(outputs)
    assert entry["category"] == category and entry["name"] == class_type
    assert entry["display_name"] == display_name
    assert entry["experimental"] is experimental
    assert entry["python_module"] == "comfy_extras.nodes_custom_sampler"


def _chosen(registry, class_type, **inputs):
    (choice,) = _run(registry, class_type, **inputs)
    return choice.name, dict(choice.options)


def test_samplers_selectors_fix_the_sampler_and_its_options(samplers_registry):
    r = samplers_registry
    assert _chosen(r, "SamplerDPMPP_3M_SDE", eta=0.5, s_noise=0.9, noise_device="cpu") == (
        "dpmpp_3m_sde",
        {"eta": 0.5, "s_noise": 0.9},
    )
    assert _chosen(r, "SamplerDPMPP_3M_SDE", eta=1.0, s_noise=1.0, noise_device="gpu")[0] == (
        "dpmpp_3m_sde_gpu"
    )
    assert _chosen(r, "SamplerDPMPP_2S_Ancestral", eta=0.3, s_noise=1.2) == (
        "dpmpp_2s_ancestral",
        {"eta": 0.3, "s_noise": 1.2},
    )
    assert _chosen(r, "SamplerEulerAncestralCFGPP", eta=0.7, s_noise=2.0) == (
        "euler_ancestral_cfg_pp",
        {"eta": 0.7, "s_noise": 2.0},
    )
    pid = dict(order=2, rtol=0.1, atol=0.01, h_init=0.2, pcoeff=0.1, icoeff=0.9, dcoeff=0.05)
    options = {**pid, "accept_safety": 0.8, "eta": 0.0, "s_noise": 1.0}
    assert _chosen(r, "SamplerDPMAdaptative", **options) == ("dpm_adaptive", options)


def test_samplers_er_sde_selector_solver_types(samplers_registry):
    r = samplers_registry
    base = {"max_stage": 2, "eta": 0.5, "s_noise": 0.8}
    assert _chosen(r, "SamplerER_SDE", solver_type="ER-SDE", **base) == (
        "er_sde",
        {"s_noise": 0.8, "noise_scaler": None, "max_stage": 2},
    )
    _, options = _chosen(r, "SamplerER_SDE", solver_type="Reverse-time SDE", **base)
    assert options == {
        "s_noise": 0.8,
        "noise_scaler": ReverseTimeSDENoiseScaler(0.5),
        "max_stage": 2,
    }
    assert torch.allclose(options["noise_scaler"](torch.tensor([4.0])), torch.tensor([8.0]))
    for solver_type, eta in (("ODE", 0.5), ("Reverse-time SDE", 0.0)):
        _, options = _chosen(r, "SamplerER_SDE", solver_type=solver_type, **{**base, "eta": eta})
        assert options["s_noise"] == 0 and options["noise_scaler"] == ReverseTimeSDENoiseScaler(0)


def test_samplers_er_sde_selector_runs_the_direct_call(samplers_registry, gaussian):
    """The chosen sampler with its options samples exactly as calling er_sde directly does."""
    from loom_samplers.noise import SeededNoise
    from loom_samplers.samplers.multistep import er_sde

    (choice,) = _run(
        samplers_registry,
        "SamplerER_SDE",
        solver_type="Reverse-time SDE",
        max_stage=3,
        eta=0.5,
        s_noise=1.0,
    )
    ms = DiscreteEps()
    sigmas = torch.tensor([14.6, 6.0, 2.0, 0.5, 0.0])
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 14.6
    mu = torch.full((1, 4, 4, 4), 0.3)
    ran = choice.registered.function(
        gaussian(mu, 0.5, ms), x, sigmas, noise=SeededNoise(3), **choice.options
    )
    direct = er_sde(
        gaussian(mu, 0.5, ms),
        x,
        sigmas,
        noise=SeededNoise(3),
        s_noise=1.0,
        noise_scaler=lambda v: v**1.5,
        max_stage=3,
    )
    assert torch.allclose(ran, direct, atol=1e-6)


def test_samplers_vp_and_laplace_schedulers(samplers_registry):
    (vp,) = _run(samplers_registry, "VPScheduler", steps=3, beta_d=19.9, beta_min=0.1, eps_s=0.001)
    expected = [math.sqrt(math.expm1(19.9 * t * t / 2 + 0.1 * t)) for t in (1.0, 0.5005, 0.001)] + [
        0.0
    ]
    assert torch.allclose(vp, torch.tensor(expected), rtol=1e-5)
    (laplace,) = _run(
        samplers_registry,
        "LaplaceScheduler",
        steps=5,
        sigma_max=14.614642,
        sigma_min=0.0291675,
        mu=0.0,
        beta=0.5,
    )
    # x = 0, .25, .5, .75, 1: λ = -β·sign(.5-x)·log(1 - 2|.5-x| + 1e-5), σ = clamp(e^λ); no 0.
    lam = [-0.5 * math.log(1e-5), -0.5 * math.log(0.5 + 1e-5), 0.0, 0.5 * math.log(0.5 + 1e-5)]
    lam.append(0.5 * math.log(1e-5))
    expected = [min(max(math.exp(v), 0.0291675), 14.614642) for v in lam]
    assert expected[0] == 14.614642 and expected[-1] == 0.0291675  # both ends clamp
    assert torch.allclose(laplace, torch.tensor(expected), rtol=1e-5)


def test_samplers_extend_intermediate_sigmas(samplers_registry):
    sigmas = torch.tensor([20.0, 10.0, 4.0, 0.0])
    (linear,) = _run(
        samplers_registry,
        "ExtendIntermediateSigmas",
        sigmas=sigmas,
        steps=2,
        start_at_sigma=-1.0,
        end_at_sigma=12.0,
        spacing="linear",
    )
    assert linear.tolist() == [20.0, 15.0, 10.0, 4.0, 0.0]  # only σ=20 lies in [12, ∞)
    (cosine,) = _run(
        samplers_registry,
        "ExtendIntermediateSigmas",
        sigmas=sigmas,
        steps=3,
        start_at_sigma=15.0,
        end_at_sigma=3.0,
        spacing="cosine",
    )
    a, b = math.sin(math.pi / 6), math.sin(math.pi / 3)  # x = 1/3, 2/3
    expected = [20.0, 10.0, 10 - 6 * a, 10 - 6 * b, 4.0, 4 - 4 * a, 4 - 4 * b, 0.0]
    assert torch.allclose(cosine, torch.tensor(expected))
    (sine,) = _run(
        samplers_registry,
        "ExtendIntermediateSigmas",
        sigmas=torch.tensor([2.0, 0.0]),
        steps=2,
        start_at_sigma=-1.0,
        end_at_sigma=0.0,
        spacing="sine",
    )
    assert torch.allclose(sine, torch.tensor([2.0, 2 - 2 * (1 - math.cos(math.pi / 4)), 0.0]))


class _Model:
    model_sampling = DiscreteEps()
    latent_format = LatentFormat(scale_factor=0.5)


def test_samplers_sampling_percent_to_sigma(samplers_registry):
    ms = _Model.model_sampling
    for percent, actual, expected in (
        (0.5, False, ms.percent_to_sigma(0.5)),
        (0.0, False, 999999999.9),
        (0.0, True, float(ms.sigma_max)),
        (1.0, False, 0.0),
        (1.0, True, float(ms.sigma_min)),
    ):
        (sigma,) = _run(
            samplers_registry,
            "SamplingPercentToSigma",
            model=_Model(),
            sampling_percent=percent,
            return_actual_sigma=actual,
        )
        assert sigma == pytest.approx(expected)
    assert ms.percent_to_sigma(0.5) == pytest.approx(float(ms.sigma(torch.tensor(499.5))))


def test_samplers_manual_sigmas(samplers_registry):
    (sigmas,) = _run(samplers_registry, "ManualSigmas", sigmas="14.6, 7,3.5 ; .5 -0 +2")
    assert sigmas.dtype == torch.float32
    assert torch.allclose(sigmas, torch.tensor([14.6, 7.0, 3.5, 0.5, 0.0, 2.0]))
    (empty,) = _run(samplers_registry, "ManualSigmas", sigmas="none")
    assert empty.shape == (0,)


def test_samplers_add_noise(samplers_registry):
    latent = {"samples": torch.full((1, 4, 4, 4), 2.0), "batch_index": [0]}
    sigmas = torch.tensor([10.0, 4.0, 1.0])
    (out,) = _run(
        samplers_registry,
        "AddNoise",
        model=_Model(),
        noise=RandomNoiseGen(7),
        sigmas=sigmas,
        latent_image=latent,
    )
    noise = prepare_noise(latent["samples"], 7, [0])
    # into model space (×0.5), plus noise × |10 - 1|, back out (÷0.5)
    assert torch.allclose(out["samples"], (2.0 * 0.5 + noise * 9.0) / 0.5)
    assert out["batch_index"] == [0] and latent["samples"].eq(2.0).all()
    empty = {"samples": torch.zeros(1, 4, 4, 4)}
    (out,) = _run(
        samplers_registry,
        "AddNoise",
        model=_Model(),
        noise=RandomNoiseGen(7),
        sigmas=torch.tensor([3.0]),
        latent_image=empty,
    )
    assert torch.allclose(out["samples"], prepare_noise(empty["samples"], 7, None) * 3.0 / 0.5)
    (same,) = _run(
        samplers_registry,
        "AddNoise",
        model=_Model(),
        noise=EmptyNoiseGen(),
        sigmas=torch.tensor([]),
        latent_image=latent,
    )
    assert same is latent


_MODEL_TYPE_STEPS_DENOISE = {
    "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}],
}


@pytest.mark.parametrize(
    ("class_type", "model_types", "steps", "module"),
    [
        (
            "AlignYourStepsScheduler",
            ["SD1", "SDXL", "SVD"],
            {"default": 10, "min": 1, "max": 10000},
            "comfy_extras.nodes_align_your_steps",
        ),
        (
            "OptimalStepsScheduler",
            ["FLUX", "Wan", "Chroma"],
            {"default": 20, "min": 3, "max": 1000},
            "comfy_extras.nodes_optimalsteps",
        ),
    ],
)
def test_samplers_table_schedulers_object_info(
    samplers_registry, class_type, model_types, steps, module
):
    entry = to_json(samplers_registry.get_node(class_type), samplers_registry)
    assert entry["input"] == {
        "required": {
            "model_type": ["COMBO", {"multiselect": False, "options": model_types}],
            "steps": ["INT", steps],
            **_MODEL_TYPE_STEPS_DENOISE,
        }
    }
    assert entry["output"] == ["SIGMAS"] and entry["python_module"] == module
    assert entry["category"] == SCHEDULERS and entry["experimental"] is False


SD1_AYS = [
    14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
    0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582,
]  # fmt: skip


def test_samplers_align_your_steps(samplers_registry):
    def ays(steps, denoise=1.0, model_type="SD1"):
        return _run(
            samplers_registry,
            "AlignYourStepsScheduler",
            model_type=model_type,
            steps=steps,
            denoise=denoise,
        )[0]

    assert torch.allclose(ays(10), torch.tensor([*SD1_AYS[:-1], 0.0]))
    # 6 points over 11: every second published level, exactly.
    assert torch.allclose(ays(5), torch.tensor([*SD1_AYS[:-1:2], 0.0]))
    # 21 points: the published levels with their geometric means between them.
    between = [math.sqrt(a * b) for a, b in itertools.pairwise(SD1_AYS)]
    interleaved = [v for pair in zip(SD1_AYS[:-1], between, strict=True) for v in pair]
    assert torch.allclose(ays(20), torch.tensor([*interleaved, 0.0]), rtol=1e-6)
    assert torch.allclose(ays(10, denoise=0.5), torch.tensor([*SD1_AYS[5:-1], 0.0]))
    assert ays(10, denoise=0.0).shape == (0,)
    assert ays(10, model_type="SVD")[0] == 700.0


def test_samplers_optimal_steps(samplers_registry):
    flux = [0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001]

    def optimal(steps, denoise=1.0):
        return _run(
            samplers_registry,
            "OptimalStepsScheduler",
            model_type="FLUX",
            steps=steps,
            denoise=denoise,
        )[0]

    assert torch.allclose(optimal(10), torch.tensor([*flux[:-1], 0.0]))
    assert torch.allclose(optimal(5), torch.tensor([*flux[:-1:2], 0.0]))
    # round(10 · 0.25) = 2 (round half to even): the last three of the table.
    assert torch.allclose(optimal(10, denoise=0.25), torch.tensor([*flux[-3:-1], 0.0]))
    assert len(_run(samplers_registry, "OptimalStepsScheduler", model_type="Wan", steps=20,
                    denoise=1.0)[0]) == 21  # fmt: skip


def test_samplers_advanced_sampler_nodes_object_info(samplers_registry):
    lcm = to_json(samplers_registry.get_node("SamplerLCMUpscale"), samplers_registry)
    assert lcm["input"] == {
        "required": {
            "scale_ratio": ["FLOAT", {"default": 1.0, "min": 0.1, "max": 20.0, "step": 0.01}],
            "scale_steps": ["INT", {"default": -1, "min": -1, "max": 1000, "step": 1}],
            "upscale_method": [
                "COMBO",
                {
                    "multiselect": False,
                    "options": ["bislerp", "nearest-exact", "bilinear", "area", "bicubic"],
                },
            ],
        }
    }
    euler = to_json(samplers_registry.get_node("SamplerEulerCFGpp"), samplers_registry)
    assert euler["input"] == {
        "required": {
            "version": ["COMBO", {"multiselect": False, "options": ["regular", "alternative"]}]
        }
    }
    assert euler["display_name"] == "SamplerEulerCFG++" and euler["experimental"] is True
    assert lcm["category"] == SAMPLERS and euler["category"] == "_for_testing"
    for entry in (lcm, euler):
        assert entry["output"] == ["SAMPLER"]
        assert entry["python_module"] == "comfy_extras.nodes_advanced_samplers"


class _Recording:
    """D(x) = 0.25 everywhere; records the shapes and inputs it is called with."""

    def __init__(self):
        self.inputs = []

    def __call__(self, x, sigma):
        self.inputs.append(x.clone())
        return torch.full_like(x, 0.25)


def test_samplers_lcm_upscale_enlarges_between_steps(samplers_registry):
    from loom_samplers.noise import SeededNoise

    (choice,) = _run(
        samplers_registry,
        "SamplerLCMUpscale",
        scale_ratio=2.0,
        scale_steps=-1,
        upscale_method="nearest-exact",
    )
    assert choice.options == {
        "total_upscale": 2.0,
        "upscale_steps": None,
        "upscale_method": "nearest-exact",
    }
    denoiser = _Recording()
    sigmas = torch.tensor([3.0, 2.0, 1.0, 0.0])
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    out = choice.registered.function(denoiser, x, sigmas, noise=SeededNoise(5), **choice.options)
    # 4 sigmas: 3 sizes evenly from 1 to 2 (×1.5 after step 0, ×2 after step 1), then plain LCM.
    assert [tuple(i.shape[-2:]) for i in denoiser.inputs] == [(4, 4), (6, 6), (8, 8)]
    first_noise = SeededNoise(5).sampler(torch.zeros(1, 4, 6, 6))(sigmas[0], sigmas[1])
    assert torch.allclose(denoiser.inputs[1], 0.25 + 2.0 * first_noise)
    assert torch.equal(out, torch.full((1, 4, 8, 8), 0.25))  # last step lands on D(x)
    (fixed,) = _run(
        samplers_registry,
        "SamplerLCMUpscale",
        scale_ratio=1.5,
        scale_steps=1,
        upscale_method="area",
    )
    assert fixed.options["upscale_steps"] == 1
    denoiser = _Recording()
    fixed.registered.function(denoiser, x, sigmas, noise=SeededNoise(5), **fixed.options)
    assert [tuple(i.shape[-2:]) for i in denoiser.inputs] == [(4, 4), (6, 6), (6, 6)]


class _Guided:
    """CFG with its uncond kept: D = u + 3 (c - u), u = x/(1+σ²), c = u + 0.5."""

    def __init__(self):
        self.uncond_denoised = None

    def __call__(self, x, sigma):
        self.uncond_denoised = x / (1 + float(sigma[0]) ** 2)
        return self.uncond_denoised + 1.5


def test_samplers_euler_cfg_pp_versions(samplers_registry):
    (regular,) = _run(samplers_registry, "SamplerEulerCFGpp", version="regular")
    assert regular.name == "euler_cfg_pp" and dict(regular.options) == {}
    assert regular.registered.info.needs_uncond
    (alternative,) = _run(samplers_registry, "SamplerEulerCFGpp", version="alternative")
    assert alternative.name == "euler_cfg_pp_alternative"
    assert alternative.registered.info.needs_uncond
    assert "euler_cfg_pp_alternative" not in samplers_registry.sampler_names()
    x = torch.tensor([[[[2.0]]]])
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    got = alternative.registered.function(_Guided(), x, sigmas, noise=None)
    # By hand: σ=1: u = 1, D = 2.5, d = (x - 2D + u)/σ = -2, x = 2 + (-2)(-0.5) = 3;
    # σ=0.5: u = 3/1.25 = 2.4, D = 3.9, d = (3 - 7.8 + 2.4)/0.5 = -4.8, x = 3 + 2.4 = 5.4.
    assert torch.allclose(got, torch.tensor([[[[5.4]]]]))


@pytest.mark.parametrize("version", ["regular", "alternative"])
def test_samplers_advanced_samplers_run_in_sampler_custom(
    samplers_registry, toy_model, cond, version
):
    """Through SamplerCustom with a toy MODEL: CFG++ gets its uncond, LCM upscale its size."""
    (euler,) = _run(samplers_registry, "SamplerEulerCFGpp", version=version)
    (lcm,) = _run(
        samplers_registry,
        "SamplerLCMUpscale",
        scale_ratio=1.5,
        scale_steps=-1,
        upscale_method="bislerp",
    )
    sigmas = torch.tensor([14.6, 4.0, 1.0, 0.0])
    for sampler, size in ((euler, 8), (lcm, 12)):
        out, _ = _run(
            samplers_registry,
            "SamplerCustom",
            model=toy_model(),
            add_noise=True,
            noise_seed=3,
            cfg=2.0,
            positive=cond(1.0),
            negative=cond(0.0),
            sampler=sampler,
            sigmas=sigmas,
            latent_image={"samples": torch.zeros(1, 4, 8, 8)},
        )
        assert out["samples"].shape == (1, 4, size, size)
        assert torch.isfinite(out["samples"]).all()
