"""UniPC: Zhao, Bai, Rao, Zhou, Lu (2023), "UniPC: A Unified Predictor-Corrector Framework for
Fast Sampling of Diffusion Models", arXiv:2302.04867 (wl-zhao/UniPC, as run by ComfyUI).

Multistep data-prediction UniP-p / UniC-p with B(h) = h (``bh1``) or eᴴ - 1 (``bh2``), order
min(3, steps - 1), lower orders near the end, no corrector on the final step. Time is σ
itself (VP-scaled latents, λ = -log σ); a final sigma of 0 is replaced by 0.001, as in ComfyUI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom.types import Step

if TYPE_CHECKING:
    from torch import Tensor

    from loom.types import Denoiser, NoiseSource, StepCallback


def _torch() -> Any:
    import torch

    return torch


def _alpha(sigma: Tensor) -> Tensor:
    return (0.5 * (1 / (sigma * sigma + 1)).log()).exp()


def _std(sigma: Tensor) -> Tensor:
    return (1.0 - (2.0 * 0.5 * (1 / (sigma * sigma + 1)).log()).exp()).sqrt()


def _lambda(sigma: Tensor) -> Tensor:
    log_mean = 0.5 * (1 / (sigma * sigma + 1)).log()
    return log_mean - 0.5 * (1.0 - (2.0 * log_mean).exp()).log()


def _expand(v: Tensor, ndim: int) -> Tensor:
    return v[(...,) + (None,) * (ndim - 1)]


class _UniPC:
    def __init__(self, denoiser: Denoiser, variant: str) -> None:
        self.denoiser = denoiser
        self.variant = variant

    def data_prediction(self, x: Tensor, t: Tensor) -> Tensor:
        """x0 from the VP-scaled latent, through the noise prediction as in ComfyUI."""
        sigma = _expand(t, x.ndim)
        x_in = x * ((sigma**2 + 1.0) ** 0.5)
        eps = (x_in - self.denoiser(x_in, t)) / sigma
        return (x - _expand(_std(t), x.ndim) * eps) / _expand(_alpha(t), x.ndim)

    def update(
        self,
        x: Tensor,
        models: list[Tensor],
        ts: list[Tensor],
        t: Tensor,
        order: int,
        use_corrector: bool,
    ) -> tuple[Tensor, Tensor | None]:
        torch = _torch()
        ndim = x.ndim
        t_prev_0, model_prev_0 = ts[-1], models[-1]
        lambda_prev_0, lambda_t = _lambda(t_prev_0), _lambda(t)
        sigma_prev_0, sigma_t = _std(t_prev_0), _std(t)
        alpha_t = _alpha(t)
        h = lambda_t - lambda_prev_0
        rks, d1s = [], []
        for i in range(1, order):
            rk = ((_lambda(ts[-(i + 1)]) - lambda_prev_0) / h)[0]
            rks.append(rk)
            d1s.append((models[-(i + 1)] - model_prev_0) / rk)
        rks.append(1.0)
        rks_t = torch.tensor(rks, device=x.device)
        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial = 1
        if self.variant == "bh1":
            b_h = hh
        elif self.variant == "bh2":
            b_h = torch.expm1(hh)
        else:
            raise ValueError(f"unknown UniPC variant {self.variant!r}")
        rows, b = [], []
        for i in range(1, order + 1):
            rows.append(torch.pow(rks_t, i - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r_mat = torch.stack(rows)
        b_t = torch.tensor(b, device=x.device)
        d1s_t = torch.stack(d1s, dim=1) if d1s else None
        if d1s_t is not None:
            rhos_p = (
                torch.tensor([0.5], device=x.device)
                if order == 2
                else torch.linalg.solve(r_mat[:-1, :-1], b_t[:-1])
            )
        if use_corrector:
            rhos_c = (
                torch.tensor([0.5], device=x.device)
                if order == 1
                else torch.linalg.solve(r_mat, b_t)
            )
        x_t_ = (
            _expand(sigma_t / sigma_prev_0, ndim) * x
            - _expand(alpha_t * h_phi_1, ndim) * model_prev_0
        )
        pred_res: Any = torch.einsum("k,bk...->b...", rhos_p, d1s_t) if d1s_t is not None else 0
        x_t = x_t_ - _expand(alpha_t * b_h, ndim) * pred_res
        model_t = None
        if use_corrector:
            model_t = self.data_prediction(x_t, t)
            corr_res: Any = (
                torch.einsum("k,bk...->b...", rhos_c[:-1], d1s_t) if d1s_t is not None else 0
            )
            x_t = x_t_ - _expand(alpha_t * b_h, ndim) * (
                corr_res + rhos_c[-1] * (model_t - model_prev_0)
            )
        return x_t, model_t


def _sample(
    denoiser: Denoiser, x: Tensor, sigmas: Tensor, on_step: StepCallback | None, variant: str
) -> Tensor:
    timesteps = sigmas.clone()
    if float(sigmas[-1]) == 0.0:
        timesteps[-1] = 0.001
    x = x / (1.0 + timesteps[0] ** 2.0).sqrt()
    order = min(3, len(timesteps) - 2)
    steps = len(timesteps) - 1
    if steps < max(order, 1) or order < 1:
        raise ValueError("uni_pc needs at least 2 steps")
    solver = _UniPC(denoiser, variant)
    batch = x.shape[0]
    models: list[Tensor] = []
    ts: list[Tensor] = []
    for step_index in range(steps):
        if step_index == 0:
            vec_t = timesteps[0].expand(batch)
            models, ts = [solver.data_prediction(x, vec_t)], [vec_t]
        elif step_index < order:
            vec_t = timesteps[step_index].expand(batch)
            x, model_x = solver.update(x, models, ts, vec_t, step_index, use_corrector=True)
            models.append(model_x if model_x is not None else solver.data_prediction(x, vec_t))
            ts.append(vec_t)
        else:
            last = step_index + (1 if step_index == steps - 1 else 0)
            for step in range(step_index, last + 1):
                vec_t = timesteps[step].expand(batch)
                step_order = min(order, steps + 1 - step)
                x, model_x = solver.update(
                    x, models, ts, vec_t, step_order, use_corrector=step != steps
                )
                for i in range(order - 1):
                    ts[i], models[i] = ts[i + 1], models[i + 1]
                ts[-1] = vec_t
                if step < steps:
                    models[-1] = (
                        model_x if model_x is not None else solver.data_prediction(x, vec_t)
                    )
        if on_step is not None:
            on_step(Step(step_index, x, timesteps[step_index], timesteps[step_index], models[-1]))
    return x / _alpha(timesteps[-1])


def uni_pc(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
) -> Tensor:
    """UniPC multistep (B(h) = h)."""
    return _sample(denoiser, x, sigmas, on_step, "bh1")


def uni_pc_bh2(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseSource,
    on_step: StepCallback | None = None,
) -> Tensor:
    """UniPC multistep with B(h) = eʰ - 1 (better for few steps with guidance)."""
    return _sample(denoiser, x, sigmas, on_step, "bh2")
