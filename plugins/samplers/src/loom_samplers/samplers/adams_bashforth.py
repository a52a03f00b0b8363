"""Adams–Bashforth multistep in σ: iPNDM, iPNDM-v and DEIS.

Each step combines the current derivative ``(x - x0)/σ`` with the previous ones kept in a
buffer (orders 1–4, lower while the buffer fills).

* iPNDM / iPNDM-v: Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential
  Integrator", arXiv:2204.13902, as in zju-pi/diff-sampler (Apache-2.0).
* DEIS: same paper, the "tab" coefficients (:mod:`.deis`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom_samplers.samplers.base import is_zero, ones_batch, report

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSource, StepCallback


def _push(buffer: list[Tensor], value: Tensor, max_order: int) -> None:
    buffer.append(value)
    if len(buffer) > max_order - 1:
        buffer.pop(0)


def ipndm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    max_order: int = 4,
) -> Tensor:
    """Improved PNDM: Adams–Bashforth with fixed coefficients (orders 1–4) in σ."""
    s_in = ones_batch(x)
    buffer: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur * s_in)
        report(on_step, i, x, t_cur, denoised)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        x_cur = x
        if is_zero(t_next):
            x = denoised
        elif order == 1:
            x = x_cur + (t_next - t_cur) * d_cur
        elif order == 2:
            x = x_cur + (t_next - t_cur) * (3 * d_cur - buffer[-1]) / 2
        elif order == 3:
            x = x_cur + (t_next - t_cur) * (23 * d_cur - 16 * buffer[-1] + 5 * buffer[-2]) / 12
        else:
            x = (
                x_cur
                + (t_next - t_cur)
                * (55 * d_cur - 59 * buffer[-1] + 37 * buffer[-2] - 9 * buffer[-3])
                / 24
            )
        _push(buffer, d_cur, max_order)
    return x


def _ipndm_v_coefficients(order: int, sigmas: Tensor, i: int) -> list[Any]:
    """Variable-step iPNDM coefficients for the current and previous derivatives."""
    h_n = sigmas[i + 1] - sigmas[i]
    h_n_1 = sigmas[i] - sigmas[i - 1]
    if order == 2:
        return [(2 + h_n / h_n_1) / 2, -(h_n / h_n_1) / 2]
    h_n_2 = sigmas[i - 1] - sigmas[i - 2]
    temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        return [
            (2 + h_n / h_n_1) / 2 + temp1,
            -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1,
            temp1 * h_n_1 / h_n_2,
        ]
    h_n_3 = sigmas[i - 2] - sigmas[i - 3]
    temp2 = (
        (
            (1 - h_n / (3 * (h_n + h_n_1))) / 2
            + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))
        )
        * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
        / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
    )
    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    return [
        (2 + h_n / h_n_1) / 2 + temp1 + temp2,
        -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + h_n_1 / h_n_2 + ratio) * temp2,
        temp1 * h_n_1 / h_n_2 + (h_n_1 / h_n_2 + ratio * (1 + h_n_2 / h_n_3)) * temp2,
        -temp2 * ratio * h_n_1 / h_n_2,
    ]


def ipndm_v(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    max_order: int = 4,
) -> Tensor:
    """iPNDM with variable-step coefficients (orders 1–4) in σ."""
    s_in = ones_batch(x)
    buffer: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur * s_in)
        report(on_step, i, x, t_cur, denoised)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if is_zero(t_next):
            x = denoised
        elif order == 1:
            x = x + (t_next - t_cur) * d_cur
        else:
            coeffs = _ipndm_v_coefficients(order, sigmas, i)
            total = coeffs[0] * d_cur
            for k, c in enumerate(coeffs[1:], start=1):
                total = total + c * buffer[-k]
            x = x + (t_next - t_cur) * total
        _push(buffer, d_cur, max_order)
    return x


def deis(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
    max_order: int = 3,
    deis_mode: str = "tab",
) -> Tensor:
    """DEIS multistep (orders 1–4) with integrated Lagrange coefficients."""
    from loom_samplers.samplers.deis import deis_coefficients

    s_in = ones_batch(x)
    coeff_list = deis_coefficients(sigmas, max_order, deis_mode=deis_mode)
    buffer: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur * s_in)
        report(on_step, i, x, t_cur, denoised)
        d_cur = (x - denoised) / t_cur
        order = 1 if float(t_next) <= 0 else min(max_order, i + 1)
        if order == 1:
            x = x + (t_next - t_cur) * d_cur
        else:
            coeffs = coeff_list[i]
            total = x + coeffs[0] * d_cur
            for k, c in enumerate(coeffs[1:], start=1):
                total = total + c * buffer[-k]
            x = total
        _push(buffer, d_cur, max_order)
    return x
