"""GITSScheduler: ComfyUI 0.8's /object_info entry, the published GITS schedules it serves
(stretched past 20 steps, cut by denoise) and a clear error for a coefficient with no table."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from loom_samplers.gits_schedules import GRID_SIGMAS, SCHEDULES

import loom
from loom.executor.context import InterruptFlag, RunContext
from loom.nodes.object_info import to_json


def _gits(registry, coeff=1.20, steps=10, denoise=1.0) -> torch.Tensor:
    node = registry.get_node("GITSScheduler")
    ctx = RunContext(
        node_id="7",
        prompt_id="p",
        prompt={},
        extra_data={},
        runtime=type("Runtime", (), {"registry": registry})(),
        interrupt=InterruptFlag(),
    )
    inputs = {"coeff": coeff, "steps": steps, "denoise": denoise}
    return node.impl.execute(node.impl.create(), inputs, ctx).values[0]


def test_gits_object_info_is_comfyui_0_8s(samplers_registry):
    entry = to_json(samplers_registry.get_node("GITSScheduler"), samplers_registry)
    assert entry["input"] == {
        "required": {
            "coeff": ["FLOAT", {"default": 1.2, "min": 0.8, "max": 1.5, "step": 0.05}],
            "steps": ["INT", {"default": 10, "min": 2, "max": 1000}],
            "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}],
        }
    }
    assert entry["output"] == ["SIGMAS"]
    assert entry["python_module"] == "comfy_extras.nodes_gits"
    assert entry["category"] == "sampling/custom_sampling/schedulers"
    assert entry["description"] == ""


# Published schedules (stable-diffusion.cpp's copy of the GITS tables), as ComfyUI returns them.
COEFF_1_20_STEPS_10 = [
    14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.50118381,
    0.32104823, 0.19894916, 0.09824532, 0.0,
]  # fmt: skip
COEFF_0_85_STEPS_4 = [14.61464119, 11.54541874, 6.77309084, 1.56271636, 0.0]


def test_gits_returns_the_published_schedule_with_a_final_zero(samplers_registry):
    assert torch.equal(_gits(samplers_registry), torch.tensor(COEFF_1_20_STEPS_10))
    assert torch.equal(
        _gits(samplers_registry, coeff=0.85, steps=4), torch.tensor(COEFF_0_85_STEPS_4)
    )
    # The frontend's float steps arrive as 1.2000000000000002 and similar: rounded to 2 places.
    assert torch.equal(_gits(samplers_registry, coeff=0.1 * 12), _gits(samplers_registry))


def test_gits_past_20_steps_stretches_the_20_step_schedule_in_log_sigma(samplers_registry):
    published = _gits(samplers_registry, coeff=1.0, steps=20)[:-1].tolist()
    published.append(GRID_SIGMAS[0])
    stretched = _gits(samplers_registry, coeff=1.0, steps=40)
    assert stretched.shape == (41,) and stretched[-1] == 0.0
    # 41 points over 21: every other one is a published level, the rest their geometric means.
    assert torch.allclose(stretched[:-1:2], torch.tensor(published[:-1]), rtol=1e-6)
    means = [math.sqrt(a * b) for a, b in itertools.pairwise(published)]
    assert torch.allclose(stretched[1::2], torch.tensor(means), rtol=1e-6)


def test_gits_denoise_keeps_the_last_steps(samplers_registry):
    # round(10 · 0.5) = 5 steps: the schedule's last six levels.
    assert torch.equal(
        _gits(samplers_registry, denoise=0.5), torch.tensor(COEFF_1_20_STEPS_10[-6:])
    )
    assert _gits(samplers_registry, denoise=0.0).shape == (0,)


def test_every_gits_schedule_is_a_descent_over_the_sd1_timestep_grid():
    assert list(SCHEDULES) == [round(0.80 + 0.05 * i, 2) for i in range(15)]
    for coeff, rows in SCHEDULES.items():
        assert len(rows) == 19, coeff
        for steps, row in enumerate(rows, start=2):
            assert len(row) == steps + 1, (coeff, steps)
            assert row[0] == 100 and row[-1] == 0, (coeff, steps)
            assert all(a > b for a, b in itertools.pairwise(row)), (coeff, steps)
            assert all(k in GRID_SIGMAS for k in row), (coeff, steps)


def test_gits_grid_sigmas_are_sd1s_sigmas_at_timesteps_9_99_k():
    """Each published level is SD1.x's σ at timestep 9.99·k, log-σ interpolated between the
    1000 discrete timesteps: a typo in the table would break this."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    log_sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().log()
    for k, sigma in GRID_SIGMAS.items():
        t = 9.99 * k
        low = min(int(t), 998)
        w = t - low
        expected = math.exp((1 - w) * log_sigmas[low] + w * log_sigmas[low + 1])
        assert sigma == pytest.approx(expected, rel=1e-6, abs=3e-6), k


def test_gits_coefficient_without_a_table_names_the_input(samplers_registry):
    with pytest.raises(loom.NodeInputError, match=r"coeff 0\.83 has no GITS schedule") as caught:
        _gits(samplers_registry, coeff=0.83)
    assert caught.value.inputs == ("coeff",) and "0.80, 0.85" in str(caught.value)
