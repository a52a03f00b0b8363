"""Each adapter's patched weight equals the hand-computed merge ``W + s * delta``, for
linear and conv weights, applied and reverted through core's ModelHandle + MemoryManager."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loom_lora.adapters.diff import DiffAdapter
from loom_lora.adapters.dora import DoraPatch
from loom_lora.adapters.loha import LohaAdapter, LohaPatch
from loom_lora.adapters.lokr import LokrAdapter, LokrPatch
from loom_lora.adapters.lora import LoraAdapter, LoraPatch

from loom.memory import ModelHandle

ATOL = 1e-5


def g(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + sum(shape)))


def patched(toy, memory, key: str, patch, strength: float) -> torch.Tensor:
    """The weight ``key`` while a handle with ``patch`` is loaded; checks the revert too."""
    original = toy.get_parameter(key)
    before = original.detach().clone()
    handle = ModelHandle(toy)
    assert handle.add_patches({key: patch}, strength) == [key]
    memory.load([handle])
    value = toy.get_parameter(key).detach().clone()
    memory.unload(handle)
    after = toy.get_parameter(key)
    assert after is original  # the same tensor object is put back ...
    assert torch.equal(after.view(torch.int32), before.view(torch.int32))  # ... bitwise
    return value


@pytest.mark.parametrize("strength", [1.0, 0.7, -1.3])
@pytest.mark.parametrize("alpha", [None, 2.0])
def test_lora_linear(toy, memory, strength, alpha):
    up, down = g(6, 4), g(4, 8)
    got = patched(toy, memory, "fc.weight", LoraPatch(up, down, alpha=alpha), strength)
    scale = 1.0 if alpha is None else alpha / 4
    assert torch.allclose(got, toy.fc.weight + strength * scale * (up @ down), atol=ATOL)


def test_lora_conv(toy, memory):
    up, down = g(6, 2, 1, 1), g(2, 4, 3, 3)
    got = patched(toy, memory, "conv.weight", LoraPatch(up, down, alpha=1.0), 0.5)
    x = g(1, 4, 5, 5, seed=9)
    # The merged delta behaves as the two convolutions it stands for.
    expected = F.conv2d(F.conv2d(x, down, padding=1), up) * 0.5 * (1.0 / 2)
    assert torch.allclose(F.conv2d(x, got - toy.conv.weight, padding=1), expected, atol=1e-4)


def test_locon_mid_weight(toy, memory):
    up, mid, down = g(6, 3, 1, 1), g(3, 3, 3, 3), g(3, 4, 1, 1)
    got = patched(toy, memory, "conv.weight", LoraPatch(up, down, mid, alpha=3.0), 1.0)
    x = g(2, 4, 6, 6, seed=3)
    expected = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up)
    assert torch.allclose(F.conv2d(x, got - toy.conv.weight, padding=1), expected, atol=1e-4)


def test_loha_linear(toy, memory):
    w1a, w1b, w2a, w2b = g(6, 2), g(2, 8), g(6, 2, seed=2), g(2, 8, seed=2)
    got = patched(toy, memory, "fc.weight", LohaPatch(w1a, w1b, w2a, w2b, alpha=1.0), 0.8)
    delta = (w1a @ w1b) * (w2a @ w2b) * (1.0 / 2)
    assert torch.allclose(got, toy.fc.weight + 0.8 * delta, atol=ATOL)


def test_loha_conv_tucker(toy, memory):
    r = 2
    t1, t2 = g(r, r, 3, 3), g(r, r, 3, 3, seed=5)
    w1a, w1b, w2a, w2b = g(r, 6), g(r, 4), g(r, 6, seed=7), g(r, 4, seed=7)
    got = patched(toy, memory, "conv.weight", LohaPatch(w1a, w1b, w2a, w2b, t1, t2, 4.0), 1.0)

    def rebuild(t, wa, wb):  # out[p, q, h, w] = sum_ij wa[i, p] t[i, j, h, w] wb[j, q]
        out = torch.zeros(6, 4, 3, 3)
        for i in range(r):
            for j in range(r):
                out += wa[i][:, None, None, None] * wb[j][None, :, None, None] * t[i, j]
        return out

    delta = rebuild(t1, w1a, w1b) * rebuild(t2, w2a, w2b) * (4.0 / r)
    assert torch.allclose(got, toy.conv.weight + delta, atol=1e-4)


def test_lokr_linear_full_factors(toy, memory):
    w1, w2 = g(2, 2), g(3, 4)
    got = patched(toy, memory, "fc.weight", LokrPatch(w1=w1, w2=w2, alpha=8.0), -0.5)
    delta = torch.zeros(6, 8)
    for a in range(2):
        for b in range(2):
            delta[a * 3 : a * 3 + 3, b * 4 : b * 4 + 4] = w1[a, b] * w2
    # alpha is ignored when neither factor is low-rank (ComfyUI's rule).
    assert torch.allclose(got, toy.fc.weight - 0.5 * delta, atol=ATOL)


def test_lokr_linear_factorised(toy, memory):
    w1, w2a, w2b = g(3, 2), g(2, 1), g(1, 4)
    got = patched(toy, memory, "fc.weight", LokrPatch(w1=w1, w2_a=w2a, w2_b=w2b, alpha=0.5), 1.0)
    delta = torch.kron(w1, w2a @ w2b) * (0.5 / 1)
    assert torch.allclose(got, toy.fc.weight + delta, atol=ATOL)


def test_lokr_conv(toy, memory):
    w1, w2 = g(2, 2), g(3, 2, 3, 3)
    got = patched(toy, memory, "conv.weight", LokrPatch(w1=w1, w2=w2), 1.0)
    delta = torch.zeros(6, 4, 3, 3)
    for a in range(2):
        for b in range(2):
            delta[a * 3 : a * 3 + 3, b * 2 : b * 2 + 2] = w1[a, b] * w2
    assert torch.allclose(got, toy.conv.weight + delta, atol=ATOL)


def test_lokr_conv_tucker(toy, memory):
    w1, t2, w2a, w2b = g(2, 2), g(2, 2, 3, 3), g(2, 3), g(2, 2, seed=4)
    got = patched(toy, memory, "conv.weight", LokrPatch(w1=w1, w2_a=w2a, w2_b=w2b, t2=t2), 1.0)
    w2 = torch.zeros(3, 2, 3, 3)  # w2[p, q] = sum_ij w2a[i, p] t2[i, j] w2b[j, q]
    for i in range(2):
        for j in range(2):
            w2 += w2a[i][:, None, None, None] * w2b[j][None, :, None, None] * t2[i, j]
    delta = torch.zeros(6, 4, 3, 3)
    for a in range(2):
        for b in range(2):
            delta[a * 3 : a * 3 + 3, b * 2 : b * 2 + 2] = w1[a, b] * w2
    assert torch.allclose(got, toy.conv.weight + delta, atol=ATOL)


def dora_by_hand(weight, delta, magnitude, strength):
    merged = weight + delta
    out = merged.clone()
    for col in range(weight.shape[1]):
        out[:, col] = merged[:, col] * (magnitude.flatten()[col] / merged[:, col].norm())
    return weight + strength * (out - weight)


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_dora_linear(toy, memory, strength):
    up, down, magnitude = g(6, 2), g(2, 8), g(1, 8).abs() + 0.5
    patch = DoraPatch(LoraPatch(up, down, alpha=1.0), magnitude)
    got = patched(toy, memory, "fc.weight", patch, strength)
    expected = dora_by_hand(toy.fc.weight, up @ down * 0.5, magnitude, strength)
    assert torch.allclose(got, expected, atol=ATOL)


def test_dora_conv(toy, memory):
    up, down, magnitude = g(6, 2, 1, 1), g(2, 4, 3, 3), g(1, 4, 1, 1).abs() + 0.5
    patch = DoraPatch(LoraPatch(up, down), magnitude)
    got = patched(toy, memory, "conv.weight", patch, 1.0)
    delta = (up.flatten(1) @ down.flatten(1)).reshape(6, 4, 3, 3)
    expected = dora_by_hand(toy.conv.weight, delta, magnitude, 1.0)
    assert torch.allclose(got, expected, atol=ATOL)


def test_diff_weight_and_bias(toy, memory):
    diff, diff_b = g(6, 4, 3, 3), g(6)
    patches = DiffAdapter().patches({".diff": diff, ".diff_b": diff_b}, "conv.weight")
    assert set(patches) == {"conv.weight", "conv.bias"}
    got = patched(toy, memory, "conv.weight", patches["conv.weight"], 0.3)
    assert torch.allclose(got, toy.conv.weight + 0.3 * diff, atol=ATOL)
    got_b = patched(toy, memory, "conv.bias", patches["conv.bias"], -2.0)
    assert torch.allclose(got_b, toy.conv.bias - 2.0 * diff_b, atol=ATOL)


def test_set_weight(toy, memory):
    value = g(6, 8)
    [patch] = DiffAdapter().patches({".set_weight": value}, "fc.weight").values()
    assert torch.equal(patched(toy, memory, "fc.weight", patch, 1.0), value)
    half = patched(toy, memory, "fc.weight", patch, 0.5)
    assert torch.allclose(half, (toy.fc.weight + value) / 2, atol=ATOL)


ALL_PATCHES = [
    ("fc.weight", LoraPatch(g(6, 4), g(4, 8), alpha=1.0)),
    ("conv.weight", LoraPatch(g(6, 3, 1, 1), g(3, 4, 1, 1), g(3, 3, 3, 3))),
    ("fc.weight", LohaPatch(g(6, 2), g(2, 8), g(6, 2, seed=3), g(2, 8, seed=3))),
    ("fc.weight", LokrPatch(w1=g(2, 2), w2=g(3, 4))),
    ("fc.weight", DoraPatch(LoraPatch(g(6, 4), g(4, 8)), g(1, 8).abs())),
]


@pytest.mark.parametrize(("key", "patch"), ALL_PATCHES)
def test_strength_zero_is_bitwise_identical(toy, memory, key, patch):
    original = toy.get_parameter(key).detach().clone()
    got = patched(toy, memory, key, patch, 0.0)
    assert torch.equal(got.view(torch.int32), original.view(torch.int32))


@pytest.mark.parametrize(("key", "patch"), ALL_PATCHES)
def test_patches_never_modify_the_weight_in_place(key, patch):
    weight = g(*(6, 8) if key == "fc.weight" else (6, 4, 3, 3), seed=11)
    before = weight.clone()
    out = patch.apply(weight, 0.9)
    assert torch.equal(weight, before) and out.shape == weight.shape and out is not weight


def test_stacked_patches_add_up(toy, memory):
    a, b = LoraPatch(g(6, 2), g(2, 8)), LoraPatch(g(6, 3, seed=8), g(3, 8, seed=8), alpha=1.5)
    handle = ModelHandle(toy)
    handle.add_patches({"fc.weight": a}, 0.5)
    handle.add_patches({"fc.weight": b}, -1.0)
    memory.load([handle])
    got = toy.fc.weight.detach().clone()
    memory.unload(handle)
    expected = toy.fc.weight + 0.5 * (a.up @ a.down) - 1.0 * 0.5 * (b.up @ b.down)
    assert torch.allclose(got, expected, atol=ATOL)


def test_half_precision_weight_is_patched_in_float32_and_cast_back(memory):
    from torch import nn

    layer = nn.Linear(8, 6).half().requires_grad_(False)
    up, down = g(6, 2), g(2, 8)
    handle = ModelHandle(layer)
    handle.add_patches({"weight": LoraPatch(up, down)}, 1.0)
    memory.load([handle])
    got = layer.weight.detach().clone()
    memory.unload(handle)
    assert got.dtype == torch.float16
    assert torch.equal(got, (layer.weight.float() + up @ down).half())


@pytest.mark.parametrize(
    ("adapter", "parts"),
    [
        (LoraAdapter(), {".lora_up.weight": g(6, 2), ".lora_down.weight": g(2, 8)}),
        (LoraAdapter(), {".lora_B.weight": g(6, 2), ".lora_A.weight": g(2, 8)}),
        (LoraAdapter(), {".lora.up.weight": g(6, 2), ".lora.down.weight": g(2, 8)}),
        (LoraAdapter(), {"_lora.up.weight": g(6, 2), "_lora.down.weight": g(2, 8)}),
        (
            LohaAdapter(),
            {
                ".hada_w1_a": g(6, 2),
                ".hada_w1_b": g(2, 8),
                ".hada_w2_a": g(6, 2),
                ".hada_w2_b": g(2, 8),
            },
        ),
        (LokrAdapter(), {".lokr_w1": g(2, 2), ".lokr_w2_a": g(3, 1), ".lokr_w2_b": g(1, 4)}),
    ],
)
def test_adapters_claim_their_layouts_and_only_those(adapter, parts):
    [patch] = adapter.patches(parts, "fc.weight").values()
    assert patch.apply(g(6, 8), 1.0).shape == (6, 8)
    others = [
        a
        for a in (LoraAdapter(), LohaAdapter(), LokrAdapter(), DiffAdapter())
        if a.name != adapter.name
    ]
    assert all(not other.patches(parts, "fc.weight") for other in others)


def test_dora_scale_wraps_the_low_rank_patch():
    parts = {
        ".lora_up.weight": g(6, 2),
        ".lora_down.weight": g(2, 8),
        ".alpha": torch.tensor(2.0),
        ".dora_scale": g(1, 8).abs(),
    }
    [patch] = LoraAdapter().patches(parts, "fc.weight").values()
    assert isinstance(patch, DoraPatch) and patch.inner.scale == 1.0
