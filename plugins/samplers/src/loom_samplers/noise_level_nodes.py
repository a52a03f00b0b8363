"""Schedulers that stretch a published table of noise levels to any step count:
AlignYourStepsScheduler (NVIDIA's Align Your Steps, Sabour et al. 2024),
OptimalStepsScheduler (Optimal Stepsize for Diffusion Sampling, Pei et al. 2025) and
GITSScheduler (Chen et al. 2024's schedules, :mod:`loom_samplers.gits_schedules`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import loom
from loom.types import Sigmas

ui = loom.ui

# The 10-step schedules published at research.nvidia.com/labs/toronto-ai/AlignYourSteps.
ALIGN_YOUR_STEPS: dict[str, tuple[float, ...]] = {
    "SD1": (
        14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
        0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582,
    ),
    "SDXL": (
        14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
        0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582,
    ),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}  # fmt: skip

# The schedules published with OptimalSteps (github.com/bebebe666/OptimalSteps), flow-matching σ.
OPTIMAL_STEPS: dict[str, tuple[float, ...]] = {
    "FLUX": (0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001),
    "Wan": (
        1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96,
        0.946, 0.927, 0.902, 0.864, 0.776, 0.539, 0.208, 0.001,
    ),
    "Chroma": (
        0.992, 0.99, 0.988, 0.985, 0.982, 0.978, 0.973, 0.968, 0.961, 0.953, 0.943, 0.931, 0.917,
        0.9, 0.881, 0.858, 0.832, 0.802, 0.769, 0.731, 0.69, 0.646, 0.599, 0.55, 0.501, 0.451,
        0.402, 0.355, 0.311, 0.27, 0.232, 0.199, 0.169, 0.143, 0.12, 0.101, 0.084, 0.07, 0.058,
        0.048, 0.001,
    ),
}  # fmt: skip


def loglinear_interp(levels: Sequence[float], count: int) -> list[float]:
    """``count`` decreasing levels spread evenly over ``levels``, linear in log σ between them."""
    logs = [math.log(v) for v in reversed(levels)]
    last = len(logs) - 1
    out = []
    for k in range(count):
        x = k / (count - 1) if count > 1 else 0.0
        position = x * last
        j = min(int(position), last - 1) if last > 0 else 0
        if last == 0 or position >= last:
            y = logs[-1]
        else:
            y = (logs[j + 1] - logs[j]) * (position - j) + logs[j]
        out.append(math.exp(y))
    return out[::-1]


def table_sigmas(levels: Sequence[float], steps: int, denoise: float) -> Sigmas:
    """The table stretched to ``steps``; with ``denoise`` < 1 its last ``round(steps·denoise)``
    steps; the final sigma set to 0."""
    import torch

    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total = round(steps * denoise)
    sigmas = list(levels) if steps + 1 == len(levels) else loglinear_interp(levels, steps + 1)
    sigmas = sigmas[-(total + 1) :]
    sigmas[-1] = 0.0
    return torch.FloatTensor(sigmas)


@loom.node("AlignYourStepsScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class AlignYourStepsScheduler:
    model_type: str = ui.combo(list(ALIGN_YOUR_STEPS))
    steps: int = ui.int(10, min=1, max=10000)
    denoise: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        return table_sigmas(ALIGN_YOUR_STEPS[self.model_type], self.steps, self.denoise)


@loom.node("OptimalStepsScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class OptimalStepsScheduler:
    model_type: str = ui.combo(list(OPTIMAL_STEPS))
    steps: int = ui.int(20, min=3, max=1000)
    denoise: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        return table_sigmas(OPTIMAL_STEPS[self.model_type], self.steps, self.denoise)


def gits_levels(coeff: float, steps: int) -> list[float]:
    """The GITS schedule for ``coeff`` with ``steps`` steps (``steps + 1`` levels); past 20 steps
    the 20-step schedule, which :func:`table_sigmas` stretches."""
    from loom_samplers.gits_schedules import GRID_SIGMAS, SCHEDULES

    positions = SCHEDULES[round(coeff, 2)][min(steps, 20) - 2]
    return [GRID_SIGMAS[k] for k in positions]


@loom.node("GITSScheduler", category="sampling/custom_sampling/schedulers", v3=True)
class GITSScheduler:
    # No docstring: ComfyUI's node has no description.
    coeff: float = ui.float(1.20, min=0.80, max=1.50, step=0.05)
    steps: int = ui.int(10, min=2, max=1000)
    denoise: float = ui.float(1.0, min=0.0, max=1.0, step=0.01)

    def run(self, ctx: loom.RunContext) -> Sigmas:
        from loom_samplers.gits_schedules import SCHEDULES

        if round(self.coeff, 2) not in SCHEDULES:
            tabulated = ", ".join(f"{c:.2f}" for c in SCHEDULES)
            raise loom.NodeInputError(
                "GITSScheduler",
                "coeff",
                f"coeff {self.coeff} has no GITS schedule; the tabulated ones are {tabulated}",
            )
        return table_sigmas(gits_levels(self.coeff, self.steps), self.steps, self.denoise)


NODES = [AlignYourStepsScheduler, OptimalStepsScheduler, GITSScheduler]
