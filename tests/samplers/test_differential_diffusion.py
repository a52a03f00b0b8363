"""DifferentialDiffusion through KSampler: the per-step mask the sampling run uses, and what it
changes in an inpainting run (the soft-mask region only)."""

from __future__ import annotations

import copy

import pytest
import torch

from loom.executor.context import InterruptFlag, RunContext
from loom.samplers import DenoiseMaskStep


class _Runtime:
    def __init__(self, registry):
        self.registry = registry


def _ctx(registry):
    return RunContext(
        node_id="3",
        prompt_id="p",
        prompt={},
        extra_data={},
        runtime=_Runtime(registry),
        interrupt=InterruptFlag(),
    )


def _run(registry, class_type, **inputs):
    node = registry.get_node(class_type)
    return node.impl.execute(node.impl.create(), inputs, _ctx(registry)).values


@pytest.fixture
def cloning_model(toy_model):
    """The toy MODEL with a real clone (ComfyUI's clone: own options, shared weights)."""

    class Cloning(toy_model):
        def clone(self):
            return copy.copy(self)

    return Cloning


def gradient_mask() -> torch.Tensor:
    """Columns 0..7 of an 8x8 mask: 0, 1/7, ..., 1 (soft in between)."""
    return torch.linspace(0, 1, 8).expand(1, 8, 8).clone()


def hand_threshold(model_sampling, sigmas: torch.Tensor, sigma: float) -> float:
    """ComfyUI's rule, with the timestep lookup spelt out: nearest log-sigma table index."""
    table = model_sampling.log_sigmas

    def timestep(value: float) -> int:
        return int((table - torch.tensor(value).log()).abs().argmin())

    sigma_to = max(float(sigmas[-1]), float(model_sampling.sigma_min))
    ts_from, ts_to = timestep(float(sigmas[0])), timestep(sigma_to)
    return (timestep(sigma) - ts_to) / (ts_from - ts_to)


def _ksampler(registry, model, cond, mask, *, steps=4, denoise=1.0, scheduler="normal"):
    latent = {"samples": torch.full((1, 4, 8, 8), 0.5), "noise_mask": mask}
    (out,) = _run(
        registry,
        "KSampler",
        model=model,
        seed=3,
        steps=steps,
        cfg=1.0,
        sampler_name="euler",
        scheduler=scheduler,
        positive=cond(-1.0),
        negative=cond(0.0),
        latent_image=latent,
        denoise=denoise,
    )
    return out["samples"]


def test_each_step_mask_is_the_thresholded_soft_mask(samplers_registry, cloning_model, cond):
    base = cloning_model()
    (model,) = _run(samplers_registry, "DifferentialDiffusion", model=base, strength=1.0)
    assert model is not base and getattr(base, "denoise_mask_function", None) is None
    rule = model.denoise_mask_function
    seen: list[tuple[DenoiseMaskStep, torch.Tensor]] = []

    def recording(step: DenoiseMaskStep) -> torch.Tensor:
        mask = rule(step)
        seen.append((step, mask))
        return mask

    model.denoise_mask_function = recording
    mask = gradient_mask()
    _ksampler(samplers_registry, model, cond, mask, steps=4, denoise=0.75)
    assert len(seen) == 4  # euler: one model call per step
    sigmas = seen[0][0].sigmas
    assert len(sigmas) == 5 and float(sigmas[-1]) == 0.0
    soft = mask.expand(1, 4, 8, 8)
    for step, used in seen:
        threshold = hand_threshold(base.model_sampling, sigmas, float(step.sigma[0]))
        assert torch.equal(step.denoise_mask, soft)
        assert torch.equal(used, (soft >= threshold).float())
    # the threshold falls from 1 at the first sigma: ever more columns are denoised
    columns = [int(used[0, 0, 0].sum()) for _, used in seen]
    assert columns[0] == 1 and columns == sorted(columns) and columns[-1] > columns[0]


def test_strength_mixes_the_binary_mask_with_the_soft_one(cloning_model):
    from loom.model_sampling import DiscreteEps
    from loom.nodes.builtin.sampling import DifferentialMask

    sampling = DiscreteEps()
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    soft = gradient_mask().expand(1, 4, 8, 8)
    step = DenoiseMaskStep(torch.tensor([5.0]), soft, sigmas, sampling)
    threshold = hand_threshold(sampling, sigmas, 5.0)
    binary = (soft >= threshold).float()
    assert 0 < threshold < 1
    assert torch.equal(DifferentialMask(1.0)(step), binary)
    assert torch.equal(DifferentialMask(0.0)(step), binary)  # ComfyUI: 0 counts as "off"
    assert torch.allclose(DifferentialMask(0.25)(step), 0.25 * binary + 0.75 * soft)


def test_inpaint_changes_only_the_soft_region(samplers_registry, cloning_model, cond):
    # "simple": the last model call is at t = 249, above sigma_min, so its threshold stays
    # above 0 ("normal" ends at sigma_min: threshold 0 there, and every pixel is denoised)
    mask = gradient_mask()
    plain = _ksampler(samplers_registry, cloning_model(), cond, mask, scheduler="simple")
    (model,) = _run(samplers_registry, "DifferentialDiffusion", model=cloning_model())
    differential = _ksampler(samplers_registry, model, cond, mask, scheduler="simple")
    assert torch.equal(plain[..., 7], differential[..., 7])  # mask 1: denoised every step
    assert torch.equal(plain[..., 0], differential[..., 0])  # mask 0: the latent kept
    assert torch.allclose(plain[..., 0], torch.full_like(plain[..., 0], 0.5))
    soft = (plain[..., 1:7] - differential[..., 1:7]).abs().amax(dim=(0, 1, 2))
    assert bool((soft > 1e-3).all()), soft


def test_flow_models_threshold_linearly_in_sigma():
    from loom.model_sampling import FlowMatching
    from loom.nodes.builtin.sampling import DifferentialMask

    sampling = FlowMatching(shift=3.0)
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    soft = gradient_mask().expand(1, 16, 8, 8)
    sigma_to = float(sampling.sigma_min)  # the schedule ends at 0, below sigma_min
    for sigma in (0.75, 0.5, 0.25):
        step = DenoiseMaskStep(torch.tensor([sigma]), soft, sigmas, sampling)
        threshold = (sigma - sigma_to) / (1.0 - sigma_to)  # timestep = 1000 σ cancels out
        assert DifferentialMask().threshold(step).item() == pytest.approx(threshold, rel=1e-5)
        assert torch.equal(DifferentialMask()(step), (soft >= threshold).float())
