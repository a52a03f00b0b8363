"""DPM-Solver with fixed (``dpm_fast``) and adaptive (``dpm_adaptive``) step sizes.

Lu, Zhou, Bao, Chen, Li, Zhu (2022), "DPM-Solver: A Fast ODE Solver for Diffusion
Probabilistic Model Sampling in Around 10 Steps", arXiv:2206.00927 — Algorithms 1–5 (noise
prediction, time t = -log σ). These ignore the sigma schedule except for its two ends, as in
ComfyUI: ``sigma_max = sigmas[0]`` and ``sigma_min`` the last non-zero sigma.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from loom.types import Step
from loom_samplers.samplers.base import ancestral_step

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSampler, NoiseSource, StepCallback


def _torch() -> Any:
    import torch

    return torch


class PIDStepSizeController:
    """A PID controller for ODE adaptive step size control (Söderlind 2003)."""

    def __init__(
        self,
        h: float,
        pcoeff: float,
        icoeff: float,
        dcoeff: float,
        order: float = 1,
        accept_safety: float = 0.81,
        eps: float = 1e-8,
    ) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: Any) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


class DPMSolver:
    """DPM-Solver-1/2/3 steps in t = -log σ over a denoiser D(x; σ)."""

    def __init__(self, denoiser: Denoiser, on_step: StepCallback | None) -> None:
        self.denoiser = denoiser
        self.on_step = on_step

    @staticmethod
    def t(sigma: Tensor) -> Tensor:
        return sigma.log().neg()

    @staticmethod
    def sigma(t: Tensor) -> Tensor:
        return t.neg().exp()

    def eps(self, cache: dict[str, Tensor], key: str, x: Tensor, t: Tensor) -> Tensor:
        if key not in cache:
            sigma = self.sigma(t) * x.new_ones([x.shape[0]])
            cache[key] = (x - self.denoiser(x, sigma)) / self.sigma(t)
        return cache[key]

    def step_1(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        return x - self.sigma(t_next) * h.expm1() * eps

    def step_2(
        self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict, r1: float = 1 / 2
    ) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return (
            x
            - self.sigma(t_next) * h.expm1() * eps
            - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        )

    def step_3(
        self,
        x: Tensor,
        t: Tensor,
        t_next: Tensor,
        cache: dict,
        r1: float = 1 / 3,
        r2: float = 2 / 3,
    ) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - self.sigma(s2) * (r2 * h).expm1() * eps
            - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return (
            x
            - self.sigma(t_next) * h.expm1() * eps
            - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        )

    def _report(self, i: int, x: Tensor, t: Tensor, cache: dict) -> None:
        if self.on_step is not None:
            denoised = x - self.sigma(t) * cache["eps"]
            self.on_step(Step(i, x, self.sigma(t), self.sigma(t), denoised))

    def fast(
        self,
        x: Tensor,
        t_start: Tensor,
        t_end: Tensor,
        nfe: int,
        eta: float,
        s_noise: float,
        draw: NoiseSampler,
    ) -> Tensor:
        torch = _torch()
        if not t_end > t_start and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            cache: dict[str, Tensor] = {}
            t, t_next = ts[i], ts[i + 1]
            if eta:
                sd, _ = ancestral_step(self.sigma(t), self.sigma(t_next), eta)
                t_next_ = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t_next) ** 2 - self.sigma(t_next_) ** 2) ** 0.5
            else:
                t_next_, su = t_next, 0.0
            self.eps(cache, "eps", x, t)
            self._report(i, x, t, cache)
            step = {1: self.step_1, 2: self.step_2}.get(order, self.step_3)
            x = step(x, t, t_next_, cache)
            x = x + su * s_noise * draw(self.sigma(t), self.sigma(t_next))
        return x

    def adaptive(
        self,
        x: Tensor,
        t_start: Tensor,
        t_end: Tensor,
        draw: NoiseSampler,
        *,
        order: int = 3,
        rtol: float = 0.05,
        atol: float = 0.0078,
        h_init: float = 0.05,
        pcoeff: float = 0.0,
        icoeff: float = 1.0,
        dcoeff: float = 0.0,
        accept_safety: float = 0.81,
        eta: float = 0.0,
        s_noise: float = 1.0,
    ) -> Tensor:
        torch = _torch()
        if order not in {2, 3}:
            raise ValueError("order should be 2 or 3")
        forward = t_end > t_start
        if not forward and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        h_init = abs(h_init) * (1 if forward else -1)
        atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
        s = t_start
        x_prev = x
        pid = PIDStepSizeController(
            h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety
        )
        steps = 0
        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            cache: dict[str, Tensor] = {}
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            if eta:
                sd, _ = ancestral_step(self.sigma(s), self.sigma(t), eta)
                t_ = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t) ** 2 - self.sigma(t_) ** 2) ** 0.5
            else:
                t_, su = t, 0.0
            self.eps(cache, "eps", x, s)
            denoised_at = s
            if order == 2:
                x_low = self.step_1(x, s, t_, cache)
                x_high = self.step_2(x, s, t_, cache)
            else:
                x_low = self.step_2(x, s, t_, cache, r1=1 / 3)
                x_high = self.step_3(x, s, t_, cache)
            delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev = x_low
                x_before = x
                x = x_high + su * s_noise * draw(self.sigma(s), self.sigma(t))
                s = t
                if self.on_step is not None:
                    denoised = x_before - self.sigma(denoised_at) * cache["eps"]
                    self.on_step(Step(steps, x, self.sigma(s), self.sigma(s), denoised))
            steps += 1
        return x


def _sigma_ends(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    sigma_min = sigmas[-1] if not float(sigmas[-1]) == 0.0 else sigmas[-2]
    if float(sigma_min) <= 0 or float(sigmas[0]) <= 0:
        raise ValueError("sigma_min and sigma_max must not be 0")
    return sigma_min, sigmas[0]


def dpm_fast(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver-Fast: orders 3,3,…,2/1 on a uniform grid in t; ``len(sigmas)-1`` evaluations."""
    if len(sigmas) <= 1:
        return x
    torch = _torch()
    sigma_min, sigma_max = _sigma_ends(sigmas)
    solver = DPMSolver(denoiser, on_step)
    t_start = solver.t(torch.as_tensor(sigma_max))
    t_end = solver.t(torch.as_tensor(sigma_min))
    return solver.fast(x, t_start, t_end, len(sigmas) - 1, eta, s_noise, noise.sampler(x))


def dpm_adaptive(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    **options: Any,
) -> Tensor:
    """DPM-Solver-12/23 with PID-controlled adaptive steps (the schedule's length is ignored)."""
    if len(sigmas) <= 1:
        return x
    torch = _torch()
    sigma_min, sigma_max = _sigma_ends(sigmas)
    solver = DPMSolver(denoiser, on_step)
    t_start = solver.t(torch.as_tensor(sigma_max))
    t_end = solver.t(torch.as_tensor(sigma_min))
    return solver.adaptive(x, t_start, t_end, noise.sampler(x), **options)
