"""Sigma schedules against k-diffusion and against formulas written out independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from loom_samplers import schedulers
from loom_samplers.schedulers import SCHEDULERS

from loom.model_sampling import DiscreteEps, FlowMatching


def _table() -> np.ndarray:
    """SD's scaled-linear DDPM sigmas, float64, from scratch."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas = np.cumprod(1 - betas)
    return np.sqrt((1 - alphas) / alphas)


def _sigma_at(t: float, table: np.ndarray) -> float:
    """Log-linear interpolation of the table at a fractional timestep."""
    logs = np.log(table)
    low, high = math.floor(t), math.ceil(t)
    w = t - low
    return float(np.exp((1 - w) * logs[low] + w * logs[high]))


def _close(got: torch.Tensor, expected, rtol: float = 1e-5) -> None:
    expected = torch.tensor(np.asarray(expected, dtype=np.float64), dtype=torch.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert torch.allclose(got.double(), expected, rtol=rtol, atol=1e-6), (got, expected)


def test_samplers_scheduler_names_are_comfyuis_in_order():
    assert list(SCHEDULERS) == [
        "simple",
        "sgm_uniform",
        "karras",
        "exponential",
        "ddim_uniform",
        "beta",
        "normal",
        "linear_quadratic",
        "kl_optimal",
    ]


@pytest.mark.parametrize("steps", [1, 5, 20, 33])
def test_samplers_karras_and_exponential_match_k_diffusion(kdiff, steps):
    ms = DiscreteEps()
    lo, hi = float(ms.sigma_min), float(ms.sigma_max)
    assert torch.equal(SCHEDULERS["karras"](ms, steps), kdiff.get_sigmas_karras(steps, lo, hi))
    assert torch.equal(
        SCHEDULERS["exponential"](ms, steps), kdiff.get_sigmas_exponential(steps, lo, hi)
    )
    assert torch.allclose(
        schedulers.polyexponential_sigmas(steps, lo, hi, 2.0),
        kdiff.get_sigmas_polyexponential(steps, lo, hi, 2.0),
    )


@pytest.mark.parametrize("steps", [1, 4, 20, 30])
def test_samplers_simple_normal_sgm_ddim(steps):
    ms, table = DiscreteEps(), _table()
    _close(
        SCHEDULERS["simple"](ms, steps),
        [table[999 - int(i * 1000 / steps)] for i in range(steps)] + [0.0],
    )
    normal_ts = np.linspace(999, 0, steps) if steps > 1 else np.array([999.0])
    _close(SCHEDULERS["normal"](ms, steps), [_sigma_at(t, table) for t in normal_ts] + [0.0])
    sgm_ts = np.linspace(999, 0, steps + 1)[:-1]
    _close(SCHEDULERS["sgm_uniform"](ms, steps), [_sigma_at(t, table) for t in sgm_ts] + [0.0])
    stride = 1000 // steps
    ddim = [*[table[i] for i in range(1, 1000, stride)][::-1], 0.0]
    _close(SCHEDULERS["ddim_uniform"](ms, steps), ddim)


@pytest.mark.parametrize("steps", [3, 10, 25])
def test_samplers_beta_schedule(steps):
    from scipy.special import betaincinv

    ms, table = DiscreteEps(), _table()
    quantiles = 1 - np.arange(steps) / steps
    ts = np.rint(np.array([betaincinv(0.6, 0.6, q) for q in quantiles]) * 999)
    expected, last = [], None
    for t in ts:
        if t != last:
            expected.append(table[int(t)])
        last = t
    _close(SCHEDULERS["beta"](ms, steps), [*expected, 0.0])


def test_samplers_kl_optimal_and_linear_quadratic():
    ms = DiscreteEps()
    lo, hi = float(ms.sigma_min), float(ms.sigma_max)
    n = 8
    expected = [
        math.tan((i / (n - 1)) * math.atan(lo) + (1 - i / (n - 1)) * math.atan(hi))
        for i in range(n)
    ]
    _close(SCHEDULERS["kl_optimal"](ms, n), [*expected, 0.0], rtol=1e-5)
    flow = FlowMatching(shift=1.0)
    got = SCHEDULERS["linear_quadratic"](flow, 10)
    assert got.shape == (11,) and float(got[0]) == pytest.approx(1.0) and float(got[-1]) == 0.0
    assert torch.all(got[:-1] > got[1:])
    # the first half is linear, from 1 down by threshold/linear_steps each step
    assert torch.allclose(got[:5], torch.tensor([1 - i * 0.025 / 5 for i in range(5)]))


def test_samplers_flow_schedules_end_at_zero():
    flow = FlowMatching(shift=3.0)
    for name in ("simple", "normal", "sgm_uniform", "karras", "beta", "kl_optimal"):
        sig = SCHEDULERS[name](flow, 12)
        assert float(sig[-1]) == 0.0 and float(sig[0]) <= 1.0 + 1e-6, name


def _comfy_log_sigmas() -> torch.Tensor:
    """ComfyUI's ``log_sigmas``: the log of the float64 sigmas, then cast to float32."""
    return torch.from_numpy(np.log(_table())).float()


@pytest.mark.parametrize("steps", [4, 7, 20])
def test_samplers_normal_and_sgm_use_the_float64_log_sigma_table(steps):
    # ComfyUI interpolates float32 log sigmas taken from the float64 table; the float32 log of
    # the float32 sigmas is one ulp off in 399 entries and moves these schedules.
    ms, logs = DiscreteEps(), _comfy_log_sigmas()
    assert torch.equal(ms.log_sigmas, logs)

    def comfy_sigma(t: float) -> float:
        low, high = math.floor(t), math.ceil(t)
        w = torch.tensor(t - low, dtype=torch.float32)
        return float(((1 - w) * logs[low] + w * logs[high]).exp())

    normal_ts = torch.linspace(999, 0, steps)
    sgm_ts = torch.linspace(999, 0, steps + 1)[:-1]
    assert SCHEDULERS["normal"](ms, steps).tolist() == [
        *[comfy_sigma(float(t)) for t in normal_ts],
        0.0,
    ]
    assert SCHEDULERS["sgm_uniform"](ms, steps).tolist() == [
        *[comfy_sigma(float(t)) for t in sgm_ts],
        0.0,
    ]


def test_samplers_seven_step_normal_schedule_looks_up_comfyuis_timesteps():
    # uni_pc / dpm_2 at 6 steps schedule 7 normal steps; t = 832.5 lies half-way in log σ,
    # and the model is called at ComfyUI's timestep 833 (832 with float32 logs).
    ms = DiscreteEps()
    sigmas = SCHEDULERS["normal"](ms, 7)
    assert ms.timestep(sigmas[1]).item() == 833
    logs = _comfy_log_sigmas()
    expected = [int((s.log() - logs).abs().argmin()) for s in sigmas[:-1]]
    assert ms.timestep(sigmas[:-1]).tolist() == expected
