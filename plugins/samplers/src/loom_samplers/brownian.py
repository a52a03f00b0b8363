"""A Brownian tree that gives bit for bit what ``torchsde.BrownianTree`` gives, faster.

ComfyUI's (and k-diffusion's) SDE samplers draw their noise from ``torchsde.BrownianTree(t0,
w0, t1, entropy=seed)``: a ``BrownianInterval`` with ``halfway_tree=True``, ``tol=1e-6``,
``pool_size=24``, no Levy area and a 45-entry LRU cache. What it computes is fixed by the seed:

* the tree is the dyadic one over ``[round(t0), round(t1)]`` (times rounded to 6 decimals,
  midpoints ``round(0.5 * (end + start))``), node ``n`` having spawn key ``2 * parent + side``
  and a depth; its seed is word 0 of ``numpy.random.SeedSequence(entropy, spawn_key=(key,
  depth), pool_size=24).generate_state(4)``;
* the root increment is ``randn(seed_0) * sqrt(t1 - t0)`` (``seed_0`` from
  ``SeedSequence(entropy, pool_size=24)``), each ``randn`` from a fresh generator on the tree's
  device seeded with the node's seed;
* a child's increment comes from its parent's ``W`` and the parent's noise ``X``:
  ``left = left_diff * W * (1 / h) + sqrt(left_diff * right_diff * (1 / h)) * X`` and
  ``right = W - left``;
* a query ``(ta, tb)`` is the sum, left to right, of the increments of the canonical
  decomposition of ``[round(ta), round(tb)]`` into tree nodes.

Where the time goes in torchsde (4x64x64 latent, 20 karras steps of dpmpp_2m_sde): about 54
``randn`` over the whole latent per query, each with a new generator, because with ~24 levels
between the root and a query point (the 1e-6 tolerance) the 45-entry cache keeps evicting the
path, and because each child re-draws its parent's noise. Only ~17 draws per query are new.
This module does the same arithmetic on the same values in the same order, so the result is
identical, but

* keeps a larger LRU cache (64 to 256 increments, 128 MiB) that also keeps the paths to the
  last query's ends, and computes a node's two children from one draw;
* derives node seeds with a few integer operations (SeedSequence's hash restricted to the word
  that is used; checked against numpy when a tree is made, numpy itself otherwise);
* does not draw the space-time Levy area ``H`` that torchsde draws and never uses;
* on CPU (float32 / float64), does the multiplies and adds through numpy views into reused
  buffers (same IEEE operations, half the call overhead, no fresh pages per increment);
* keeps the tree in dicts of floats keyed by heap index, which the garbage collector ignores;
* on CPU, draws the query's noise on worker threads (``torch.randn`` releases the GIL) while
  the calling thread does the arithmetic down the tree.

The ~17 new full-size ``randn`` per query remain (each node's noise feeds every element of its
descendants); at 4x64x64 they cost ~60 us each on one core, so that is the floor without
threads. The tests compare the tree with ``torchsde.BrownianTree`` bit for bit.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["BrownianTree", "set_brownian_workers"]

_M32 = 0xFFFFFFFF
# numpy.random.SeedSequence's hash constants (numpy/random/bit_generator.pyx)
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_XSHIFT = 16

_CACHE_BYTES = 128 * 2**20
_CACHE_MIN, _CACHE_MAX = 64, 256
_ARITHMETIC_SHARE = 0.3
_MAX_DEPTH = 2000  # far beyond what a 1e-6 tolerance needs; guards against a float surprise

_workers_setting: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_local = threading.local()


def set_brownian_workers(count: int | None) -> None:
    """Worker threads for CPU noise draws: ``None`` picks from torch's thread count, 0 none."""
    global _workers_setting
    _workers_setting = count


def _worker_count() -> int:
    if _workers_setting is not None:
        return max(0, int(_workers_setting))
    return max(0, min(3, torch.get_num_threads() - 1, (os.cpu_count() or 1) - 1))


def _executor(count: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < count:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="loom-brownian")
            _pool_size = count
        return _pool


