"""A pure-Python Brownian tree that gives bit for bit what ``torchsde.BrownianTree`` gives.

ComfyUI's (and k-diffusion's) SDE samplers draw their noise from ``torchsde.BrownianTree(t0,
w0, t1, entropy=seed)``: a ``BrownianInterval`` with ``halfway_tree=True``, ``tol=1e-6``,
``pool_size=24``, no Levy area and a 45-entry LRU cache. What it computes is fixed by the seed:

* the tree is the dyadic one over ``[round(t0), round(t1)]`` (times rounded to 6 decimals,
  midpoints ``round(0.5 * (end + start))``), node ``n`` having spawn key ``2 * parent + side``
  and a depth; the noise of a split node comes from a fresh generator seeded with word 0 of
  ``numpy.random.SeedSequence(entropy, spawn_key=(key, depth), pool_size=24).generate_state(4)``;
* the root increment is ``randn(seed_0) * sqrt(t1 - t0)`` (``seed_0`` from
  ``SeedSequence(entropy, pool_size=24)``);
* a child's increment comes from its parent's ``W`` and the parent's noise ``X``:
  ``left = left_diff * W * (1 / h) + sqrt(left_diff * right_diff * (1 / h)) * X`` and
  ``right = W - left``;
* a query ``(ta, tb)`` is the sum, left to right, of the increments of the canonical
  decomposition of ``[round(ta), round(tb)]`` into tree nodes.

This module does the same arithmetic on the same values in the same order, so the result is
identical, with fewer draws: torchsde's 45-entry cache keeps evicting the ~24-level paths that
a 1e-6 tolerance makes, and each of its children re-draws its parent's noise, so it draws ~54
latent-sized ``randn`` per query of a 20-step dpmpp_2m_sde where ~17 are new. Here the cache
holds 64 to 128 increments (128 MiB) with the paths to the last query's ends kept longest, and
a split computes both children from one draw: ~17 draws per query, which are most of its time
(``bench/bench_samplers.py``). The tree is dicts of floats keyed by heap index (root 1,
children ``2n`` and ``2n + 1``; torchsde's spawn key is ``n - 2**depth``), which the cyclic
garbage collector ignores. The Levy area ``H`` that torchsde can draw is not supported (its
``BrownianTree`` has none either).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["BrownianTree"]

_MAX_DEPTH = 2000  # far beyond what a 1e-6 tolerance needs; guards against a float surprise
_CACHE_BYTES = 128 * 2**20
_CACHE_MIN, _CACHE_MAX = 64, 128


class BrownianTree:
    """``torchsde.BrownianTree(t0, w0, t1, w1, entropy, tol, pool_size)``, same values.

    ``tree(ta, tb)`` is the increment over ``[ta, tb]`` (``tree(t)``: the value at ``t``,
    ``w0`` added), exactly as torchsde computes it, including clamping to ``[t0, t1]`` (without
    torchsde's warnings) and zeros for ``ta == tb``. ``cache_depth`` and ``safety`` are
    accepted for torchsde's signature and unused. ``cache_size`` (node increments kept)
    defaults to what 128 MiB holds, between 64 and 128; it changes the speed, never the values.
    """

    def __init__(
        self,
        t0: Any,
        w0: Tensor,
        t1: Any = None,
        w1: Tensor | None = None,
        entropy: Any = None,
        tol: float = 1e-6,
        pool_size: int = 24,
        cache_depth: int = 9,
        safety: float | None = None,
        *,
        cache_size: int | None = None,
    ) -> None:
        for name, value in (("t0", t0), ("t1", t1)):
            if value is not None and not (
                isinstance(value, (int, float))
                or (isinstance(value, Tensor) and value.numel() == 1)
            ):
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
        self._entropy, self._pool_size = entropy, pool_size
        self._ndigits = -int(math.log10(tol))
        self._start, self._end = round(t0f, self._ndigits), round(t1f, self._ndigits)
        self._bounds: dict[int, tuple[float, float]] = {1: (self._start, self._end)}
        self._mid: dict[int, float] = {}
        #: a split node's ``(left_diff, 1 / h, sqrt(var), noise seed)``
        self._coefficients: dict[int, tuple[float, float, float, int]] = {}
        self._generator = torch.Generator(self._device)
        if cache_size is None:
            nbytes = max(1, math.prod(self._size) * w0.element_size())
            cache_size = max(_CACHE_MIN, min(_CACHE_MAX, _CACHE_BYTES // nbytes))
        self._cache_size = int(cache_size)
        self._cache: OrderedDict[int, Tensor] = OrderedDict()
        self.draws = 0  # noise draws so far (for tests and benchmarks)
        if w1 is None:
            sequence = np.random.SeedSequence(entropy=entropy, pool_size=pool_size)
            self._root = self._randn(int(sequence.generate_state(3)[0])) * math.sqrt(t1f - t0f)
        else:
            self._root = (w1 - w0).detach()

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
        return (
            f"{type(self).__name__}(t0={self._start:.3f}, t1={self._end:.3f}, size={self._size}, "
            f"dtype={self._dtype}, device={self._device!r}, entropy={self._entropy})"
        )

    def __call__(
        self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False
    ) -> Tensor:
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

    # --- values -----------------------------------------------------------------------

    def _increment(self, ta: float, tb: float) -> Tensor:
        pieces: list[int] = []
        self._locate(1, ta, tb, pieces)
        w = self._value(pieces[0]).clone()  # the cached tensor stays the tree's
        for piece in pieces[1:]:
            w = w + self._value(piece)
        self._keep_recent((pieces[0], pieces[-1]))
        return w

    def _value(self, node: int) -> Tensor:
        """``node``'s increment, splitting its uncached ancestors from the nearest cached one."""
        if node == 1:
            return self._root
        cache = self._cache
        if node not in cache:
            chain = []
            ancestor = node
            while ancestor != 1 and ancestor not in cache:
                chain.append(ancestor)
                ancestor >>= 1
            for child in reversed(chain):
                if child not in cache:  # else its sibling's split made it
                    self._split_value(child >> 1)
        return cache[node]

    def _split_value(self, parent: int) -> None:
        """Both children of ``parent`` from one draw of its noise, as torchsde computes them."""
        w = self._root if parent == 1 else self._cache[parent]
        left_diff, h_reciprocal, scale, seed = self._coefficients[parent]
        # torchsde: mean = left_diff * W * h_reciprocal; left = mean + sqrt(var) * noise
        left = w.mul(left_diff).mul_(h_reciprocal).add_(self._randn(seed).mul_(scale))
        self._cache[2 * parent] = left
        self._cache[2 * parent + 1] = w - left

    def _randn(self, seed: int) -> Tensor:
        """torchsde's ``_randn``: a generator seeded with ``seed`` (reseeding one is the same)."""
        self.draws += 1
        generator = self._generator.manual_seed(seed)
        return torch.randn(self._size, dtype=self._dtype, device=self._device, generator=generator)

    def _keep_recent(self, ends: tuple[int, int]) -> None:
        """Keep the paths to a query's ends and the nodes beside them longest (the next queries
        start from there), then trim the cache to its size."""
        cache, refresh, seen = self._cache, self._cache.move_to_end, set()
        for node in ends:
            while node > 1 and node not in seen:
                seen.add(node)
                for near in (node ^ 1, node):
                    if near in cache:
                        refresh(near)
                node >>= 1
        while len(cache) > self._cache_size:
            cache.popitem(last=False)

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
        """torchsde's ``_split_exact`` at the halfway point (``halfway_tree=True``), with the
        node's ``left_diff``, ``1 / h``, ``sqrt(var)`` and noise seed."""
        # torchsde rounds the children's ends too; ``start`` and ``end`` are rounded already
        mid = self._mid[node] = round(0.5 * (end + start), self._ndigits)
        self._bounds[2 * node] = (start, mid)
        self._bounds[2 * node + 1] = (mid, end)
        h_reciprocal = 1 / (end - start)
        left_diff = mid - start
        var = left_diff * (end - mid) * h_reciprocal
        depth = node.bit_length() - 1
        sequence = np.random.SeedSequence(
            entropy=self._entropy, spawn_key=(node - (1 << depth), depth), pool_size=self._pool_size
        )
        seed = int(sequence.generate_state(4)[0])
        self._coefficients[node] = (left_diff, h_reciprocal, math.sqrt(var), seed)
        return mid
