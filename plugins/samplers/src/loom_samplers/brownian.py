"""A Brownian tree that gives bit for bit what ``torchsde.BrownianTree`` gives, faster.

ComfyUI's (and k-diffusion's) SDE samplers draw their noise from ``torchsde.BrownianTree(t0,
w0, t1, entropy=seed)``: a ``BrownianInterval`` with ``halfway_tree=True``, ``tol=1e-6``,
``pool_size=24``, no Levy area and a 45-entry LRU cache. What it computes is fixed by the seed:

* the tree is the dyadic one over ``[round(t0), round(t1)]`` (times rounded to 6 decimals,
  midpoints ``round(0.5 * (end + start))``), node ``n`` having spawn key ``2 * parent + side``
  and a depth; its seed is word 0 of ``numpy.random.SeedSequence(entropy, spawn_key=(key,
  depth), pool_size=24).generate_state(4)`` (:mod:`loom_samplers.brownian_seeds`);
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

* keeps a larger LRU cache (64 to 128 increments, 128 MiB) in which the paths to the last
  query's ends and the nodes beside them are the last to go, and computes a node's two
  children from one draw;
* plans a query first (the nodes to compute, the noise they need), then computes it;
* on CPU in float32, draws each node's noise with :mod:`loom_samplers.fast_randn` (torch's
  numbers, ~4x faster) and computes both children in the same C call, and sums a query's
  pieces in one more;
* otherwise (no C extension, float64, other dtypes) draws with torch, on worker threads
  while the caller does the arithmetic down the tree, the caller drawing too when the noise
  it needs is not ready (:mod:`loom_samplers.brownian_draws`); with
  :meth:`BrownianTree.prefetch` (a sampler knows its next sigma) the workers start on the
  next query's new path before the query comes; the arithmetic goes through numpy views
  into reused buffers (same IEEE operations, half torch's call overhead);
* on CPU, takes its buffers from a pool that outlives the tree, so the next sampling run
  writes to memory already mapped (:mod:`loom_samplers.brownian_buffers`);
* does not draw the space-time Levy area ``H`` that torchsde draws and never uses;
* keeps the tree in dicts of floats keyed by heap index, which the garbage collector ignores.

The ~17 new full-size ``randn`` per query remain (each node's noise feeds every element of its
descendants): at 4x64x64 ~14 us each with fast_randn's AVX-512 kernel, ~60 us with torch.
The tests compare the tree with ``torchsde.BrownianTree`` bit for bit on every path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loom_samplers.brownian_draws import draw, set_brownian_workers
from loom_samplers.brownian_seeds import NodeSeeds
from loom_samplers.brownian_values import Coefficients, NodeValues

__all__ = ["BrownianTree", "set_brownian_workers"]

_MAX_DEPTH = 2000  # far beyond what a 1e-6 tolerance needs; guards against a float surprise


class BrownianTree:
    """``torchsde.BrownianTree(t0, w0, t1, w1, entropy, tol, pool_size)``, same values.

    ``tree(ta, tb)`` is the increment over ``[ta, tb]`` (``tree(t)``: the value at ``t``,
    ``w0`` added), exactly as torchsde computes it, including clamping to ``[t0, t1]`` (without
    torchsde's warnings) and zeros for ``ta == tb``. Levy areas (``return_U`` / ``return_A``)
    are not supported: torchsde's ``BrownianTree`` has none either.

    Nodes are heap indices (root 1, children ``2n`` and ``2n + 1``: torchsde's spawn key is
    ``n - 2**depth``) with their bounds in dicts of floats, so a tree keeps no objects that
    the cyclic garbage collector tracks (torchsde's interval objects make full collections,
    tens of milliseconds in a process that has imported torch, happen during sampling); its
    noise jobs live for a query or two.

    ``cache_size`` (node increments kept) defaults to what 128 MiB holds, between 64 and 128;
    it changes the speed, never the values. ``workers`` (CPU trees only) is the number of
    threads drawing noise besides the caller; ``None`` follows :func:`set_brownian_workers`
    (see :func:`~loom_samplers.brownian_draws.worker_count`). The node values and their
    arithmetic are :class:`~loom_samplers.brownian_values.NodeValues`.
    :meth:`prefetch` starts drawing the noise for a time the next query will reach.
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
        workers: int | None = None,
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
        self._entropy = entropy
        ndigits = -int(math.log10(tol))
        self._ndigits = ndigits
        self._start, self._end = round(t0f, ndigits), round(t1f, ndigits)
        self._bounds: dict[int, tuple[float, float]] = {1: (self._start, self._end)}
        self._mid: dict[int, float] = {}
        self._coefficients: Coefficients = {}
        self._seeds = NodeSeeds(entropy, pool_size)
        if w1 is None:
            initial = np.random.SeedSequence(entropy=entropy, pool_size=pool_size).generate_state(3)
            root_w = draw(self._size, self._dtype, self._device, int(initial[0])) * math.sqrt(
                t1f - t0f
            )
        else:
            root_w = (w1 - w0).detach()
        self._values = NodeValues(
            root_w, self._coefficients, cache_size=cache_size, workers=workers
        )

    @property
    def draws(self) -> int:
        """Noise draws so far (for tests and benchmarks)."""
        return self._values.drawn

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

    # --- queries ----------------------------------------------------------------------

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

    def _increment(self, ta: float, tb: float) -> Tensor:
        pieces: list[int] = []
        self._locate(1, ta, tb, pieces)
        values = self._values
        ops, parents = values.plan(pieces)
        if ops:
            values.compute(ops, parents)
        w = values.sum(pieces)
        values.finish((pieces[0], pieces[-1]))
        return w

    @property
    def prefetches(self) -> bool:
        """Whether :meth:`prefetch` does anything: the tree has worker threads to draw on."""
        return self._values.draws.workers > 0

    def prefetch(self, t: Any) -> None:
        """Start drawing, on worker threads, the noise that a query ending at ``t`` will need.

        A hint (a sampler knows its next sigma): it changes the speed, never the values.
        Noise that the next two queries do not use is dropped.
        """
        if not self.prefetches:
            return
        values = self._values
        t = float(t)
        if math.isnan(t):
            return
        t = round(min(max(t, self._start), self._end), self._ndigits)
        bounds, mids = self._bounds, self._mid
        jobs = []
        node = 1
        while True:
            start, end = bounds[node]
            if not start < t < end:
                break
            mid = mids.get(node)
            if mid is None:
                if node.bit_length() > _MAX_DEPTH:
                    break
                mid = self._split(node, start, end)
            job = values.prefetch(node)
            if job is not None:
                jobs.append(job)
            if t == mid:
                break
            node = 2 * node if t < mid else 2 * node + 1
        if jobs:
            values.queue(jobs)

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
        seed = self._seeds(node - (1 << depth), depth)
        self._coefficients[node] = (left_diff, h_reciprocal, math.sqrt(var), seed)
        return mid