def _generator(device: torch.device) -> torch.Generator:
    """A generator per thread and device; ``manual_seed`` makes it as good as a new one."""
    generators = getattr(_local, "generators", None)
    if generators is None:
        generators = _local.generators = {}
    generator = generators.get(device)
    if generator is None:
        generator = generators[device] = torch.Generator(device)
    return generator


def _draw(size: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int,
          out: Tensor | None = None) -> Tensor:
    """torchsde's ``_randn``: ``randn`` from a generator seeded with ``seed`` (into ``out``)."""
    generator = _generator(device).manual_seed(seed)
    if out is None:
        return torch.randn(size, dtype=dtype, device=device, generator=generator)
    return torch.randn(size, dtype=dtype, device=device, generator=generator, out=out)


def _draw_scaled(size, dtype, device, seed: int, scale: float, buffer: np.ndarray | None) -> Any:
    """``scale * noise`` as torchsde computes it (a float32 or float64 multiply by a float).

    With a ``buffer`` (CPU float32 / float64 trees) the noise is drawn into it and scaled with
    numpy, which gives the same bits with less overhead.
    """
    if buffer is None:
        return _draw(size, dtype, device, seed).mul_(scale)
    _draw(size, dtype, device, seed, torch.from_numpy(buffer))
    return np.multiply(buffer, scale, out=buffer)


def _produce(items: list[tuple[int, int, float, Any]], size, dtype, device,
             out: queue.SimpleQueue) -> None:
    for index, seed, scale, buffer in items:
        try:
            out.put((index, _draw_scaled(size, dtype, device, seed, scale, buffer)))
        except BaseException as exc:  # handed to the caller, which raises it
            out.put((index, exc))
            return


def _words(value: int) -> list[int]:
    """numpy's ``_int_to_uint32_array``."""
    if value == 0:
        return [0]
    words = []
    while value > 0:
        words.append(value & _M32)
        value >>= 32
    return words


class _Seeds:
    """Word 0 of ``SeedSequence(entropy, spawn_key=(key, depth), pool_size).generate_state(n)``.

    SeedSequence pads the entropy with zero words to the pool size when there is a spawn key,
    mixes the pool, then mixes each remaining word (the spawn key's) into every pool word, and
    ``generate_state`` hashes pool word 0 into output word 0. Pool word 0 before the spawn key
    is that of ``SeedSequence(entropy, pool_size)``, and the hash constants' sequence does not
    depend on the data, so word 0 costs a few integer operations. The shortcut is checked
    against numpy for a few keys and numpy is used if they differ (or the entropy is not a
    plain non-negative int).
    """

    def __init__(self, entropy: Any, pool_size: int) -> None:
        self.entropy, self.pool_size = entropy, pool_size
        self.fast = False
        if isinstance(entropy, int) and not isinstance(entropy, bool) and entropy >= 0:
            self.word0 = int(np.random.SeedSequence(entropy, pool_size=pool_size).pool[0])
            extra = max(0, len(_words(entropy)) - pool_size)
            calls = pool_size + pool_size * (pool_size - 1) + pool_size * extra
            self.hash0 = (_INIT_A * pow(_MULT_A, calls, 2**32)) & _M32
            self.step = pow(_MULT_A, pool_size, 2**32)
            self.fast = all(self._fast(key, depth) == self._numpy(key, depth)
                            for key, depth in ((0, 0), (1, 1), (2, 2), (5, 3), (2**33 + 7, 34)))

    def __call__(self, key: int, depth: int) -> int:
        return self._fast(key, depth) if self.fast else self._numpy(key, depth)

    def _numpy(self, key: int, depth: int) -> int:
        sequence = np.random.SeedSequence(entropy=self.entropy, spawn_key=(key, depth),
                                          pool_size=self.pool_size)
        return int(sequence.generate_state(4)[0])

    def _fast(self, key: int, depth: int) -> int:
        word, hash_const = self.word0, self.hash0
        for value in (*_words(key), *_words(depth)):
            value ^= hash_const
            value = (value * ((hash_const * _MULT_A) & _M32)) & _M32
            value ^= value >> _XSHIFT
            word = (_MIX_L * word - _MIX_R * value) & _M32
            word ^= word >> _XSHIFT
            hash_const = (hash_const * self.step) & _M32
        value = ((word ^ _INIT_B) * ((_INIT_B * _MULT_B) & _M32)) & _M32
        return value ^ (value >> _XSHIFT)


