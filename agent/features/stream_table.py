"""A fixed-budget table of stream states, keyed by 64-bit stream hashes.

Keys are kept sorted so a whole batch is looked up with one ``searchsorted``.
When new streams do not fit, the least recently updated streams that the
current batch does not touch are evicted; an evicted stream simply restarts
from nothing if it comes back (DESIGN 4, bounded memory).
"""

from __future__ import annotations

import numpy as np


class StreamTable:
    def __init__(self, budget: int, init_row: np.ndarray) -> None:
        if budget < 1:
            raise ValueError("a stream table needs a budget of at least one entry")
        self.budget = int(budget)
        self.init_row = np.asarray(init_row, dtype=np.float64)
        # Reserved at full size once: the pages are only touched (and counted in RSS) as slots are
        # used, and the table never holds two copies of itself while growing.
        self.state = np.empty((self.budget, len(self.init_row)))
        self.t_last = np.empty(self.budget)
        self.keys = np.empty(0, dtype=np.uint64)  # sorted keys in use
        self.slots = np.empty(0, dtype=np.int64)  # slot of each key in ``keys``
        self.free = np.empty(0, dtype=np.int64)  # slots given back by eviction
        self.fresh = 0  # slots fresh..budget-1 were never used (not even counted in RSS yet)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return self.state.nbytes + self.t_last.nbytes + self.keys.nbytes + self.slots.nbytes + self.free.nbytes

    def lookup(self, keys: np.ndarray, t_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots for sorted unique ``keys``; absent keys get fresh rows with ``t_last = t_new``.

        Returns (slots, is_new).  ``len(keys)`` must not exceed the budget.
        """
        if len(keys) > self.budget:
            raise ValueError(f"{len(keys)} streams in one batch exceed the table budget {self.budget}")
        pos = np.searchsorted(self.keys, keys)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        found = (pos < len(self.keys)) & (self.keys[pos_c] == keys) if len(self.keys) else np.zeros(len(keys), bool)
        slots = np.empty(len(keys), dtype=np.int64)
        slots[found] = self.slots[pos_c[found]]
        new_keys = keys[~found]
        new_slots = self._allocate(len(new_keys), protected=pos_c[found])
        slots[~found] = new_slots
        self.state[new_slots] = self.init_row
        self.t_last[new_slots] = t_new[~found]
        # Merge the new keys into the sorted index.
        at = np.searchsorted(self.keys, new_keys)
        self.keys = np.insert(self.keys, at, new_keys)
        self.slots = np.insert(self.slots, at, new_slots)
        return slots, ~found

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Which ``keys`` are in the table (a read: nothing is added or touched)."""
        if not len(self.keys):
            return np.zeros(len(keys), dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[pos] == keys

    def _allocate(self, count: int, protected: np.ndarray) -> np.ndarray:
        """``count`` free slots, evicting least recently updated entries when none are left."""
        short = count - len(self.free) - (self.budget - self.fresh)
        if short > 0:
            self._evict(short, protected)
        reused, self.free = self.free[:count], self.free[count:]
        new = np.arange(self.fresh, self.fresh + count - len(reused), dtype=np.int64)
        self.fresh += len(new)
        return np.concatenate([reused, new])

    def _evict(self, count: int, protected: np.ndarray) -> None:
        """Drop the ``count`` least recently updated keys, sparing the ``protected`` key positions."""
        age = self.t_last[self.slots].copy()
        age[protected] = np.inf
        victims = np.argpartition(age, count - 1)[:count]
        self.free = np.concatenate([self.free, self.slots[victims]])
        keep = np.ones(len(self.keys), dtype=bool)
        keep[victims] = False
        self.keys, self.slots = self.keys[keep], self.slots[keep]
        self.evicted += count
