"""DEIS coefficients: Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential
Integrator", arXiv:2204.13902, as computed in zju-pi/diff-sampler (Apache-2.0).

The EDM sigmas are mapped to VP times of a linear-β VP-SDE matched at σ = 0.002 and 80; each
step's coefficients are integrals of the exponential-integrator weight times the Lagrange basis
polynomials through the previous times ("tab" mode, Riemann sum over 10 000 points), or
closed-form Adams–Bashforth weights in ρ ("rhoab" mode).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor


def _torch() -> Any:
    import torch

    return torch


def edm_to_vp_time(
    edm_steps: Tensor, epsilon_s: float = 1e-3, sigma_min: float = 0.002, sigma_max: float = 80.0
) -> tuple[Tensor, Tensor, Tensor]:
    """VP times of EDM sigmas, and the VP-SDE's ``beta_0`` and ``beta_1``."""
    torch = _torch()
    log_min = torch.log(torch.tensor(sigma_min) ** 2 + 1)
    log_max = torch.log(torch.tensor(sigma_max) ** 2 + 1)
    beta_d = 2 * (log_min / epsilon_s - log_max) / (epsilon_s - 1)
    beta_min = log_max - 0.5 * beta_d
    sigma = edm_steps.clone().detach().cpu()
    t_steps = ((beta_min**2 + 2 * beta_d * (sigma**2 + 1).log()).sqrt() - beta_min) / beta_d
    return t_steps, beta_min, beta_d + beta_min


def _alpha(beta_0: Tensor, beta_1: Tensor, t: Tensor) -> Tensor:
    return (-0.5 * t**2 * (beta_1 - beta_0) - t * beta_0).exp()


def _integrand(beta_0: Tensor, beta_1: Tensor, taus: Tensor) -> Tensor:
    # d log α / dτ in closed form (diff-sampler differentiates with autograd).
    alpha = _alpha(beta_0, beta_1, taus)
    d_log_alpha = -taus * (beta_1 - beta_0) - beta_0
    return -0.5 * d_log_alpha / (alpha * (1 - alpha)).sqrt()


def _lagrange(prev_t: Tensor, j: int, taus: Tensor) -> Tensor:
    poly: Any = 1
    for k in range(prev_t.shape[0]):
        if k != j:
            poly = poly * (taus - prev_t[k]) / (prev_t[j] - prev_t[k])
    return poly


def deis_coefficients(
    sigmas: Tensor, max_order: int, n_points: int = 10000, deis_mode: str = "tab"
) -> list[list[Any]]:
    """Per-step coefficients ``[c_cur, c_prev1, ...]`` (empty for first-order steps)."""
    torch = _torch()
    if deis_mode == "tab":
        t_steps, beta_0, beta_1 = edm_to_vp_time(sigmas)
        coeffs: list[list[Any]] = []
        for i, (t_cur, t_next) in enumerate(itertools.pairwise(t_steps)):
            order = min(i + 1, max_order)
            if order == 1:
                coeffs.append([])
                continue
            taus = torch.linspace(t_cur, t_next, n_points)
            dtau = (t_next - t_cur) / n_points
            prev_t = t_steps[[i - k for k in range(order)]]
            integrand = _integrand(beta_0, beta_1, taus)
            coeffs.append(
                [torch.sum(integrand * _lagrange(prev_t, j, taus)) * dtau for j in range(order)]
            )
        return [[c.to(sigmas.device) for c in row] for row in coeffs]
    if deis_mode == "rhoab":
        return _rhoab_coefficients(sigmas, max_order)
    raise ValueError(f"unknown deis_mode {deis_mode!r}")


def _rhoab_coefficients(sigmas: Tensor, max_order: int) -> list[list[Any]]:
    """Adams–Bashforth weights with variable steps in ρ = σ (closed form up to order 4)."""
    t = [float(s) for s in sigmas.detach().cpu().double()]
    rows: list[list[Any]] = []
    for i in range(len(t) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            rows.append([])
            continue
        nodes = [t[i - k] for k in range(order)]
        row = []
        for j in range(order):
            row.append(_integrate_basis(nodes, j, t[i], t[i + 1]))
        rows.append([_torch().tensor(c, dtype=sigmas.dtype, device=sigmas.device) for c in row])
    return rows


def _integrate_basis(nodes: list[float], j: int, a: float, b: float) -> float:
    import numpy as np

    poly = np.poly1d([1.0])
    for k, node in enumerate(nodes):
        if k != j:
            poly = poly * np.poly1d([1.0, -node]) / (nodes[j] - node)
    integral = poly.integ()
    result = float(integral(b) - integral(a))
    return result if math.isfinite(result) else 0.0
