"""Sigma schedules by ComfyUI name: ``scheduler(model_sampling, steps) -> sigmas``.

Each returns ``steps + 1`` float32 CPU sigmas, highest first, ending in 0 (``ddim_uniform``,
``normal`` and ``beta`` may differ by one where ComfyUI's do). The order of :data:`SCHEDULERS`
is ComfyUI's ``SCHEDULER_NAMES``.

* ``karras``: Karras et al. (2022), eq. 5, ρ = 7 (arXiv:2206.00364).
* ``exponential``: uniform in log σ.
* ``normal`` / ``sgm_uniform``: uniform in the model's timestep (sgm: ``steps + 1`` points
  with the last dropped, as in Stability's sgm code).
* ``simple``: every ``len(sigmas)/steps``-th sigma of the model's table, from the top.
* ``ddim_uniform``: every ``len(sigmas)//steps``-th sigma from index 1 upwards (DDIM).
* ``beta``: timesteps at the quantiles of a Beta(α, β) distribution, Lee et al. (2024),
  "Beta Sampling is All You Need" (arXiv:2407.12173); needs scipy.
* ``linear_quadratic``: linear then quadratic in flow time (Mochi / Genmo).
* ``kl_optimal``: Sabour, Fidler, Kreis (2024), "Align Your Steps" (arXiv:2404.14507), eq. 25.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from loom.model_sampling import ModelSampling


def _torch() -> Any:
    import torch

    return torch


def _append_zero(x: Tensor) -> Tensor:
    return _torch().cat([x, x.new_zeros([1])])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) schedule: uniform in ``σ^(1/ρ)``."""
    ramp = _torch().linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Uniform in log σ."""
    return _append_zero(_torch().linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Tensor:
    """A polynomial (degree ρ) in log σ."""
    torch = _torch()
    ramp = torch.linspace(1, 0, n) ** rho
    return _append_zero(
        torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    )


def vp_sigmas(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> Tensor:
    """Continuous VP schedule: ``σ(t) = sqrt(expm1(β_d t²/2 + β_min t))`` for t from 1 to eps_s."""
    torch = _torch()
    t = torch.linspace(1, eps_s, n)
    return _append_zero(torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t)))


def laplace_sigmas(
    n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5
) -> Tensor:
    """Laplace schedule (Tiankai et al. 2024): ``log σ`` follows the inverse Laplace CDF of a
    linear ramp, clamped to [σ_min, σ_max]. As in ComfyUI, no final 0 is appended."""
    torch = _torch()
    epsilon = 1e-5  # keeps the log finite at the ramp's ends
    x = torch.linspace(0, 1, n)
    lam = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + epsilon)
    return torch.clamp(torch.exp(lam), min=sigma_min, max=sigma_max)


def kl_optimal_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """``tan`` of a linear ramp between ``atan(σ_max)`` and ``atan(σ_min)``."""
    torch = _torch()
    adj = torch.arange(n, dtype=torch.float).div_(n - 1)
    sigmas = adj.new_zeros(n + 1)
    sigmas[:-1] = (adj * math.atan(sigma_min) + (1 - adj) * math.atan(sigma_max)).tan_()
    return sigmas


def _ends(model_sampling: ModelSampling) -> tuple[float, float]:
    return float(model_sampling.sigma_min), float(model_sampling.sigma_max)


def karras(model_sampling: ModelSampling, steps: int) -> Tensor:
    sigma_min, sigma_max = _ends(model_sampling)
    return karras_sigmas(steps, sigma_min, sigma_max)


def exponential(model_sampling: ModelSampling, steps: int) -> Tensor:
    sigma_min, sigma_max = _ends(model_sampling)
    return exponential_sigmas(steps, sigma_min, sigma_max)


def kl_optimal(model_sampling: ModelSampling, steps: int) -> Tensor:
    sigma_min, sigma_max = _ends(model_sampling)
    return kl_optimal_sigmas(steps, sigma_min, sigma_max)


def simple(model_sampling: ModelSampling, steps: int) -> Tensor:
    table = model_sampling.sigmas
    stride = len(table) / steps
    sigs = [float(table[-(1 + int(x * stride))]) for x in range(steps)]
    return _torch().FloatTensor([*sigs, 0.0])


def ddim_uniform(model_sampling: ModelSampling, steps: int) -> Tensor:
    table = model_sampling.sigmas
    x = 1
    if math.isclose(float(table[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs: list[float] = []
    else:
        sigs = [0.0]
    stride = max(len(table) // steps, 1)
    while x < len(table):
        sigs.append(float(table[x]))
        x += stride
    return _torch().FloatTensor(sigs[::-1])


def normal(model_sampling: ModelSampling, steps: int, sgm: bool = False) -> Tensor:
    torch = _torch()
    start = model_sampling.timestep(model_sampling.sigma_max)
    end = model_sampling.timestep(model_sampling.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(model_sampling.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(model_sampling.sigma(ts)) for ts in timesteps]
    if append_zero:
        sigs.append(0.0)
    return torch.FloatTensor(sigs)


def sgm_uniform(model_sampling: ModelSampling, steps: int) -> Tensor:
    return normal(model_sampling, steps, sgm=True)


def beta(
    model_sampling: ModelSampling, steps: int, alpha: float = 0.6, beta: float = 0.6
) -> Tensor:
    import numpy as np
    from scipy import stats

    total = len(model_sampling.sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(stats.beta.ppf(ts, alpha, beta) * total)
    sigs: list[float] = []
    last_t = -1
    for t in ts:
        if t != last_t:
            sigs.append(float(model_sampling.sigmas[int(t)]))
        last_t = t
    sigs.append(0.0)
    return _torch().FloatTensor(sigs)


def linear_quadratic(
    model_sampling: ModelSampling,
    steps: int,
    threshold_noise: float = 0.025,
    linear_steps: int | None = None,
) -> Tensor:
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quadratic_coef * (linear_steps**2)
        quadratic = [
            quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)
        ]
        schedule = [1.0 - x for x in [*linear, *quadratic, 1.0]]
    return _torch().FloatTensor(schedule) * model_sampling.sigma_max.cpu()


def sd_turbo(model_sampling: ModelSampling, steps: int, denoise: float = 1.0) -> Tensor:
    """SDTurboScheduler: timesteps 999, 899, ... starting where ``denoise`` says."""
    torch = _torch()
    start_step = 10 - int(10 * denoise)
    timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start_step : start_step + steps]
    sigmas = model_sampling.sigma(timesteps)
    return torch.cat([sigmas, sigmas.new_zeros([1])])


SCHEDULERS: dict[str, Any] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}
