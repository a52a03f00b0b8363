"""The Brownian tree's noise draws (torchsde's ``_randn``), on worker threads where they are slow.

A draw is ``randn`` over the whole latent from a generator seeded with a node's seed.
Float32 draws of 16 or more numbers on CPU come from :mod:`loom_samplers.fast_randn` where
it matches torch on this machine (the same numbers, ~14-17 us at 4x64x64): the caller makes
those itself. Through torch a draw costs ~60 us, far more than the arithmetic the tree does
with it, and ``torch.randn`` releases the GIL. Draws are independent of each other, so a tree
queues them in a :class:`Draws`: worker threads (:func:`worker_count`) take them in order,
and the caller, when the one it needs is not ready, takes the next one itself instead of
waiting (the one it needs if nobody has it yet). Neither side waits on a worker that has not
started, or does not exist.

A worker takes up to :data:`CHUNK` draws at a time and makes them in one call that runs
without the GIL (``fast_randn``'s ``fill_many``, or else a small TorchScript function for
float32 / float64 trees): a worker that came back for the GIL after every draw would wait for
it behind the caller's Python (the caller releases it for a few microseconds per numpy or
torch call, less than a sleeping thread takes to wake up). Without either, workers draw one
job at a time.
"""

from __future__ import annotations

import atexit
import math
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from loom_samplers.fast_randn import fast_fill

__all__ = ["CHUNK", "Draws", "Job", "draw", "set_brownian_workers", "worker_count"]

CHUNK = 4  # draws a worker makes per call without the GIL (more: the caller waits longer)

_workers_setting: int | None = None
_local = threading.local()

_CHUNK_SOURCE = """
def draw_chunk(seeds: List[int], scales: List[float], outs: List[Tensor],
               generator: Generator) -> None:
    for i in range(len(seeds)):
        out = outs[i]
        generator.manual_seed(seeds[i])
        torch.randn(out.shape, generator=generator, out=out)
        out.mul_(scales[i])
"""


def set_brownian_workers(count: int | None) -> None:
    """Worker threads for CPU noise draws: ``None`` picks (see :func:`worker_count`), 0 none."""
    global _workers_setting
    _workers_setting = count


def worker_count(fast: bool = False) -> int:
    """Worker threads for a tree's CPU draws: what :func:`set_brownian_workers` set, else none
    where the draws are ``fast`` (:mod:`~loom_samplers.fast_randn`: the caller draws them in
    less time than handing them over takes), else up to 3, one fewer than torch's threads."""
    if _workers_setting is not None:
        return max(0, int(_workers_setting))
    if fast:
        return 0
    return max(0, min(3, torch.get_num_threads() - 1, (os.cpu_count() or 1) - 1))


def _generator(device: torch.device) -> torch.Generator:
    """A generator per thread and device; ``manual_seed`` makes it as good as a new one."""
    generators = getattr(_local, "generators", None)
    if generators is None:
        generators = _local.generators = {}
    generator = generators.get(device)
    if generator is None:
        generator = generators[device] = torch.Generator(device)
    return generator


