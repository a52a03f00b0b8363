"""torch.randn's float32 CPU draws from the C extension ``loom_samplers._randn``, where they
are torch's bits.

The Brownian tree draws a full-latent ``randn`` per tree node from a freshly seeded CPU
generator (torchsde's recipe, so ComfyUI's SDE images); torch makes those numbers one at a
time from its MT19937 engine, ~60 us at 4x64x64. ``_randn`` makes the same numbers ~3.5x
faster. It repeats the instructions of torch's x86 AVX2 kernel, so it is used only after
:func:`fast_fill` has compared it with ``torch.randn`` on this machine and this torch, bit
for bit, for several seeds and sizes (an ARM CPU, another torch kernel or a build without
the extension fall back to torch). ``LOOM_FAST_RANDN=0`` turns it off.
"""

from __future__ import annotations

import functools
import logging
import os
from types import ModuleType

import numpy as np
import torch

__all__ = ["fast_fill", "same_as_torch"]

log = logging.getLogger(__name__)

_CHECK_SEEDS = (0, 1, 2**32 - 1, 20240229, 3141592653)
_CHECK_SIZES = (16, 23, 1000, 4 * 64 * 64 + 9)  # one block, a redrawn tail, a latent and more
_CHECK_SCALE = 0.3711


@functools.cache
def fast_fill() -> ModuleType | None:
    """The ``_randn`` module (``fill`` / ``fill_many``) where it draws what torch draws, else None."""
    if os.environ.get("LOOM_FAST_RANDN", "1").strip() == "0":
        return None
    try:
        from loom_samplers import _randn
    except ImportError:  # built without a C compiler
        return None
    if not _randn.supported():
        return None
    if not same_as_torch(_randn.fill):
        log.info("loom_samplers._randn differs from this torch's randn here; drawing with torch")
        return None
    return _randn


def same_as_torch(fill) -> bool:
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
