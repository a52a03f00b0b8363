"""The seeds of torchsde's Brownian tree nodes, without building a ``SeedSequence`` per node.

torchsde seeds node ``key`` at ``depth`` with word 0 of ``numpy.random.SeedSequence(entropy,
spawn_key=(key, depth), pool_size=24).generate_state(4)``; :class:`NodeSeeds` computes that
word with a few integer operations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NodeSeeds"]

_M32 = 0xFFFFFFFF
# numpy.random.SeedSequence's hash constants (numpy/random/bit_generator.pyx)
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_XSHIFT = 16
_FINAL_MULT = (_INIT_B * _MULT_B) & _M32


def _words(value: int) -> list[int]:
    """numpy's ``_int_to_uint32_array``."""
    if value == 0:
        return [0]
    words = []
    while value > 0:
        words.append(value & _M32)
        value >>= 32
    return words


class NodeSeeds:
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
            # the common case, a key and a depth of one word each: both words' constants
            second = (self.hash0 * self.step) & _M32
            self.pair = (
                self.hash0,
                (self.hash0 * _MULT_A) & _M32,
                second,
                (second * _MULT_A) & _M32,
            )
            self.fast = all(
                self._fast(key, depth) == self._numpy(key, depth)
                for key, depth in ((0, 0), (1, 1), (2, 2), (5, 3), (2**33 + 7, 34))
            )

    def __call__(self, key: int, depth: int) -> int:
        return self._fast(key, depth) if self.fast else self._numpy(key, depth)

    def _numpy(self, key: int, depth: int) -> int:
        sequence = np.random.SeedSequence(
            entropy=self.entropy, spawn_key=(key, depth), pool_size=self.pool_size
        )
        return int(sequence.generate_state(4)[0])

    def _fast(self, key: int, depth: int) -> int:
        word, hash_const = self.word0, self.hash0
        if key <= _M32 and depth <= _M32:  # the loop below for two words, unrolled
            hash_key, mult_key, hash_depth, mult_depth = self.pair
            value = ((key ^ hash_key) * mult_key) & _M32
            word = (_MIX_L * word - _MIX_R * (value ^ (value >> _XSHIFT))) & _M32
            word ^= word >> _XSHIFT
            value = ((depth ^ hash_depth) * mult_depth) & _M32
            word = (_MIX_L * word - _MIX_R * (value ^ (value >> _XSHIFT))) & _M32
            word ^= word >> _XSHIFT
            value = ((word ^ _INIT_B) * _FINAL_MULT) & _M32
            return value ^ (value >> _XSHIFT)
        for value in (*_words(key), *_words(depth)):
            value ^= hash_const
            value = (value * ((hash_const * _MULT_A) & _M32)) & _M32
            value ^= value >> _XSHIFT
            word = (_MIX_L * word - _MIX_R * value) & _M32
            word ^= word >> _XSHIFT
            hash_const = (hash_const * self.step) & _M32
        value = ((word ^ _INIT_B) * _FINAL_MULT) & _M32
        return value ^ (value >> _XSHIFT)
