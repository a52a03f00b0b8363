"""SEEDS, exponential Heun, SA-Solver and DPM++(2S) ancestral CFG++ against formulas written
out by hand (k-diffusion has none of them; ComfyUI 0.8's rules and the papers' equations).

The steps use sigmas 2 → 0.5, so in λ = -log σ: λ_s = -log 2, λ_t = log 2, h = 2 log 2, and the
exponential weights are simple numbers (e^{-h} = 1/4, e^{-h/2} = 1/2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from loom_samplers.noise import FunctionNoise, SeededNoise
from loom_samplers.samplers import SAMPLERS
from loom_samplers.samplers.sa_solver import adams_coefficients

from loom.model_sampling import DiscreteEps

SHAPE = (1, 2, 3, 3)


def _affine():
    """A denoiser D(x, σ) = x/(1+σ²) + σ²/(1+σ²)·m (Gaussian data N(m, 1)); counts its calls."""
    torch.manual_seed(0)
    m = torch.randn(SHAPE)

    class Denoiser:
        def __init__(self) -> None:
            self.calls: list[float] = []
            self.model_sampling = DiscreteEps()

        def __call__(self, x, sigma):
            s2 = float(sigma[0]) ** 2
            self.calls.append(float(sigma[0]))
            return x / (1 + s2) + s2 / (1 + s2) * m

    return Denoiser(), m


def _D(x, sigma, m):
    s2 = sigma * sigma
    return x / (1 + s2) + s2 / (1 + s2) * m


def _fixed_noise(values: dict):
    """Noise keyed on the (rounded) sigma pair, so the test knows which draw is which."""

    def draw(sigma, sigma_next):
        return values[(round(float(sigma), 4), round(float(sigma_next), 4))]

    return FunctionNoise(draw)


def test_samplers_sampler_list_is_comfyuis_44_names_in_order(samplers_registry):
    assert samplers_registry.sampler_names() == [
        "euler",
        "euler_cfg_pp",
        "euler_ancestral",
        "euler_ancestral_cfg_pp",
        "heun",
        "heunpp2",
        "exp_heun_2_x0",
        "exp_heun_2_x0_sde",
        "dpm_2",
        "dpm_2_ancestral",
        "lms",
        "dpm_fast",
        "dpm_adaptive",
        "dpmpp_2s_ancestral",
        "dpmpp_2s_ancestral_cfg_pp",
        "dpmpp_sde",
        "dpmpp_sde_gpu",
        "dpmpp_2m",
        "dpmpp_2m_cfg_pp",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu",
        "dpmpp_2m_sde_heun",
        "dpmpp_2m_sde_heun_gpu",
        "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
        "ddpm",
        "lcm",
        "ipndm",
        "ipndm_v",
        "deis",
        "res_multistep",
        "res_multistep_cfg_pp",
        "res_multistep_ancestral",
        "res_multistep_ancestral_cfg_pp",
        "gradient_estimation",
        "gradient_estimation_cfg_pp",
        "er_sde",
        "seeds_2",
        "seeds_3",
        "sa_solver",
        "sa_solver_pece",
        "ddim",
        "uni_pc",
        "uni_pc_bh2",
    ]


def test_samplers_exp_heun_is_the_exponential_trapezoid_in_lambda():
    # x_t = (σ_t/σ_s) x + α_t (1 - e^{-h}) D_s + α_t ((e^{-h} - 1 + h)/h) (D_t - D_s),
    # D linear in λ between the two evaluations (α = 1 for these VE sigmas).
    denoiser, m = _affine()
    x = torch.randn(SHAPE) * 2
    sigmas = torch.tensor([2.0, 0.5])
    got = SAMPLERS["exp_heun_2_x0"](denoiser, x.clone(), sigmas, noise=SeededNoise(0))
    h = 2 * math.log(2)
    d_s = _D(x, 2.0, m)
    x_euler = 0.25 * x + 0.75 * d_s
    d_t = _D(x_euler, 0.5, m)
    expected = 0.25 * x + 0.75 * d_s + ((0.25 - 1 + h) / h) * (d_t - d_s)
    assert torch.allclose(got, expected, atol=1e-6)
    assert denoiser.calls == pytest.approx([2.0, 0.5])


def test_samplers_seeds_2_ode_is_dpmpp_2s(kdiff, gaussian):
    # η = 0, r = ½, phi_1: the midpoint estimate carries the whole step, DPM-Solver++(2S).
    torch.manual_seed(3)
    denoiser = gaussian(torch.randn(SHAPE) * 0.5, 0.8)
    sigmas = kdiff.get_sigmas_karras(8, 0.0291675, 14.614642)
    x = torch.randn(SHAPE) * sigmas[0]
    expected = kdiff.sample_dpmpp_2s_ancestral(denoiser, x.clone(), sigmas, eta=0.0, disable=True)
    got = SAMPLERS["seeds_2"](denoiser, x.clone(), sigmas, noise=SeededNoise(0), eta=0.0)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_samplers_seeds_2_sde_noise_is_chained_across_the_substeps():
    # η = 1, r = ½: the midpoint gets σ_1 √(1 - e^{-hη}) ξ_a, the end
    # σ_t (e^{-hη/2} √(1 - e^{-hη}) ξ_a + √(1 - e^{-hη}) ξ_b), i.e. total variance 1 - e^{-2hη}.
    denoiser, m = _affine()
    x = torch.randn(SHAPE) * 2
    xi_a, xi_b = torch.randn(SHAPE), torch.randn(SHAPE)
    noise = _fixed_noise({(2.0, 1.0): xi_a, (1.0, 0.5): xi_b})
    sigmas = torch.tensor([2.0, 0.5])
    got = SAMPLERS["seeds_2"](denoiser, x.clone(), sigmas, noise=noise)
    h = 2 * math.log(2)  # h_η = 2h: e^{-hη} = 1/4, e^{-h_η} = 1/16, e^{-h_η/2} = 1/4
    d_s = _D(x, 2.0, m)
    sigma_1 = 1.0  # λ midway: σ = 1, α = 1
    x_2 = (sigma_1 / 2.0) * 0.5 * x + (1 - 0.25) * d_s + sigma_1 * math.sqrt(1 - 0.25) * xi_a
    d_2 = _D(x_2, 1.0, m)
    step = (0.5 / 2.0) * 0.25 * x + (1 - 1 / 16) * d_2  # phi_1 with weight 1/(2r) = 1 on D_2
    chained = 0.5 * math.sqrt(1 - 0.25) * xi_a + math.sqrt(1 - 0.25) * xi_b
    expected = step + 0.5 * chained
    assert torch.allclose(got, expected, atol=1e-6)
    assert h > 0


def test_samplers_seeds_3_ode_step_by_hand():
    denoiser, m = _affine()
    x = torch.randn(SHAPE) * 2
    sigmas = torch.tensor([2.0, 0.5])
    got = SAMPLERS["seeds_3"](denoiser, x.clone(), sigmas, noise=SeededNoise(0), eta=0.0)
    h = 2 * math.log(2)

    def phi1(z):  # z φ₁(z)
        return math.expm1(z)

    def phi2(z):  # z φ₂(z)
        return (math.expm1(z) - z) / z

    lam_s = -math.log(2)
    s1, s2 = math.exp(-(lam_s + h / 3)), math.exp(-(lam_s + 2 * h / 3))
    d_s = _D(x, 2.0, m)
    x_2 = (s1 / 2.0) * x - phi1(-h / 3) * d_s
    d_2 = _D(x_2, s1, m)
    a2 = 2 * phi2(-2 * h / 3)
    a1 = phi1(-2 * h / 3) - a2
    x_3 = (s2 / 2.0) * x - (a1 * d_s + a2 * d_2)
    d_3 = _D(x_3, s2, m)
    b3 = phi2(-h) * 1.5
    b1 = phi1(-h) - b3
    expected = 0.25 * x - (b1 * d_s + b3 * d_3)
    assert torch.allclose(got, expected, atol=1e-5)
    assert denoiser.calls == pytest.approx([2.0, s1, s2], rel=1e-6)


def _lagrange_integral(nodes, j, lam_s, lam_t, tau):
    """k ∫ e^{-k(λ_t-λ)} ℓ_j(λ) dλ by quadrature (k = 1 + τ²)."""
    from scipy.integrate import quad

    k = 1 + tau**2

    def basis(lam):
        out = 1.0
        for q, node in enumerate(nodes):
            if q != j:
                out *= (lam - node) / (nodes[j] - node)
        return out

    value, _ = quad(lambda lam: k * math.exp(-k * (lam_t - lam)) * basis(lam), lam_s, lam_t)
    return value


@pytest.mark.parametrize("tau", [0.0, 1.0])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_samplers_sa_solver_coefficients_are_the_lagrange_integrals(order, tau):
    lambdas = [-2.4, -1.5, -0.9, -0.1, 0.6]
    nodes = lambdas[:order]
    lam_s, lam_t = lambdas[order - 1], lambdas[order]
    sigma_t = math.exp(-lam_t)
    got = adams_coefficients(
        torch.tensor(sigma_t, dtype=torch.float64),
        torch.tensor(nodes, dtype=torch.float64),
        torch.tensor(lam_s, dtype=torch.float64),
        torch.tensor(lam_t, dtype=torch.float64),
        tau,
    )
    alpha_t = sigma_t * math.exp(lam_t)
    expected = [alpha_t * _lagrange_integral(nodes, j, lam_s, lam_t, tau) for j in range(order)]
    assert np.allclose(got.numpy(), expected, rtol=1e-7, atol=1e-9)


def test_samplers_sa_solver_simple_order_2_pairs():
    lam_prev, lam_s, lam_t, tau = -1.0, -0.4, 0.3, 1.0
    k, h = 2.0, 0.7
    sigma_t = torch.tensor(math.exp(-lam_t), dtype=torch.float64)
    args = (torch.tensor(lam_s, dtype=torch.float64), torch.tensor(lam_t, dtype=torch.float64))
    whole = 1 - math.exp(-k * h)  # α_t = 1 in VE λ
    pred = adams_coefficients(
        sigma_t, torch.tensor([lam_prev, lam_s], dtype=torch.float64), *args, tau,
        simple_order_2=True,
    )  # fmt: skip
    oldest = 0.5 * k * h**2 / (lam_prev - lam_s)
    assert pred.tolist() == pytest.approx([oldest, whole - oldest])
    corr = adams_coefficients(
        sigma_t, torch.tensor([lam_s, lam_t], dtype=torch.float64), *args, tau,
        simple_order_2=True, corrector=True,
    )  # fmt: skip
    assert corr.tolist() == pytest.approx([whole - 0.5 * k * h, 0.5 * k * h])


def test_samplers_sa_solver_predictor_corrector_steps_by_hand():
    # Two steps, ODE (η = 0), orders 2/2, ending above 0 (no tapering):
    # step 0 predicts with D_0 alone; step 1 corrects the step 0→1 with {D_0, D_1}, then
    # predicts 1→2 from {D_0, D_1}.
    denoiser, m = _affine()
    x = torch.randn(SHAPE) * 3
    sig = [3.0, 1.2, 0.4]
    lam = [-math.log(s) for s in sig]
    got = SAMPLERS["sa_solver"](
        denoiser,
        x.clone(),
        torch.tensor(sig),
        noise=SeededNoise(0),
        eta=0.0,
        predictor_order=2,
        corrector_order=2,
    )

    def w(nodes, j, a, b):
        return _lagrange_integral(nodes, j, a, b, 0.0)  # α = 1

    d_0 = _D(x, sig[0], m)
    x_1p = (sig[1] / sig[0]) * x + w([lam[0]], 0, lam[0], lam[1]) * d_0
    d_1 = _D(x_1p, sig[1], m)
    nodes = [lam[0], lam[1]]
    x_1 = (sig[1] / sig[0]) * x + sum(
        w(nodes, j, lam[0], lam[1]) * d for j, d in enumerate([d_0, d_1])
    )
    expected = (sig[2] / sig[1]) * x_1 + sum(
        w(nodes, j, lam[1], lam[2]) * d for j, d in enumerate([d_0, d_1])
    )
    assert torch.allclose(got, expected, atol=1e-5)
    assert len(denoiser.calls) == 2


def test_samplers_sa_solver_noise_inside_the_sde_interval_only():
    # τ = η inside [end, start]: x_1 = (σ_1/σ_0) e^{-τ²h} x + b D_0 + σ_1 √(1-e^{-2τ²h}) ξ.
    denoiser, m = _affine()
    x = torch.randn(SHAPE) * 2
    xi = torch.randn(SHAPE)
    sigmas = torch.tensor([2.0, 0.5])
    inside = SAMPLERS["sa_solver"](
        denoiser,
        x.clone(),
        sigmas,
        noise=_fixed_noise({(2.0, 0.5): xi}),
        sde_start_sigma=1.0,
        sde_end_sigma=0.1,
        predictor_order=1,
    )
    h = 2 * math.log(2)  # k = 2: e^{-kh} = 1/16, e^{-τ²h} = 1/4
    expected = 0.25 * 0.25 * x + (1 - 1 / 16) * _D(x, 2.0, m) + 0.5 * math.sqrt(1 - 1 / 16) * xi
    assert torch.allclose(inside, expected, atol=1e-6)
    outside = SAMPLERS["sa_solver"](
        denoiser,
        x.clone(),
        sigmas,
        noise=_fixed_noise({}),
        sde_start_sigma=0.4,
        sde_end_sigma=0.1,
        predictor_order=1,
    )
    assert torch.allclose(outside, 0.25 * x + 0.75 * _D(x, 2.0, m), atol=1e-6)
    assert h > 0


def test_samplers_sa_solver_pece_evaluates_the_corrected_state():
    denoiser, _ = _affine()
    sigmas = torch.tensor([3.0, 1.2, 0.4, 0.0])
    SAMPLERS["sa_solver"](denoiser, torch.randn(SHAPE), sigmas, noise=SeededNoise(0), eta=0.0)
    plain = len(denoiser.calls)
    denoiser.calls.clear()
    SAMPLERS["sa_solver_pece"](denoiser, torch.randn(SHAPE), sigmas, noise=SeededNoise(0), eta=0.0)
    # one call per step, plus one per corrector step (steps 1 and 2; the last too in PECE)
    assert plain == 3 and len(denoiser.calls) == 3 + 2


def test_samplers_sa_solver_without_a_schedule_says_what_it_needs():
    def bare(x, sigma):
        return x * 0

    with pytest.raises(TypeError, match="sde_start_sigma"):
        SAMPLERS["sa_solver"](bare, torch.randn(SHAPE), torch.tensor([2.0, 0.0]), noise=None)


class _Guided:
    """A CFG denoiser with its uncond kept: uncond N(0,1) data, cond N(1,1) data, cfg 3."""

    def __init__(self):
        self.uncond_denoised = None
        self.calls = 0

    def __call__(self, x, sigma):
        s2 = float(sigma[0]) ** 2
        self.calls += 1
        uncond = x / (1 + s2)
        cond = uncond + s2 / (1 + s2) * (1 + 0.1 * self.calls)
        self.uncond_denoised = uncond
        return uncond + 3 * (cond - uncond)


def test_samplers_dpmpp_2s_ancestral_cfg_pp_is_comfyuis_formula():
    # ComfyUI 0.8: x_2 = (σ_s/σ)(x + D - u) - expm1(-h/2) D,
    #              x'  = (σ_down/σ)(x + D - u_2) - expm1(-h) D_2, u_2 from the second call.
    denoiser = _Guided()
    x = torch.randn(SHAPE) * 2
    sigmas = torch.tensor([2.0, 0.5])
    got = SAMPLERS["dpmpp_2s_ancestral_cfg_pp"](
        denoiser, x.clone(), sigmas, noise=SeededNoise(0), eta=0.0
    )
    reference = _Guided()
    d = reference(x, torch.tensor([2.0]))
    u = reference.uncond_denoised
    x_2 = 0.5 * (x + d - u) + 0.5 * d  # σ_s = 1, expm1(-h/2) = -1/2
    d_2 = reference(x_2, torch.tensor([1.0]))
    u_2 = reference.uncond_denoised
    expected = 0.25 * (x + d - u_2) + 0.75 * d_2  # expm1(-h) = -3/4
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(u, u_2)


def test_samplers_sampler_nodes_for_sa_solver_and_seeds_2(samplers_registry, toy_model):
    from test_samplers_nodes import _ctx, _run

    ctx = _ctx(samplers_registry)
    model = toy_model()
    (choice,) = _run(
        samplers_registry,
        "SamplerSASolver",
        ctx,
        model=model,
        eta=0.5,
        sde_start_percent=0.3,
        sde_end_percent=0.7,
        s_noise=1.0,
        predictor_order=2,
        corrector_order=3,
        use_pece=True,
        simple_order_2=False,
    )
    ms = model.model_sampling
    assert choice.name == "sa_solver"
    assert choice.options["sde_start_sigma"] == ms.percent_to_sigma(0.3)
    assert choice.options["sde_end_sigma"] == ms.percent_to_sigma(0.7)
    assert choice.options["use_pece"] is True and choice.options["corrector_order"] == 3
    (seeds,) = _run(
        samplers_registry,
        "SamplerSEEDS2",
        ctx,
        solver_type="phi_2",
        eta=0.0,
        s_noise=1.0,
        r=1.0,
    )
    assert seeds.name == "seeds_2"
    denoiser, _ = _affine()
    sigmas = torch.tensor([2.0, 0.7, 0.0])
    x = torch.randn(SHAPE)
    via_node = seeds.registered.function(
        denoiser, x.clone(), sigmas, noise=SeededNoise(0), **seeds.options
    )
    direct = SAMPLERS["exp_heun_2_x0"](denoiser, x.clone(), sigmas, noise=SeededNoise(0))
    assert torch.equal(via_node, direct)
    inputs = samplers_registry.get_node("SamplerSEEDS2").impl.input_types(samplers_registry)
    assert list(inputs["required"]) == ["solver_type", "eta", "s_noise", "r"]
