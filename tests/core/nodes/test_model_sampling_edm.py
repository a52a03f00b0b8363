"""ModelSamplingContinuousEDM: its sigma schedule, its preconditionings against the EDM paper's
formulas (Karras et al. 2022, Table 1, as k-diffusion's ``layers.Denoiser`` and
``external.VDenoiser`` write them), the per-channel latent format, and the node's clone,
refusals and /object_info entry. (The schedule against k-diffusion itself:
tests/samplers/test_edm_schedule_parity.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from loom_builtin_harness import object_info_of

from loom.errors import LoomError
from loom.memory import ModelHandle
from loom.model_sampling import ContinuousEDM, DiscreteEps
from loom.nodes.builtin.model_sampling_nodes import ModelSamplingContinuousEDM
from loom.testing import make_context
from loom.types import LatentFormat


def test_edm_sigmas_are_log_spaced():
    sampling = ContinuousEDM(0.002, 120.0)
    expected = torch.linspace(math.log(0.002), math.log(120.0), 1000, dtype=torch.float64).exp()
    torch.testing.assert_close(sampling.sigmas, expected.float(), rtol=2e-5, atol=0)
    assert sampling.percent_to_sigma(0.5) == pytest.approx(math.sqrt(0.002 * 120.0))
    assert sampling.percent_to_sigma(0.0) == 999999999.9 and sampling.percent_to_sigma(1.0) == 0


def test_edm_timestep_is_a_quarter_log_sigma_and_inverts():
    sampling = ContinuousEDM(0.002, 120.0, prediction="edm", sigma_data=0.5)
    sigmas = torch.tensor([0.002, 0.5, 14.6, 120.0])
    torch.testing.assert_close(sampling.timestep(sigmas), 0.25 * sigmas.log())
    torch.testing.assert_close(sampling.sigma(sampling.timestep(sigmas)), sigmas)


def edm_scalings(sigma, sigma_data):
    """c_skip, c_out, c_in of EDM's preconditioning (k-diffusion's ``Denoiser.get_scalings``)."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    c_in = 1 / (sigma**2 + sigma_data**2) ** 0.5
    return [c.reshape(-1, 1, 1, 1) for c in (c_skip, c_out, c_in)]


class Inner(torch.nn.Module):
    """A network whose output depends on its input only: what it saw and returned is kept."""

    def forward(self, x, *_args, **_kwargs):
        self.seen = x
        return torch.tanh(x) * 0.7 + 0.1


def run_loom(sampling, x, sigma):
    inner = Inner()
    out = inner(sampling.calculate_input(sigma, x))
    return sampling.calculate_denoised(sigma, out, x), inner.seen


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_preconditioning_is_k_diffusions_denoiser(sigma_data):
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * 5
    sigma = torch.tensor([0.3, 7.0])
    sampling = ContinuousEDM(0.002, 120.0, prediction="edm", sigma_data=sigma_data)
    got, seen = run_loom(sampling, x, sigma)
    c_skip, c_out, c_in = edm_scalings(sigma, sigma_data)
    torch.testing.assert_close(seen, x * c_in, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, Inner()(x * c_in) * c_out + x * c_skip, rtol=1e-6, atol=1e-6)


def test_v_prediction_preconditioning_is_k_diffusions_vdenoiser_scalings():
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1)) * 5
    sigma = torch.tensor([0.3, 7.0])
    got, _ = run_loom(ContinuousEDM(0.002, 120.0, prediction="v_prediction"), x, sigma)
    c_skip, c_out, c_in = edm_scalings(sigma, 1.0)  # VDenoiser: the output scale negated
    torch.testing.assert_close(got, Inner()(x * c_in) * -c_out + x * c_skip, rtol=1e-6, atol=1e-6)


def test_eps_and_cosmos_rflow_by_hand():
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(2))
    out = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    s = 3.0
    sigma = torch.tensor([s])
    eps = ContinuousEDM(0.002, 120.0, prediction="eps")
    torch.testing.assert_close(eps.calculate_input(sigma, x), x / math.sqrt(s * s + 1))
    torch.testing.assert_close(eps.calculate_denoised(sigma, out, x), x - s * out)
    flow = ContinuousEDM(0.002, 120.0, prediction="cosmos_rflow")
    t = s / (s + 1)
    torch.testing.assert_close(flow.timestep(sigma), torch.tensor([t]))
    torch.testing.assert_close(flow.calculate_input(sigma, x), x * (1 - t))
    torch.testing.assert_close(flow.calculate_denoised(sigma, out, x), x * (1 - t) - out * t)
    # the timestep of sigma_max maps back to sigma_max itself, smaller ones to t / (1 - t)
    top = flow.sigma(flow.timestep(flow.sigma_max.reshape(1)))
    torch.testing.assert_close(top, flow.sigma_max.reshape(1))
    torch.testing.assert_close(flow.sigma(torch.tensor([0.75])), torch.tensor([3.0]))
    noisy = flow.noise_scaling(sigma, out, x, max_denoise=True)
    torch.testing.assert_close(noisy, x + s * out)


