"""torch.randn's float32 CPU draws from the C extension ``loom_samplers._randn``, where they
are torch's bits.

The Brownian tree draws a full-latent ``randn`` per tree node from a freshly seeded CPU
generator (torchsde's recipe, so ComfyUI's SDE images); torch makes those numbers one at a
time from its MT19937 engine, ~60 us at 4x64x64. ``_randn`` makes the same numbers ~4x
faster, and does the tree's float32 arithmetic in the same pass. It repeats the instructions
of torch's x86 AVX2 kernel, so :func:`fast_fill` first compares each of its kernels (AVX-512,
AVX2) with ``torch.randn`` on this machine and this torch, bit for bit, for several seeds,
scales and sizes, and uses the fastest that agrees. An ARM CPU, another torch kernel or an
install without a C compiler fall back to torch. ``LOOM_FAST_RANDN=0`` turns it off.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch

__all__ = ["fast_fill", "same_as_torch"]

log = logging.getLogger(__name__)

_CHECK_SEEDS = (0, 1, 2**32 - 1, 20240229, 3141592653)
# one block, a redrawn tail, one and two odd AVX-512 pairs of blocks, a latent plus a tail
_CHECK_SIZES = (16, 23, 48, 1000, 4 * 64 * 64 + 9)
_CHECK_SCALE = 0.3711


@functools.cache
def fast_fill() -> ModuleType | None:
    """The ``_randn`` module where one of its kernels draws what torch draws here, else None."""
    if os.environ.get("LOOM_FAST_RANDN", "1").strip() == "0":
        return None
    try:
        from loom_samplers import _randn
    except ImportError:  # installed without a C compiler
        return None
    for kernel in _randn.kernels():
        _randn.use(kernel)
        if same_as_torch(_randn.fill):
            return _randn
        log.info("loom_samplers._randn's %s kernel differs from this torch's randn", kernel)
    return None


def same_as_torch(fill: Callable[[np.ndarray, int, float], None]) -> bool:
    """Whether ``fill(out, seed, scale)`` gives ``torch.randn(..., generator=seed) * scale``."""
    generator = torch.Generator()
    with torch.inference_mode():
        for seed in _CHECK_SEEDS:
            for size in _CHECK_SIZES:
                for scale in (1.0, _CHECK_SCALE):
                    expected = torch.randn(size, generator=generator.manual_seed(seed))
                    if scale != 1.0:
                        expected.mul_(scale)
                    ours = np.empty(size, dtype=np.float32)
                    fill(ours, seed, scale)
                    if not np.array_equal(ours.view(np.uint32), expected.numpy().view(np.uint32)):
                        return False
    return True