def _fast_for(size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Any:
    """:func:`fast_fill` where it can draw tensors of this kind (float32, CPU, 16+ numbers)."""
    if dtype == torch.float32 and torch.device(device).type == "cpu" and math.prod(size) >= 16:
        return fast_fill()
    return None


def draw(size: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int) -> Tensor:
    """torchsde's ``_randn``: ``randn`` from a new generator seeded with ``seed``."""
    fast = _fast_for(size, dtype, device)
    if fast is not None:
        out = torch.empty(size, dtype=dtype)
        fast.fill(out.numpy(), seed)
        return out
    return torch.randn(
        size, dtype=dtype, device=device, generator=_generator(device).manual_seed(seed)
    )


class Job:
    """One node's noise, ``randn(seed) * scale`` drawn into ``out``; ``value`` (``buffer``
    when there is one: a numpy array that ``out`` views) is set once it is drawn. ``fast``:
    the :mod:`~loom_samplers.fast_randn` module that draws into ``buffer``, if any."""

    __slots__ = ("buffer", "claimed", "fast", "out", "scale", "seed", "value")

    def __init__(
        self, seed: int, scale: float, out: Tensor, buffer: np.ndarray | None, fast: Any = None
    ) -> None:
        self.seed, self.scale, self.out, self.buffer = seed, scale, out, buffer
        self.fast = fast if buffer is not None else None
        self.claimed = False
        self.value: Any = None

    def run(self) -> None:
        out = self.out
        try:
            if self.fast is not None:
                self.fast.fill(self.buffer, self.seed, self.scale)
            else:
                torch.randn(
                    out.shape, generator=_generator(out.device).manual_seed(self.seed), out=out
                )
                out.mul_(self.scale)  # torchsde's sqrt(var) * noise: a multiply by the float
        except BaseException as exc:  # handed to whoever waits for the job, which raises it
            self.value = exc
            return
        self.value = out if self.buffer is None else self.buffer


def _compile_chunk() -> Callable[..., None] | None:
    """The TorchScript ``draw_chunk`` (None where TorchScript is unavailable), warmed up."""
    try:
        function = torch.jit.CompilationUnit(_CHUNK_SOURCE).draw_chunk
        function([0], [1.0], [torch.empty(16)], torch.Generator())
        return function
    except Exception:  # workers then draw one job at a time
        return None


class _Pool:
    """Daemon threads that work through the :class:`Draws` put in their queue."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.threads = 0
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.busy = 0  # threads inside torch (compiling, drawing)
        self.stopping = False

    def submit(self, draws: Draws, count: int) -> None:
        with self.lock:
            if self.stopping:
                return
            while self.threads < count:
                try:
                    threading.Thread(
                        target=self._run, name=f"loom-brownian-{self.threads}", daemon=True
                    ).start()
                except RuntimeError:  # no more threads to be had: callers draw the rest
                    break
                self.threads += 1
                self.busy += 1  # until its TorchScript is compiled
        for _ in range(min(count, self.threads)):
            self.queue.put(draws)

    def stop(self, timeout: float = 60.0) -> None:
        """Let the workers finish the draws in hand and take no more: at exit, a daemon thread
        still inside torch when the interpreter finalizes aborts the process."""
        with self.lock:
            self.stopping = True
            self.idle.wait_for(lambda: self.busy == 0, timeout)

    def _run(self) -> None:
        # thread-local settings: inference mode lets the worker fill tensors that the caller
        # made in inference mode; the JIT executor's optimisations would only add profiling runs
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            try:
                chunk = _compile_chunk()
            finally:
                self._out_of_torch()
            while True:
                draws = self.queue.get()
                with self.lock:
                    if self.stopping:
                        continue
                    self.busy += 1
                try:
                    draws.work(chunk)
                finally:
                    self._out_of_torch()

    def _out_of_torch(self) -> None:
        with self.lock:
            self.busy -= 1
            self.idle.notify_all()


_pool = _Pool()


def _reset_pool() -> None:
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_reset_pool)  # a forked child has none of the threads
atexit.register(lambda: _pool.stop())


class Draws:
    """A tree's queue of noise draws: worker threads take them in order; :meth:`wait` takes
    the wanted one (or, when a worker has it, the next one) on the calling thread."""

    def __init__(
        self,
        size: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        workers: int | None = None,
    ) -> None:
        self.size, self.dtype, self.device = size, dtype, device
        self.fast = _fast_for(size, dtype, device)
        self.workers = worker_count(self.fast is not None) if workers is None else workers
        self.pending: deque[Job] = deque()
        self.lock = threading.Lock()
        self.done: queue.SimpleQueue = queue.SimpleQueue()

    def job(self, seed: int, scale: float, buffer: np.ndarray | None = None) -> Job:
        """A job drawing into ``buffer`` (a numpy array shaped like the tree) or a new tensor."""
        if buffer is None:
            out = torch.empty(self.size, dtype=self.dtype, device=self.device)
        else:
            out = torch.from_numpy(buffer)
        return Job(seed, scale, out, buffer, self.fast)

    def add(self, jobs: Iterable[Job], *, first: bool = False) -> None:
        """Queue ``jobs`` (``first``: before those already queued). Without workers they are
        drawn when waited for."""
        if self.workers <= 0:
            return
        with self.lock:
            if first:
                self.pending.extendleft(reversed(list(jobs)))
            else:
                self.pending.extend(jobs)
        _pool.submit(self, self.workers)

    def claim(self, job: Job) -> bool:
        """Take ``job`` off the queue for the caller (to draw it, or to drop it) if nobody has
        started it; ``False`` if somebody has."""
        with self.lock:
            if job.claimed:
                return False
            job.claimed = True
            return True

    def _next(self) -> Job | None:
        pending = self.pending
        while pending:
            job = pending.popleft()
            if not job.claimed:
                job.claimed = True
                return job
        return None

    def work(self, chunk: Callable[..., None] | None) -> None:
        """A worker's part: draw queued jobs, up to :data:`CHUNK` per call, until none are left."""
        generator = _generator(self.device)
        while not _pool.stopping:
            with self.lock:
                # a share of what is queued, so that the caller and other workers have some too
                limit = max(1, min(CHUNK, len(self.pending) // (self.workers + 1)))
                jobs = []
                while len(jobs) < limit and (job := self._next()) is not None:
                    jobs.append(job)
            if not jobs:
                return
            # TorchScript's multiply by a float rounds differently in float16 / bfloat16
            fast = jobs[0].fast
            if fast is not None or (chunk is not None and jobs[0].buffer is not None):
                try:
                    if fast is not None:
                        fast.fill_many(
                            [job.buffer for job in jobs],
                            [job.seed for job in jobs],
                            [job.scale for job in jobs],
                        )
                    else:
                        chunk(
                            [job.seed for job in jobs],
                            [job.scale for job in jobs],
                            [job.out for job in jobs],
                            generator,
                        )
                except Exception:  # drawn again one by one below, which keeps any error
                    pass
                else:
                    for job in jobs:
                        job.value = job.buffer
            for job in jobs:
                if job.value is None:
                    job.run()
            self.done.put(None)

    def wait(self, job: Job) -> Any:
        """``job``'s value, drawing it or other queued jobs here rather than idling."""
        while job.value is None:
            with self.lock:
                if job.claimed:
                    mine = self._next()
                else:
                    job.claimed, mine = True, job
            if mine is not None:
                mine.run()
            else:
                self.done.get()  # a worker has it: wait for a worker to finish some
        value = job.value
        if isinstance(value, BaseException):
            raise value
        return value
