"""ComfyUI's noise recipe: a CPU generator per seed, batch_index streams, seed+1 step noise."""

from __future__ import annotations

import torch
from loom_samplers.noise import EmptyNoiseGen, RandomNoiseGen, SeededNoise, prepare_noise


def test_samplers_prepare_noise_is_manual_seed_randn():
    latent = torch.zeros(1, 4, 8, 8)
    torch.manual_seed(42)
    expected = torch.randn(latent.shape)
    assert torch.equal(prepare_noise(latent, 42), expected)


def test_samplers_batch_shares_the_stream():
    one = prepare_noise(torch.zeros(1, 4, 8, 8), 42)
    two = prepare_noise(torch.zeros(2, 4, 8, 8), 42)
    assert torch.equal(two[:1], one)


def test_samplers_batch_index_recipe():
    latent = torch.zeros(3, 4, 8, 8)
    got = prepare_noise(latent, 7, [2, 0, 2])
    generator = torch.manual_seed(7)
    draws = [torch.randn([1, 4, 8, 8], generator=generator) for _ in range(3)]
    assert torch.equal(got, torch.cat([draws[2], draws[0], draws[2]]))
    # item k reproduces the single image with index batch_index[k]
    assert torch.equal(prepare_noise(torch.zeros(1, 4, 8, 8), 7, [0]), draws[0])


def test_samplers_noise_dtype_follows_latent():
    noise = prepare_noise(torch.zeros(1, 4, 4, 4, dtype=torch.float16), 1)
    assert noise.dtype == torch.float16 and noise.device.type == "cpu"


def test_samplers_ancestral_noise_uses_seed_plus_one_on_cpu():
    x = torch.zeros(1, 4, 8, 8)
    draw = SeededNoise(42).sampler(x)
    generator = torch.Generator().manual_seed(43)
    first, second = (
        torch.randn(x.shape, generator=generator),
        torch.randn(x.shape, generator=generator),
    )
    assert torch.equal(draw(1, 0.5), first)
    assert torch.equal(draw(0.5, 0.2), second)


def test_samplers_brownian_noise_is_reproducible():
    x = torch.zeros(1, 4, 8, 8)
    a = SeededNoise(9).brownian(x, torch.tensor(0.03), torch.tensor(14.6))
    b = SeededNoise(9).brownian(x, torch.tensor(0.03), torch.tensor(14.6))
    s, t = torch.tensor(5.0), torch.tensor(3.0)
    assert torch.equal(a(s, t), b(s, t))
    assert abs(a(s, t).std().item() - 1) < 0.3


def test_samplers_noise_socket_values():
    latent = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [1, 3]}
    assert torch.equal(
        RandomNoiseGen(5).generate_noise(latent), prepare_noise(latent["samples"], 5, [1, 3])
    )
    assert torch.count_nonzero(EmptyNoiseGen().generate_noise(latent)) == 0
