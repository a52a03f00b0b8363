"""loom_samplers._randn draws torch.randn's float32 CPU numbers bit for bit, and the Brownian
tree built on it still gives torchsde's bits, with every kernel and without the extension.

The extension is optional (an install without a C compiler falls back to torch), but CI
builds it: there, on an x86-64 CPU with AVX2, a missing or refused extension fails the tests.
"""

from __future__ import annotations

import os
import platform
import warnings

import numpy as np
import pytest
import torch
from loom_samplers import brownian_buffers, brownian_draws, fast_randn
from loom_samplers.brownian import BrownianTree
from loom_samplers.schedulers import karras_sigmas

try:
    from loom_samplers import _randn
except ImportError:  # pragma: no cover - depends on the install
    _randn = None

KERNELS = _randn.kernels() if _randn is not None else []
SEEDS = (0, 1, 7, 12345, 2**31 - 1, 2**32 - 1, 2**32 + 5, 2**64 - 1)
SIZES = (16, 17, 31, 32, 33, 48, 1000, 4 * 64 * 64, 4 * 64 * 64 + 16, 2 * 4 * 64 * 64 + 5)


def _x86_ci() -> bool:
    return bool(os.environ.get("CI")) and platform.machine().lower() in {"x86_64", "amd64"}


def test_ci_builds_the_extension_and_uses_it():
    if not _x86_ci():
        pytest.skip("only CI on x86-64 is sure to have a C compiler")
    assert _randn is not None, "loom_samplers._randn was not built"
    if not KERNELS:
        pytest.skip("this CPU has no AVX2/FMA: the tree draws with torch")
    fast_randn.fast_fill.cache_clear()
    assert fast_randn.fast_fill() is _randn


needs_kernels = pytest.mark.skipif(not KERNELS, reason="no _randn kernel runs on this machine")


@pytest.fixture(params=KERNELS or ["none"])
def kernel(request):
    if request.param == "none":
        pytest.skip("no _randn kernel runs on this machine")
    before = _randn.in_use()
    _randn.use(request.param)
    yield request.param
    _randn.use(before)


def _torch_randn(size: int, seed: int, scale: float = 1.0) -> np.ndarray:
    value = torch.randn(size, generator=torch.Generator().manual_seed(seed))
    return value.mul_(scale).numpy() if scale != 1.0 else value.numpy()


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def test_each_kernel_draws_torchs_bits(kernel):
    for seed in SEEDS:
        for size in SIZES:
            for scale in (1.0, 0.0123, 3.5):
                ours = np.empty(size, np.float32)
                _randn.fill(ours, seed, scale)
                np.testing.assert_array_equal(
                    _bits(ours),
                    _bits(_torch_randn(size, seed, scale)),
                    err_msg=f"{kernel} seed={seed} size={size} scale={scale}",
                )


def test_fill_many_is_fill_one_at_a_time(kernel):
    outs = [np.empty(size, np.float32) for size in (16, 1000, 4 * 64 * 64)]
    seeds, scales = [3, 2**32 - 1, 99], [1.0, 0.5, 1e-3]
    _randn.fill_many(outs, seeds, scales)
    for out, seed, scale in zip(outs, seeds, scales, strict=True):
        np.testing.assert_array_equal(_bits(out), _bits(_torch_randn(out.size, seed, scale)))


@pytest.mark.parametrize("size", [16, 4 * 64 * 64, 4 * 64 * 64 + 7])
@pytest.mark.parametrize("with_right", [False, True])
def test_split_and_bridge_are_torchsdes_float32_arithmetic(kernel, size, with_right):
    rng = np.random.default_rng(size)
    w = rng.standard_normal(size).astype(np.float32)
    left_diff, h_reciprocal, scale, seed = 0.37, 1 / 0.91, 0.2, 4242
    # torchsde: mean = left_diff * W * h_reciprocal; left = mean + sqrt(var) * X; right = W - left
    tw = torch.from_numpy(w)
    noise = torch.from_numpy(_torch_randn(size, seed, scale))
    expected_left = left_diff * tw * h_reciprocal + noise
    expected_right = tw - expected_left
    left, right = np.empty_like(w), np.empty_like(w) if with_right else None
    _randn.split(w, seed, scale, left, left_diff, h_reciprocal, right)
    np.testing.assert_array_equal(_bits(left), _bits(expected_left.numpy()))
    if with_right:
        np.testing.assert_array_equal(_bits(right), _bits(expected_right.numpy()))
    in_place = noise.numpy().copy()  # bridge: the noise drawn elsewhere, the result over it
    right = np.empty_like(w) if with_right else None
    _randn.bridge(w, in_place, left_diff, h_reciprocal, right)
    np.testing.assert_array_equal(_bits(in_place), _bits(expected_left.numpy()))
    if with_right:
        np.testing.assert_array_equal(_bits(right), _bits(expected_right.numpy()))


@needs_kernels
def test_sum_into_adds_left_to_right_in_float32():
    rng = np.random.default_rng(5)
    pieces = [
        (rng.standard_normal(3000) * 10.0 ** rng.integers(-6, 6)).astype(np.float32)
        for _ in range(17)
    ]
    expected = torch.from_numpy(pieces[0]).clone()
    for piece in pieces[1:]:
        expected = expected + torch.from_numpy(piece)
    out = np.empty(3000, np.float32)
    _randn.sum_into(out, pieces)
    np.testing.assert_array_equal(_bits(out), _bits(expected.numpy()))
    _randn.sum_into(out, pieces[:1])
    np.testing.assert_array_equal(_bits(out), _bits(pieces[0]))


