"""The values of a Brownian tree's nodes: their increments, computed from the parent's
increment and the parent's noise in torchsde's float32/float64 operations, kept in an LRU
cache, and a query's pieces summed (see :mod:`loom_samplers.brownian` for the tree itself).

Three ways to compute, the same bits: :mod:`~loom_samplers.fast_randn`'s C calls (CPU
float32), numpy views into reused buffers (CPU float32 / float64) and torch (other dtypes and
devices). The last two take their noise from :class:`~loom_samplers.brownian_draws.Draws`,
which can draw it on worker threads ahead of time (:meth:`NodeValues.prefetch`).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loom_samplers.brownian_buffers import POOL
from loom_samplers.brownian_draws import Draws, Job

__all__ = ["NodeValues"]

_CACHE_BYTES = 128 * 2**20
_CACHE_MIN, _CACHE_MAX = 64, 128
_FREE_MAX = 64  # spare numpy buffers kept

#: a split node's ``(left_diff, 1 / h, sqrt(var), noise seed)``, by node
Coefficients = dict[int, tuple[float, float, float, int]]


class NodeValues:
    """The increments of a tree's nodes (heap indices; node 1 is the root, ``root_w``).

    ``cache_size`` (increments kept) defaults to what 128 MiB holds, between 64 and 128; it
    changes the speed, never the values. ``workers``: see :class:`BrownianTree`.
    """

    def __init__(
        self,
        root_w: Tensor,
        coefficients: Coefficients,
        *,
        cache_size: int | None = None,
        workers: int | None = None,
    ) -> None:
        self.size, self.dtype, self.device = tuple(root_w.shape), root_w.dtype, root_w.device
        self.coefficients = coefficients
        if cache_size is None:
            nbytes = max(1, math.prod(self.size) * root_w.element_size())
            cache_size = max(_CACHE_MIN, min(_CACHE_MAX, _CACHE_BYTES // nbytes))
        self.cache_size = int(cache_size)
        # The arithmetic on CPU float32 / float64 goes through numpy views, which costs half of
        # torch's per-call overhead; an IEEE multiply or add by a float gives the same bits.
        self.numpy = (
            self.device.type == "cpu"
            and self.dtype in (torch.float32, torch.float64)
            and len(self.size) > 0
        )
        self.root = root_w.numpy() if self.numpy else root_w
        self.cache: OrderedDict[int, Any] = OrderedDict()
        self.free: list[np.ndarray] = []
        if self.numpy:  # the buffers go back to the pool with the tree
            weakref.finalize(self, _give_back, self.cache, self.free)
        if self.device.type != "cpu":
            workers = 0  # the device queues the draws; threads would only add overhead
        self.draws = Draws(self.size, self.dtype, self.device, workers)
        self.noise: dict[int, tuple[Job, int]] = {}  # prefetched: split node -> (job, query)
        self.queries = 0
        self.drawn = 0  # noise draws so far (for tests and benchmarks)

    # --- a query ----------------------------------------------------------------------

    def plan(self, pieces: list[int]) -> tuple[list[int], list[int]]:
        """The nodes to compute for ``pieces``, in order, and the split nodes whose noise
        that takes, in the order it is used.

        An even (left) node is its parent's ``mean + sqrt(var) * X``, an odd (right) one its
        parent's increment minus its left sibling's.
        """
        cache = self.cache
        known: set[int] = set()
        ops: list[int] = []
        parents: list[int] = []
        for piece in pieces:
            chain = []
            node = piece
            while node != 1 and node not in known and node not in cache:
                chain.append(node)
                node >>= 1
            for node in reversed(chain):
                left = node & ~1
                if left not in known and left not in cache:
                    ops.append(left)
                    parents.append(node >> 1)
                    known.add(left)
                if node != left:
                    ops.append(node)
                    known.add(node)
        return ops, parents

    def compute(self, ops: list[int], parents: list[int]) -> None:
        """Compute ``ops`` into the cache, in order, with the noise of ``parents``."""
        if self.draws.fast is not None:
            self._compute_fast(ops, parents)
        elif self.numpy:
            self._compute_numpy(ops, self._jobs(parents))
        else:
            self._compute_torch(ops, self._jobs(parents))

    def sum(self, pieces: list[int]) -> Tensor:
        """The pieces' increments added left to right, into a new tensor."""
        cache, root = self.cache, self.root
        values = [root if piece == 1 else cache[piece] for piece in pieces]
        if not self.numpy:
            w = values[0].clone()
            for value in values[1:]:
                w = w + value
            return w
        if len(values) == 1:
            return torch.from_numpy(values[0].copy())
        if self.draws.fast is not None:
            w = torch.empty(self.size, dtype=self.dtype)  # the caller's: not from the pool
            self.draws.fast.sum_into(w.numpy(), values)
            return w
        w = np.add(values[0], values[1], out=self._buffer())
        for value in values[2:]:
            np.add(w, value, out=w)
        return torch.from_numpy(w)

    def finish(self, ends: Iterable[int]) -> None:
        """After a query: keep the paths to its ``ends`` and the nodes beside them (the next
        queries start from there; the rest goes first, which keeps the memory in use small),
        trim the cache, drop stale prefetched noise."""
        cache, refresh, seen = self.cache, self.cache.move_to_end, set()
        for node in ends:
            while node > 1 and node not in seen:
                seen.add(node)
                for near in (node ^ 1, node):
                    if near in cache:
                        refresh(near)
                node >>= 1
        self._trim()
        self.queries += 1
        self._expire()

    def prefetch(self, node: int) -> Job | None:
        """A job drawing split ``node``'s noise ahead of the query that needs it (None when
        its children are known or its noise is on the way already); queue the jobs with
        :meth:`queue`."""
        if 2 * node in self.cache or node in self.noise:
            return None
        _, _, scale, seed = self.coefficients[node]
        job = self.draws.job(seed, scale, self._buffer() if self.numpy else None)
        self.noise[node] = (job, self.queries)
        return job

    def queue(self, jobs: list[Job]) -> None:
        self.drawn += len(jobs)
        self.draws.add(jobs)

    # --- computing --------------------------------------------------------------------

    def _jobs(self, parents: list[int]) -> list[Job]:
        """The noise jobs for ``parents``: prefetched ones, and new ones queued first."""
        coefficients, noise = self.coefficients, self.noise
        jobs, new = [], []
        for parent in parents:
            entry = noise.pop(parent, None)
            if entry is None:
                _, _, scale, seed = coefficients[parent]
                job = self.draws.job(seed, scale, self._buffer() if self.numpy else None)
                new.append(job)
            else:
                job = entry[0]
            jobs.append(job)
        if new:
            self.drawn += len(new)
            self.draws.add(new, first=True)
        return jobs

    def _compute_fast(self, ops: list[int], parents: list[int]) -> None:
        """:mod:`~loom_samplers.fast_randn`'s path: a split is one call that draws the noise
        (unless a worker has) and computes both children from it, into the noise's buffer."""
        cache, root, free, new = self.cache, self.root, self.free, self._new_buffer
        coefficients, draws, fast, subtract = (
            self.coefficients,
            self.draws,
            self.draws.fast,
            np.subtract,
        )
        # without workers or prefetched noise, the caller draws it all: no jobs needed
        jobs = iter(self._jobs(parents)) if draws.workers > 0 or self.noise else None
        if jobs is None:
            self.drawn += len(parents)
        count, index = len(ops), 0
        while index < count:
            node = ops[index]
            index += 1
            parent = node >> 1
            w = cache[parent] if parent > 1 else root
            if node & 1:
                cache[node] = subtract(w, cache[node - 1], free.pop() if free else new())
                continue
            left_diff, h_reciprocal, scale, seed = coefficients[parent]
            right = None
            if index < count and ops[index] == node + 1:  # its right sibling too: W - left
                index += 1
                right = cache[node + 1] = free.pop() if free else new()
            if jobs is None:
                left = free.pop() if free else new()
                fast.split(w, seed, scale, left, left_diff, h_reciprocal, right)
            else:
                job = next(jobs)
                left = job.buffer
                if draws.claim(job):  # nobody has drawn it: draw it here, in the same call
                    fast.split(w, seed, scale, left, left_diff, h_reciprocal, right)
                else:
                    draws.wait(job)  # a worker drew it into ``left``
                    fast.bridge(w, left, left_diff, h_reciprocal, right)
            cache[node] = left

    def _compute_numpy(self, ops: list[int], jobs: list[Job]) -> None:
        """CPU float32 / float64 without fast_randn: numpy views into reused buffers."""
        cache, root, free, new = self.cache, self.root, self.free, self._new_buffer
        coefficients, wait = self.coefficients, self.draws.wait
        queued = iter(jobs)
        multiply, add, subtract = np.multiply, np.add, np.subtract
        for node in ops:
            parent = node >> 1
            w = cache[parent] if parent > 1 else root
            out = free.pop() if free else new()
            if node & 1:
                cache[node] = subtract(w, cache[node - 1], out)
                continue
            # torchsde: mean = left_diff * W * h_reciprocal; left = mean + sqrt(var) * X
            left_diff, h_reciprocal, _, _ = coefficients[parent]
            scaled_noise = wait(next(queued))
            multiply(w, left_diff, out)
            multiply(out, h_reciprocal, out)
            cache[node] = add(out, scaled_noise, out)
            free.append(scaled_noise)

    def _compute_torch(self, ops: list[int], jobs: list[Job]) -> None:
        cache, root = self.cache, self.root
        coefficients, wait, queued = self.coefficients, self.draws.wait, iter(jobs)
        for node in ops:
            parent = node >> 1
            w = cache[parent] if parent > 1 else root
            if node & 1:
                cache[node] = w - cache[node - 1]
                continue
            left_diff, h_reciprocal, _, _ = coefficients[parent]
            cache[node] = w.mul(left_diff).mul_(h_reciprocal).add_(wait(next(queued)))

    # --- memory -----------------------------------------------------------------------

    def _buffer(self) -> np.ndarray:
        free = self.free
        return free.pop() if free else self._new_buffer()

    def _new_buffer(self) -> np.ndarray:
        return POOL.take(self.size, self.root.dtype)

    def _release(self, array: np.ndarray) -> None:
        if len(self.free) < _FREE_MAX:
            self.free.append(array)
        else:
            POOL.give((array,))

    def _expire(self) -> None:
        """Drop prefetched noise that two queries have not used (a worker may still be on it:
        then its buffer is left to the garbage collector)."""
        noise = self.noise
        if not noise:
            return
        oldest = self.queries - 2
        for node in [node for node, (_, made) in noise.items() if made < oldest]:
            job, _ = noise.pop(node)
            if job.buffer is not None and (self.draws.claim(job) or job.value is not None):
                self._release(job.buffer)

    def _trim(self) -> None:
        """Drop the least recently used increments; their memory is reused (numpy path)."""
        cache = self.cache
        while len(cache) > self.cache_size:
            _, value = cache.popitem(last=False)
            if self.numpy:
                self._release(value)
        if len(self.free) > _FREE_MAX:
            POOL.give(self.free[_FREE_MAX:])
            del self.free[_FREE_MAX:]


def _give_back(cache: OrderedDict[int, Any], free: list[np.ndarray]) -> None:
    """A finished tree's buffers to the pool (its noise jobs in flight are left alone)."""
    POOL.give(free)
    POOL.give(cache.values())