class BrownianTree:
    """``torchsde.BrownianTree(t0, w0, t1, w1, entropy, tol, pool_size)``, same values.

    ``tree(ta, tb)`` is the increment over ``[ta, tb]`` (``tree(t)``: the value at ``t``,
    ``w0`` added), exactly as torchsde computes it, including clamping to ``[t0, t1]`` (without
    torchsde's warnings) and zeros for ``ta == tb``. Levy areas (``return_U`` / ``return_A``)
    are not supported: torchsde's ``BrownianTree`` has none either.

    Nodes are heap indices (root 1, children ``2n`` and ``2n + 1``: torchsde's spawn key is
    ``n - 2**depth``) with their bounds in dicts of floats, so a tree makes no objects that
    the cyclic garbage collector tracks (torchsde's interval objects make full collections,
    tens of milliseconds in a process that has imported torch, happen during sampling).

    ``cache_size`` (node increments kept) defaults to what 128 MiB holds, between 64 and 256;
    it changes the speed, never the values. ``workers`` (CPU trees only) is the number of
    threads drawing noise besides the caller; ``None`` follows :func:`set_brownian_workers`.
    """

    def __init__(self, t0: Any, w0: Tensor, t1: Any = None, w1: Tensor | None = None,
                 entropy: Any = None, tol: float = 1e-6, pool_size: int = 24,
                 cache_depth: int = 9, safety: float | None = None, *,
                 cache_size: int | None = None, workers: int | None = None) -> None:
        for name, value in (("t0", t0), ("t1", t1)):
            if value is not None and not (isinstance(value, (int, float))
                                          or (isinstance(value, Tensor) and value.numel() == 1)):
                raise ValueError(f"{name} should be a float or 0-d torch.Tensor")
        if t1 is None:
            t1 = t0 + 1
        if t0 > t1:
            raise ValueError(f"Initial time {t0} should be less than terminal time {t1}.")
        if tol <= 0.0:
            raise ValueError("`tol` should be positive.")
        t0f, t1f = float(t0), float(t1)
        self._w0 = w0
        self._size = tuple(w0.shape)
        self._dtype, self._device = w0.dtype, w0.device
        if entropy is None:
            entropy = np.random.randint(0, 2**31 - 1)
        self._entropy = entropy
        ndigits = -int(math.log10(tol))
        self._ndigits = ndigits
        self._start, self._end = round(t0f, ndigits), round(t1f, ndigits)
        self._bounds: dict[int, tuple[float, float]] = {1: (self._start, self._end)}
        self._mid: dict[int, float] = {}
        self._coefficients: dict[int, tuple[float, float, float, int]] = {}
        self._seeds = _Seeds(entropy, pool_size)
        if w1 is None:
            initial = np.random.SeedSequence(entropy=entropy, pool_size=pool_size).generate_state(3)
            root_w = _draw(self._size, self._dtype, self._device, int(initial[0])) * math.sqrt(t1f - t0f)
        else:
            root_w = (w1 - w0).detach()
        if cache_size is None:
            nbytes = max(1, math.prod(self._size) * root_w.element_size())
            cache_size = max(_CACHE_MIN, min(_CACHE_MAX, _CACHE_BYTES // nbytes))
        self._cache_size = int(cache_size)
        # The arithmetic on CPU float32 / float64 goes through numpy views, which costs half of
        # torch's per-call overhead; an IEEE multiply or add by a float gives the same bits.
        self._numpy = (self._device.type == "cpu" and self._dtype in (torch.float32, torch.float64)
                       and len(self._size) > 0)
        self._root_w = root_w.numpy() if self._numpy else root_w
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._free: list[np.ndarray] = []
        self._workers = workers
        self.draws = 0  # noise draws so far (for tests and benchmarks)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._size

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(t0={self._start:.3f}, t1={self._end:.3f}, size={self._size}, "
                f"dtype={self._dtype}, device={self._device!r}, entropy={self._entropy})")

    # --- queries ----------------------------------------------------------------------

    def __call__(self, ta: Any, tb: Any = None, return_U: bool = False,
                 return_A: bool = False) -> Tensor:
        if return_U or return_A:
            raise ValueError("this Brownian tree has no Levy area (like torchsde's BrownianTree)")
        start, end = self._start, self._end
        point = tb is None
        if point:
            ta, tb = start, ta
        ta, tb = float(ta), float(tb)
        if math.isnan(ta) or math.isnan(tb):
            raise ValueError(f"Query times must not be NaN (ta={ta}, tb={tb}).")
        ta = min(max(ta, start), end)
        tb = min(max(tb, start), end)
        if ta > tb:
            raise RuntimeError(f"Query times ta={ta:.3f} and tb={tb:.3f} must respect ta <= tb.")
        if ta == tb:
            w = torch.zeros(self._size, dtype=self._dtype, device=self._device)
        else:
            w = self._increment(round(ta, self._ndigits), round(tb, self._ndigits))
        return w + self._w0 if point else w

    def _increment(self, ta: float, tb: float) -> Tensor:
        pieces: list[int] = []
        self._locate(1, ta, tb, pieces)
        values = self._values(pieces)
        w = values[0]
        if self._numpy:
            w = w.copy() if len(values) == 1 else np.add(w, values[1])
            for value in values[2:]:
                np.add(w, value, out=w)
            w = torch.from_numpy(w)
        elif len(values) == 1:
            w = w.clone()
        else:
            for value in values[1:]:
                w = w + value
        self._trim()
        return w

    # --- the tree ---------------------------------------------------------------------

    def _locate(self, node: int, ta: float, tb: float, out: list[int]) -> None:
        """torchsde's ``_loc``: the nodes whose union is ``[ta, tb]``, left to right.

        torchsde searches from the last interval it returned and splits a leaf down to the
        query point at once; the nodes and so the pieces are the same (the tree is the
        halfway one whatever the order of the queries), only found in another order.
        """
        bounds, mids = self._bounds, self._mid
        while True:
            start, end = bounds[node]
            if ta == start and tb == end:
                out.append(node)
                return
            mid = mids.get(node)
            if mid is None:
                if node.bit_length() > _MAX_DEPTH:
                    raise RuntimeError(f"Brownian tree: cannot resolve [{ta}, {tb}]")
                mid = self._split(node, start, end)
            node *= 2
            if tb <= mid:
                continue
            if ta >= mid:
                node += 1
                continue
            self._locate(node, ta, mid, out)
            node, ta = node + 1, mid

    def _split(self, node: int, start: float, end: float) -> float:
        """torchsde's ``_split_exact`` at the halfway point (``halfway_tree=True``)."""
        ndigits = self._ndigits
        halfway = 0.5 * (end + start)
        mid = self._mid[node] = round(halfway, ndigits)
        self._bounds[2 * node] = (round(start, ndigits), round(halfway, ndigits))
        self._bounds[2 * node + 1] = (round(halfway, ndigits), round(end, ndigits))
        return mid

    def _prepare(self, node: int) -> tuple[float, float, float, int]:
        """The split ``node``'s ``left_diff``, ``1 / h``, ``sqrt(var)`` and noise seed."""
        coefficients = self._coefficients.get(node)
        if coefficients is None:
            start, end = self._bounds[node]
            mid = self._mid[node]
            h_reciprocal = 1 / (end - start)
            left_diff = mid - start
            right_diff = end - mid
            var = left_diff * right_diff * h_reciprocal
            depth = node.bit_length() - 1
            seed = self._seeds(node - (1 << depth), depth)
            coefficients = self._coefficients[node] = (left_diff, h_reciprocal, math.sqrt(var), seed)
        return coefficients

    # --- values -----------------------------------------------------------------------

    def _plan(self, pieces: list[int]) -> list[int]:
        """The split nodes whose noise the pieces need, in the order they will be used."""
        cache = self._cache
        known: set[int] = set()
        needs: list[int] = []
        for piece in pieces:
            chain = []
            node = piece
            while node != 1 and node not in known and node not in cache:
                chain.append(node)
                node >>= 1
            for node in reversed(chain):
                sibling = node & ~1
                if node == sibling or (sibling not in known and sibling not in cache):
                    needs.append(node >> 1)
                    known.add(sibling)
                known.add(node)
        return needs

    def _values(self, pieces: list[int]) -> list[Any]:
        needs = self._plan(pieces)
        for node in needs:
            self._prepare(node)
        self.draws += len(needs)
        noise = _NoiseFeed(self, needs)
        values = [self._value(piece, noise) for piece in pieces]
        # keep the paths to both ends of the query: the next queries start from them
        cache = self._cache
        for node in (pieces[0], pieces[-1]):
            while node:
                if node in cache:
                    cache.move_to_end(node)
                node >>= 1
        return values

    def _value(self, piece: int, noise: _NoiseFeed) -> Any:
        cache, numpy = self._cache, self._numpy
        if piece == 1:
            return self._root_w
        w = cache.get(piece)
        if w is not None:
            return w
        chain = []
        node = piece
        while w is None:
            chain.append(node)
            node >>= 1
            w = self._root_w if node == 1 else cache.get(node)
        for node in reversed(chain):
            left_node = node & ~1
            left = None if node == left_node else cache.get(left_node)
            if left is None:
                parent = node >> 1
                left_diff, h_reciprocal, _, _ = self._coefficients[parent]
                # torchsde: mean = left_diff * W * h_reciprocal; left = mean + sqrt(var) * X
                scaled_noise = noise.get(parent)
                if numpy:
                    left = np.multiply(w, left_diff, out=self._buffer())
                    np.multiply(left, h_reciprocal, out=left)
                    np.add(left, scaled_noise, out=left)
                    self._release(scaled_noise)
                else:
                    left = w.mul(left_diff).mul_(h_reciprocal).add_(scaled_noise)
                cache[left_node] = left
            if node == left_node:
                w = left
            else:
                w = np.subtract(w, left, out=self._buffer()) if numpy else w - left
                cache[node] = w
        return w

    def _buffer(self) -> np.ndarray:
        free = self._free
        return free.pop() if free else np.empty(self._size, dtype=self._root_w.dtype)

    def _release(self, array: np.ndarray) -> None:
        if len(self._free) < 64:
            self._free.append(array)

    def _trim(self) -> None:
        """Drop the least recently used increments; their memory is reused (numpy path)."""
        cache = self._cache
        while len(cache) > self._cache_size:
            _, value = cache.popitem(last=False)
            if self._numpy:
                self._release(value)


class _NoiseFeed:
    """The scaled noise of a query's split nodes, drawn here or on worker threads."""

    def __init__(self, tree: BrownianTree, needs: list[int]) -> None:
        self.tree = tree
        self.index = {node: i for i, node in enumerate(needs)}
        self.ready: dict[int, Any] = {}
        self.queue: queue.SimpleQueue | None = None
        workers = tree._workers if tree._workers is not None else _worker_count()
        count = len(needs)
        if tree._device.type != "cpu" or workers <= 0 or count < 3:
            self.local = count
            return
        # The caller draws the first ``local`` ones and does all the arithmetic; the workers
        # draw the rest in order. The arithmetic costs about a third of a draw per split node.
        local = round(count * max(0.0, 1 / workers - _ARITHMETIC_SHARE) / (1 + 1 / workers))
        self.local = local
        if local >= count:
            return
        numpy = tree._numpy
        coefficients = tree._coefficients
        rest = [(i, coefficients[node][3], coefficients[node][2], tree._buffer() if numpy else None)
                for i, node in enumerate(needs) if i >= local]
        self.queue = queue.SimpleQueue()
        executor = _executor(workers)
        for w in range(min(workers, len(rest))):
            executor.submit(_produce, rest[w::workers], tree._size, tree._dtype, tree._device,
                            self.queue)

    def get(self, node: int) -> Any:
        tree = self.tree
        index = self.index.get(node)
        if index is None or index < self.local or self.queue is None:
            if index is None:  # not planned (cannot happen with an unchanged cache): draw it
                tree.draws += 1
            _, _, scale, seed = tree._prepare(node)
            buffer = tree._buffer() if tree._numpy else None
            return _draw_scaled(tree._size, tree._dtype, tree._device, seed, scale, buffer)
        ready = self.ready
        while index not in ready:
            i, value = self.queue.get()
            if isinstance(value, BaseException):
                raise value
            ready[i] = value
        return ready.pop(index)