def test_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match="prediction"):
        ContinuousEDM(0.002, 120.0, prediction="flow")


PLAYGROUND_LIKE = LatentFormat(
    scale_factor=0.5, latents_mean=(1.0, -2.0, 0.5, 3.0), latents_std=(2.0, 4.0, 8.0, 0.5)
)


def test_per_channel_latent_format_by_hand_and_round_trip():
    latent = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(4)) * 6
    inside = PLAYGROUND_LIKE.process_in(latent)
    for c, (mean, std) in enumerate([(1.0, 2.0), (-2.0, 4.0), (0.5, 8.0), (3.0, 0.5)]):
        torch.testing.assert_close(inside[:, c], (latent[:, c] - mean) * 0.5 / std)
    torch.testing.assert_close(PLAYGROUND_LIKE.process_out(inside), latent)
    plain = LatentFormat(scale_factor=0.3611, shift_factor=0.1159)
    torch.testing.assert_close(plain.process_in(latent), (latent - 0.1159) * 0.3611)
    torch.testing.assert_close(plain.process_out(plain.process_in(latent)), latent)


def test_latent_format_statistics_must_match_the_channels():
    with pytest.raises(ValueError, match="together"):
        LatentFormat(latents_mean=(0.0,) * 4)
    with pytest.raises(ValueError, match="3 per-channel statistics for 4 channels"):
        LatentFormat(latents_mean=(0.0,) * 3, latents_std=(1.0,) * 3)


class VariantModel(ModelHandle):
    def latent_format_variant(self, name):
        return PLAYGROUND_LIKE if name == "edm_playground_v2.5" else None


def model(kind=ModelHandle) -> ModelHandle:
    handle = kind(torch.nn.Linear(2, 2), name="tiny")
    handle.model_sampling = DiscreteEps()
    handle.latent_format = LatentFormat(scale_factor=0.18215)
    return handle


def run_node(original, sampling, sigma_max=120.0, sigma_min=0.002):
    node = ModelSamplingContinuousEDM(
        model=original, sampling=sampling, sigma_max=sigma_max, sigma_min=sigma_min
    )
    return node.run(make_context())


@pytest.mark.parametrize(
    ("name", "prediction", "sigma_data"),
    [
        ("v_prediction", "v_prediction", 1.0),
        ("edm", "edm", 0.5),
        ("eps", "eps", 1.0),
        ("cosmos_rflow", "cosmos_rflow", 1.0),
    ],
)
def test_node_sets_the_sampling_on_a_clone(name, prediction, sigma_data):
    original = model()
    out = run_node(original, name, sigma_max=80.0, sigma_min=0.01)
    assert out is not original and out.is_clone(original)
    ms = out.model_sampling
    assert isinstance(ms, ContinuousEDM)
    assert (ms.prediction, ms.sigma_data) == (prediction, sigma_data)
    assert float(ms.sigma_max) == pytest.approx(80.0, rel=1e-5)
    assert float(ms.sigma_min) == pytest.approx(0.01, rel=1e-5)
    assert type(original.model_sampling) is DiscreteEps
    assert out.latent_format is original.latent_format


def test_playground_sampling_takes_the_familys_latent_format():
    original = model(VariantModel)
    out = run_node(original, "edm_playground_v2.5")
    assert out.latent_format is PLAYGROUND_LIKE
    assert original.latent_format.scale_factor == 0.18215
    assert (out.model_sampling.prediction, out.model_sampling.sigma_data) == ("edm", 0.5)


def test_playground_on_a_model_without_the_format_is_refused_naming_node_and_model():
    with pytest.raises(LoomError, match="ModelSamplingContinuousEDM: sampling 'edm_playground"):
        run_node(model(), "edm_playground_v2.5")


def test_zero_sigma_is_refused_naming_node_and_input():
    with pytest.raises(LoomError, match=r"ModelSamplingContinuousEDM: sigma_min \(0.0\)"):
        run_node(model(), "edm", sigma_min=0.0)


def test_object_info_entry():
    info = object_info_of("ModelSamplingContinuousEDM")
    required = info["input"]["required"]
    assert required["sampling"][0] == [
        "v_prediction",
        "edm",
        "edm_playground_v2.5",
        "eps",
        "cosmos_rflow",
    ]
    assert required["sigma_max"] == [
        "FLOAT",
        {"default": 120.0, "min": 0.0, "max": 1000.0, "step": 0.001, "round": False},
    ]
    assert required["sigma_min"][1]["default"] == 0.002
    assert info["output"] == ["MODEL"]
    assert info["category"] == "advanced/model"
    assert info["python_module"] == "comfy_extras.nodes_model_advanced"
