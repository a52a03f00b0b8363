"""Sampling on each compute device (CPU here; CUDA / MPS where present) with ComfyUI's noise
rules: the initial noise is drawn on the CPU whatever the device; SDE samplers draw their
Brownian noise from a CPU tree (the ``*_gpu`` variants from a tree on the latent's device);
ancestral step noise comes from a generator on the latent's device, seeded ``seed + 1`` on
the CPU and ``seed`` elsewhere (``comfy/k_diffusion/sampling.py`` ``default_noise_sampler``)."""

from __future__ import annotations

import functools
import itertools
import types

import loom_samplers.ksampler
import pytest
import torch
from device_params import DEVICES
from loom_samplers.noise import BrownianTreeNoise, SeededNoise
from loom_samplers.schedulers import SCHEDULERS

from loom.executor.context import InterruptFlag, RunContext
from loom.model_sampling import DiscreteEps

pytestmark = [pytest.mark.parametrize("device", DEVICES), pytest.mark.usefixtures("no_tf32")]
#: torchsde warns when a query is clamped to the tree's ends (sigma_max rounded); so does ComfyUI
torchsde_clamps = pytest.mark.filterwarnings("ignore:Should have tb<=t1:UserWarning")


@pytest.fixture
def device_model(toy_model):
    """``device_model(device)``: the toy MODEL sampled on ``device`` (its ``load_device``);
    its conditioning must arrive on the latent's device, as ComfyUI hands it to models."""

    class DeviceToy(toy_model):
        def __init__(self, device: str) -> None:
            super().__init__()
            self.load_device = torch.device(device)
            self.devices: set[str] = set()

        def apply_model(self, x, sigma, cond):
            self.devices.add(x.device.type)
            assert sigma.device == x.device
            assert all(v.device == x.device for v in cond.values() if isinstance(v, torch.Tensor))
            return super().apply_model(x, sigma, cond)

    return DeviceToy


def run_ksampler(
    registry, model, cond, sampler: str, seed: int = 42, steps: int = 6
) -> torch.Tensor:
    node = registry.get_node("KSampler")
    ctx = RunContext(
        node_id="3",
        prompt_id="p",
        prompt={},
        extra_data={},
        runtime=types.SimpleNamespace(registry=registry),
        interrupt=InterruptFlag(),
    )
    inputs = dict(
        model=model,
        seed=seed,
        steps=steps,
        cfg=6.0,
        sampler_name=sampler,
        scheduler="karras",
        positive=cond(0.5),
        negative=cond(-0.5),
        latent_image={"samples": torch.zeros(2, 4, 8, 8)},
        denoise=1.0,
    )
    (out,) = node.impl.execute(node.impl.create(), inputs, ctx).values
    return out["samples"]


@pytest.mark.parametrize("sampler", ["dpmpp_2m_sde", "dpmpp_sde", "euler", "exp_heun_2_x0"])
def test_sampler_on_device_matches_cpu(samplers_registry, device_model, cond, device, sampler):
    """CPU initial noise and a CPU Brownian tree: the device changes only the rounding."""
    model = device_model(device)
    out = run_ksampler(samplers_registry, model, cond, sampler)
    assert model.devices == {device}
    assert out.device.type == "cpu" and out.dtype == torch.float32
    expected = run_ksampler(samplers_registry, device_model("cpu"), cond, sampler)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler", ["sa_solver", "sa_solver_pece", "seeds_3"])
def test_stochastic_adams_and_seeds_run_on_the_device(
    samplers_registry, device_model, cond, device, sampler
):
    """Their noise is drawn on the latent's device (ComfyUI's default noise sampler), so only
    the placement and the values' sanity are checked against the CPU run."""
    model = device_model(device)
    out = run_ksampler(samplers_registry, model, cond, sampler)
    assert model.devices == {device}
    assert out.device.type == "cpu" and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_gpu_sde_variant_draws_on_the_latents_device(samplers_registry, device_model, cond, device):
    model = device_model(device)
    out = run_ksampler(samplers_registry, model, cond, "dpmpp_2m_sde_gpu")
    assert model.devices == {device} and torch.isfinite(out).all()
    cpu_tree = run_ksampler(samplers_registry, device_model("cpu"), cond, "dpmpp_2m_sde")
    if device == "cpu":  # the "device" tree is a CPU tree: the same noise, bit for bit
        assert torch.equal(out, cpu_tree)
    else:  # another generator, so other noise (ComfyUI's _gpu samplers differ the same way)
        assert (out - cpu_tree).abs().max() > 1e-2


@torchsde_clamps
@pytest.mark.parametrize("sampler", ["dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_sde_gpu"])
def test_sde_sampler_equals_torchsde_tree_bit_for_bit(
    samplers_registry, device_model, cond, device, sampler, monkeypatch
):
    """The whole run with loom's tree equals the run with torchsde's (ComfyUI's) tree."""
    pytest.importorskip("torchsde")
    ours = run_ksampler(samplers_registry, device_model(device), cond, sampler)
    monkeypatch.setattr(
        loom_samplers.ksampler,
        "SeededNoise",
        functools.partial(SeededNoise, brownian_backend="torchsde"),
    )
    reference = run_ksampler(samplers_registry, device_model(device), cond, sampler)
    assert torch.equal(ours, reference)


@torchsde_clamps
def test_brownian_tree_on_device_equals_torchsde(device):
    """loom's tree built on the device (``cpu=False``) gives torchsde's values bit for bit."""
    pytest.importorskip("torchsde")
    x = torch.zeros(2, 4, 8, 8, device=device)
    sigmas = SCHEDULERS["karras"](DiscreteEps(), 8).to(device)
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    ours = BrownianTreeNoise(x, sigma_min, sigma_max, seed=42, cpu=False, backend="loom")
    reference = BrownianTreeNoise(x, sigma_min, sigma_max, seed=42, cpu=False, backend="torchsde")
    assert ours.trees[0].device.type == device
    queries = []
    for a, b in itertools.pairwise(sigmas[:-1]):  # steps and dpmpp_sde's midpoints
        queries += [(a, b), (a, (a * b).sqrt())]
    for a, b in queries:
        w = ours(a, b)
        assert w.device.type == device and w.shape == x.shape
        assert torch.equal(w, reference(a, b)), (float(a), float(b))


def test_ancestral_step_noise_follows_comfyui_device_rule(device):
    x = torch.zeros(1, 4, 8, 8, device=device)
    draw = SeededNoise(7).sampler(x)
    seed = 7 + 1 if device == "cpu" else 7
    generator = torch.Generator(device=device).manual_seed(seed)
    first = draw(torch.tensor(2.0), torch.tensor(1.0))
    assert first.device.type == device
    assert torch.equal(first, torch.randn(x.shape, device=device, generator=generator))
    assert torch.equal(draw(1.0, 0.5), torch.randn(x.shape, device=device, generator=generator))
