"""ModelSamplingDiscrete / ModelSamplingContinuousV and the parameterisations they install:
zero-terminal-SNR and LCM schedules against diffusers' schedulers, denoised estimates against
hand formulas, the nodes' clones."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import LCMScheduler
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as diffusers_zsnr

from loom.errors import LoomError
from loom.memory import ModelHandle
from loom.model_sampling import (
    ContinuousV,
    DiscreteEps,
    DiscreteImgToImg,
    DiscreteLCM,
    DiscreteV,
    DiscreteX0,
    discrete_sigmas,
    rescale_zero_terminal_snr,
)
from loom.nodes.builtin.model_sampling_nodes import (
    ModelSamplingContinuousV,
    ModelSamplingDiscrete,
)
from loom.testing import make_context


def sd15_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1 - betas, 0)


def test_zsnr_rescale_matches_diffusers_and_ends_at_comfyuis_finite_sigma():
    rescaled = rescale_zero_terminal_snr(DiscreteEps().sigmas)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - diffusers_zsnr(betas), 0)
    expected = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    torch.testing.assert_close(rescaled[:-1].double(), expected[:-1], rtol=1e-4, atol=0)
    assert math.isinf(float(expected[-1]))  # diffusers' last step: alpha_bar 0
    last = math.sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08)
    assert float(rescaled[-1]) == pytest.approx(last, rel=1e-6)
    assert float(rescaled[0]) == pytest.approx(float(DiscreteEps().sigmas[0]), rel=1e-3)


def test_lcm_schedule_is_diffusers_origin_timesteps():
    lcm = DiscreteLCM()
    origin = torch.arange(1, 51) * 20 - 1  # LCMScheduler's lcm_origin_timesteps: 19 ... 999
    alphas_cumprod = LCMScheduler(beta_schedule="scaled_linear").alphas_cumprod[origin]
    expected = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    assert lcm.sigmas.shape == (50,)
    torch.testing.assert_close(lcm.sigmas, expected.float(), rtol=1e-5, atol=0)
    assert torch.equal(lcm.timestep(lcm.sigmas), origin)
    torch.testing.assert_close(lcm.sigma(origin.float()), lcm.sigmas, rtol=1e-6, atol=0)


def noisy_pair(sigma: float):
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    return x0, eps, x0 + sigma * eps


@pytest.mark.parametrize("sampling", [DiscreteV(), ContinuousV()])
def test_v_prediction_recovers_x0(sampling):
    sigma = 2.5
    x0, eps, noisy = noisy_pair(sigma)
    alpha, sigma_vp = 1 / math.sqrt(1 + sigma**2), sigma / math.sqrt(1 + sigma**2)
    v = alpha * eps - sigma_vp * x0
    denoised = sampling.calculate_denoised(torch.tensor([sigma, sigma]), v, noisy)
    torch.testing.assert_close(denoised, x0, rtol=1e-5, atol=1e-5)


def test_x0_and_img_to_img_take_the_output_as_x0():
    x0, _eps, noisy = noisy_pair(1.5)
    sigma = torch.tensor([1.5, 1.5])
    for sampling in (DiscreteX0(), DiscreteImgToImg()):
        assert torch.equal(sampling.calculate_denoised(sigma, x0, noisy), x0)
    torch.testing.assert_close(DiscreteX0().calculate_input(sigma, noisy), noisy / math.sqrt(3.25))
    assert torch.equal(DiscreteImgToImg().calculate_input(sigma, noisy), noisy)


def test_lcm_denoised_is_the_consistency_boundary_condition():
    lcm = DiscreteLCM()
    sigma = lcm.sigmas[10]
    x0, eps, noisy = noisy_pair(float(sigma))
    t = float(lcm.timestep(sigma))  # 219
    assert t == 219
    c_skip = 0.25 / ((t * 10) ** 2 + 0.25)
    c_out = t * 10 / ((t * 10) ** 2 + 0.25) ** 0.5
    got = lcm.calculate_denoised(sigma.repeat(2), eps, noisy)
    torch.testing.assert_close(got, c_out * x0 + c_skip * noisy, rtol=1e-5, atol=1e-5)


def test_continuous_v_schedule():
    sampling = ContinuousV(0.03, 500.0)
    assert sampling.sigmas.shape == (1000,)
    assert float(sampling.sigma_min) == pytest.approx(0.03, rel=1e-5)
    assert float(sampling.sigma_max) == pytest.approx(500.0, rel=1e-5)
    sigmas = torch.tensor([0.03, 1.0, 14.6, 500.0])
    assert torch.allclose(sampling.timestep(torch.tensor([1.0])), torch.tensor([0.5]))
    torch.testing.assert_close(sampling.sigma(sampling.timestep(sigmas)), sigmas, rtol=1e-4, atol=0)
    assert sampling.percent_to_sigma(0.5) == pytest.approx(math.sqrt(0.03 * 500.0))
    assert sampling.percent_to_sigma(0.0) == 999999999.9 and sampling.percent_to_sigma(1.0) == 0


def model() -> ModelHandle:
    handle = ModelHandle(torch.nn.Linear(2, 2))
    handle.model_sampling = DiscreteEps(linear_start=0.001, linear_end=0.02, schedule="linear")
    return handle


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("eps", DiscreteEps),
        ("v_prediction", DiscreteV),
        ("lcm", DiscreteLCM),
        ("x0", DiscreteX0),
        ("img_to_img", DiscreteImgToImg),
    ],
)
def test_model_sampling_discrete_sets_the_kind_on_a_clone_keeping_the_beta_schedule(name, kind):
    original = model()
    out = ModelSamplingDiscrete(model=original, sampling=name, zsnr=False).run(make_context())
    assert out is not original and out.is_clone(original)
    assert type(out.model_sampling) is kind
    assert type(original.model_sampling) is DiscreteEps
    betas = discrete_sigmas(0.001, 0.02, 1000, "linear").float()
    if name != "lcm":
        torch.testing.assert_close(out.model_sampling.sigmas, betas, rtol=0, atol=0)


def test_model_sampling_discrete_zsnr_rescales_the_schedule():
    out = ModelSamplingDiscrete(model=model(), sampling="v_prediction", zsnr=True).run(
        make_context()
    )
    expected = rescale_zero_terminal_snr(discrete_sigmas(0.001, 0.02, 1000, "linear").float())
    assert torch.equal(out.model_sampling.sigmas, expected.float())
    assert torch.equal(out.model_sampling.log_sigmas, expected.log().float())
    assert float(out.model_sampling.sigma_max) > 4000  # zero terminal SNR: a huge last sigma


def test_model_sampling_continuous_v_node():
    original = model()
    node = ModelSamplingContinuousV(
        model=original, sampling="v_prediction", sigma_max=120.0, sigma_min=0.002
    )
    out = node.run(make_context())
    assert isinstance(out.model_sampling, ContinuousV)
    assert float(out.model_sampling.sigma_max) == pytest.approx(120.0, rel=1e-5)
    assert type(original.model_sampling) is DiscreteEps


def test_a_value_without_model_sampling_is_refused_naming_the_node():
    with pytest.raises(LoomError, match="ModelSamplingDiscrete: input model"):
        ModelSamplingDiscrete(model="nope", sampling="eps", zsnr=False).run(make_context())


# --- ModelComputeDtype ----------------------------------------------------------------------


def test_model_compute_dtype_bf16_computes_in_bf16_and_keeps_the_stored_weights():
    from loom.memory import ComputeTarget, MemoryManager, cpu_device, ops
    from loom.nodes.builtin.model_sampling_nodes import ModelComputeDtype

    torch.manual_seed(0)
    layer = ops.Linear(8, 8)
    model = ModelHandle(layer, name="tiny")
    stored = {k: v.clone() for k, v in layer.state_dict().items()}
    seen: list[torch.dtype] = []
    layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    patched = ModelComputeDtype(model=model, dtype="bf16").run(make_context())
    assert patched is not model and model.compute_dtype is None
    assert patched.compute_dtype == torch.bfloat16

    memory = MemoryManager(cpu_device())
    memory.load([patched])
    target = patched.compute_target
    assert target == ComputeTarget(torch.device("cpu"), torch.bfloat16)
    x = torch.randn(2, 8)
    with torch.no_grad():
        out = layer(x.to(target.device, target.dtype))
    assert seen == [torch.bfloat16] and out.dtype == torch.bfloat16

    # the original handle: the manager's policy again (fp32 on the CPU), and the weights as
    # stored (a placement's bf16 resident copies are dropped when it is reverted)
    memory.load([model])
    assert model.compute_target.dtype == torch.float32
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in stored.items())
    assert {p.dtype for p in layer.parameters()} == {torch.float32}
    with torch.no_grad():
        assert layer(x).dtype == torch.float32
    for choice, dtype in (("fp16", torch.float16), ("fp32", torch.float32), ("default", None)):
        assert ModelComputeDtype(model=patched, dtype=choice).run(None).compute_dtype == dtype


def test_model_compute_dtype_bad_input_names_the_node():
    from loom.nodes.builtin.model_sampling_nodes import ModelComputeDtype

    with pytest.raises(LoomError, match="ModelComputeDtype: dtype 'fp8'"):
        ModelComputeDtype(model=ModelHandle(torch.nn.Linear(2, 2)), dtype="fp8").run(None)
    with pytest.raises(LoomError, match="ModelComputeDtype: input model"):
        ModelComputeDtype(model=object(), dtype="bf16").run(None)


def test_model_compute_dtype_object_info(tmp_path):
    from loom.nodes.object_info import object_info
    from loom.settings import Settings
    from loom.testing import make_runtime

    runtime = make_runtime(settings=Settings(base_directory=tmp_path, load_custom_nodes=False))
    entry = object_info(runtime.registry, runtime.environment)["ModelComputeDtype"]
    assert entry["input"]["required"] == {
        "model": ["MODEL"],
        "dtype": [["default", "fp32", "fp16", "bf16"]],
    }
    assert (entry["category"], entry["output"]) == ("advanced/debug/model", ["MODEL"])
    assert entry["python_module"] == "comfy_extras.nodes_model_advanced"
