"""64-bit hashes of tuples of numpy word arrays: the stream, source and target keys of a batch."""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Fold one 64-bit word into a running hash (splitmix64 finaliser)."""
    z = (h ^ v.astype(np.uint64, copy=False)) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash_words(tag: int, *words: np.ndarray) -> np.ndarray:
    h = np.full(len(words[0]), tag, dtype=np.uint64)
    for w in words:
        h = _mix(h, w)
    return h