@needs_kernels
def test_bad_arguments_raise_clear_errors():
    out = np.empty(64, np.float32)
    with pytest.raises(ValueError, match="float32"):
        _randn.fill(np.empty(64, np.float64), 1)
    with pytest.raises(ValueError, match="16 or more"):
        _randn.fill(np.empty(8, np.float32), 1)
    with pytest.raises((ValueError, BufferError)):
        _randn.fill(np.empty((64, 2), np.float32)[:, 0], 1)  # not contiguous
    read_only = np.empty(64, np.float32)
    read_only.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        _randn.fill(read_only, 1)
    for seed in (-1, 2**64):
        with pytest.raises(OverflowError):
            _randn.fill(out, seed)
    with pytest.raises(ValueError, match="one size"):
        _randn.split(np.empty(32, np.float32), 1, 1.0, out, 0.5, 2.0)
    with pytest.raises(ValueError, match="left must not be w"):
        _randn.split(out, 1, 1.0, out, 0.5, 2.0)
    with pytest.raises(ValueError, match="right must be a buffer of its own"):
        _randn.bridge(np.empty(64, np.float32), out, 0.5, 2.0, out)
    with pytest.raises(ValueError, match="not be out"):
        _randn.sum_into(out, [np.empty(64, np.float32), out])
    with pytest.raises(ValueError):
        _randn.sum_into(out, [])
    with pytest.raises(ValueError, match="one length"):
        _randn.fill_many([out], [1, 2], [1.0])
    with pytest.raises(ValueError, match="not one this CPU runs"):
        _randn.use("sse9")


@needs_kernels
def test_a_kernel_that_differs_from_torch_by_one_ulp_is_refused():
    def off_by_one_ulp(out, seed, scale):
        _randn.fill(out, seed, scale)
        out[5] = np.nextafter(out[5], np.float32(np.inf))

    assert fast_randn.same_as_torch(_randn.fill)
    assert not fast_randn.same_as_torch(off_by_one_ulp)


def test_loom_fast_randn_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("LOOM_FAST_RANDN", "0")
    fast_randn.fast_fill.cache_clear()
    try:
        assert fast_randn.fast_fill() is None
        draws = brownian_draws.Draws((1, 4, 8, 8), torch.float32, torch.device("cpu"))
        assert draws.fast is None
    finally:
        monkeypatch.delenv("LOOM_FAST_RANDN")
        fast_randn.fast_fill.cache_clear()


@pytest.fixture
def draw_path(request, monkeypatch):
    """How the tree draws: "default", a named _randn kernel, or "torch" (no extension)."""
    path = request.param
    if path == "torch":
        monkeypatch.setattr(brownian_draws, "fast_fill", lambda: None)
        yield path
        return
    if path == "default":
        yield path
        return
    if path not in KERNELS:
        pytest.skip(f"no {path} kernel runs here")
    before = _randn.in_use()
    _randn.use(path)
    yield path
    _randn.use(before)


@pytest.mark.parametrize("draw_path", ["default", "avx512", "avx2", "torch"], indirect=True)
@pytest.mark.parametrize("workers", [None, 0, 1])
def test_tree_matches_torchsde_on_every_draw_path(draw_path, workers):
    torchsde = pytest.importorskip("torchsde")
    sigmas = karras_sigmas(20, 0.0291675, 14.614642)
    for shape in ((1, 4, 64, 64), (2, 4, 8, 8), (3, 7)):
        x = torch.zeros(shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchsde's, past its rounded t1
            reference = torchsde.BrownianTree(sigmas[-2], x, sigmas[0], entropy=31337)
            ours = BrownianTree(sigmas[-2], x, sigmas[0], entropy=31337, workers=workers)
            for i in range(len(sigmas) - 2):
                a, b = sigmas[i + 1].float(), sigmas[i].float()
                assert torch.equal(ours(a, b), reference(a, b)), (draw_path, workers, shape, i)


def test_a_finished_trees_buffers_serve_the_next_tree():
    pool = brownian_buffers.POOL
    pool.clear()
    sigmas = karras_sigmas(12, 0.0291675, 14.614642)
    x = torch.zeros(1, 4, 16, 16)

    def run() -> list[torch.Tensor]:
        tree = BrownianTree(sigmas[-2], x, sigmas[0], entropy=3, workers=0)
        return [tree(sigmas[i + 1].float(), sigmas[i].float()) for i in range(len(sigmas) - 2)]

    first = run()  # the tree is gone: its buffers are in the pool
    assert pool.nbytes > 0
    made = pool.made
    again = run()
    assert pool.made == made, "the second tree made buffers although the pool held the first's"
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert pool.nbytes <= pool.limit_bytes
    pool.clear()
    assert pool.nbytes == 0


def test_pool_keeps_at_most_its_limit():
    pool = brownian_buffers.BufferPool(limit_bytes=3 * 4096)
    pool.give(np.empty(1024, np.float32) for _ in range(5))
    assert pool.nbytes == 3 * 4096
    assert pool.take((1024,), np.float32).shape == (1024,)
    assert pool.nbytes == 2 * 4096 and pool.made == 0
    assert pool.take((7,), np.float64).dtype == np.float64  # none of that kind: a new one
    assert pool.made == 1
