"""UniPC as ComfyUI runs it (wl-zhao/UniPC in VP form), two steps written out by hand.

ComfyUI feeds UniPC the VP-scaled latent ``x/√(1+σ₀²)``, time ``t = σ``, ``α = 1/√(1+σ²)``,
``σ_vp = σ α``, ``λ = -log σ``, x0 = D(x_vp/α, σ); a final sigma of 0 becomes 0.001, and the
result is divided by α(0.001). With sigmas (σ₀, σ₁, 0) the order is 1: step 1 is the DPM-Solver
step plus the UniC-1 corrector (ρ = ½ on the new x0), step 2 a plain step to 0.001.
"""

from __future__ import annotations

import pytest
import torch
from loom_samplers.noise import SeededNoise
from loom_samplers.samplers import SAMPLERS


def _denoiser(m):
    calls = []

    def denoise(x, sigma):
        calls.append(float(sigma[0]))
        s2 = float(sigma[0]) ** 2
        return x / (1 + s2) + s2 / (1 + s2) * m

    return denoise, calls


@pytest.mark.parametrize("variant", ["uni_pc", "uni_pc_bh2"])
def test_samplers_uni_pc_two_steps_by_hand(variant):
    torch.manual_seed(4)
    m = torch.randn(1, 2, 3, 3)
    x = torch.randn(1, 2, 3, 3) * 3.0
    s0, s1, s_end = 3.0, 0.8, 0.001
    denoiser, calls = _denoiser(m)
    got = SAMPLERS[variant](denoiser, x.clone(), torch.tensor([s0, s1, 0.0]), noise=SeededNoise(0))

    # ComfyUI's SigmaConvert, in float32: λ and σ_vp come from log α, so for σ = 0.001 they
    # carry float32's cancellation in 1 - α² (part of ComfyUI's result, reproduced here).
    def log_alpha(s):
        s = torch.tensor(s, dtype=torch.float32)
        return 0.5 * torch.log(1 / (s * s + 1))

    def alpha(s):
        return log_alpha(s).exp()

    def std(s):
        return (1 - (2 * log_alpha(s)).exp()).sqrt()

    def lam(s):
        return log_alpha(s) - 0.5 * (1 - (2 * log_alpha(s)).exp()).log()

    def x0(x_vp, s):
        return denoiser(x_vp / alpha(s), torch.tensor([s]))

    def step(x_vp, model_prev, s_from, s_to):
        h = lam(s_to) - lam(s_from)
        return std(s_to) / std(s_from) * x_vp - alpha(s_to) * torch.expm1(-h) * model_prev, h

    x_vp = x / torch.tensor(1 + s0 * s0).sqrt()
    m0 = x0(x_vp, s0)
    pred, h = step(x_vp, m0, s0, s1)
    b_h = -h if variant == "uni_pc" else torch.expm1(-h)
    m1 = x0(pred, s1)
    x1 = pred - alpha(s1) * b_h * 0.5 * (m1 - m0)
    x2, _ = step(x1, m1, s1, s_end)
    expected = x2 / alpha(s_end)
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-6)
    # two model calls by the sampler, two by the hand computation
    assert calls == pytest.approx([s0, s1, s0, s1])
