"""A fixed-budget table of stream states, keyed by 64-bit stream hashes.

Rows ("slots") hold each stream's state and the time it was last updated; an
index maps keys to slots.  When new streams do not fit, the least recently
updated streams that the current batch does not touch are evicted; an evicted
stream simply restarts from nothing if it comes back (DESIGN 4, bounded memory).

Two interchangeable indexes: a hash index in C (agent/native/stream_index.c),
one probe per key, and a sorted key array searched with numpy, the fallback the
tests hold it to.
"""

from __future__ import annotations

import numpy as np

from agent import native


EVICT_SLACK = 8  # a full table evicts at least budget / EVICT_SLACK entries at once
EVICT_SAMPLE = 4096  # ages sampled to find the eviction bound in a large table


class SortedIndex:
    """key -> slot through a sorted key array: a whole batch is looked up with one ``searchsorted``."""

    def __init__(self, budget: int) -> None:
        self.keys = np.empty(0, dtype=np.uint64)  # sorted keys in use
        self.slots = np.empty(0, dtype=np.int64)  # slot of each key in ``keys``

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.slots.nbytes

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The slot of every key, -1 where absent."""
        out = np.full(len(keys), -1, dtype=np.int64)
        if len(self.keys):
            pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            found = self.keys[pos] == keys
            out[found] = self.slots[pos[found]]
        return out

    def add(self, keys: np.ndarray, slots: np.ndarray) -> None:
        """Enter absent, distinct ``keys`` at ``slots``."""
        order = np.argsort(keys)
        at = np.searchsorted(self.keys, keys[order])
        self.keys = np.insert(self.keys, at, keys[order])
        self.slots = np.insert(self.slots, at, slots[order])

    def remove(self, slots: np.ndarray) -> None:
        keep = ~np.isin(self.slots, slots)
        self.keys, self.slots = self.keys[keep], self.slots[keep]


class HashIndex:
    """key -> slot through the C hash index: open addressing, kept at most half full."""

    def __init__(self, budget: int, kernel: dict) -> None:
        self.k = kernel
        self.bits = max(4, int(np.ceil(np.log2(2 * budget))))
        self.cells = np.zeros(1 << self.bits, dtype=np.int32)  # slot + 1, 0: empty
        self.slot_key = np.zeros(budget, dtype=np.uint64)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        return self.cells.nbytes + self.slot_key.nbytes

    def find(self, keys: np.ndarray) -> np.ndarray:
        out = np.empty(len(keys), dtype=np.int64)
        self.k["find"](len(keys), np.ascontiguousarray(keys, np.uint64), self.cells, self.bits, self.slot_key, out)
        return out

    def add(self, keys: np.ndarray, slots: np.ndarray) -> None:
        self.k["add"](len(keys), np.ascontiguousarray(keys, np.uint64), np.ascontiguousarray(slots, np.int64),
                      self.cells, self.bits, self.slot_key)  # fmt: skip
        self.count += len(keys)

    def remove(self, slots: np.ndarray) -> None:
        self.k["remove"](len(slots), np.ascontiguousarray(slots, np.int64), self.cells, self.bits, self.slot_key)
        self.count -= len(slots)


def _hash_kernel() -> dict | None:
    """agent/native/stream_index.c's functions (signatures declared here), or None."""
    v, cells = native, np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
    fns = {
        "find": v.function("iotguard_index_find", [v.n, v.u64, cells, v.i32, v.u64, v.i64]),
        "add": v.function("iotguard_index_add", [v.n, v.u64, v.i64, cells, v.i32, v.u64]),
        "remove": v.function("iotguard_index_remove", [v.n, v.i64, cells, v.i32, v.u64]),
    }
    return fns if all(fns.values()) else None


class StreamTable:
    def __init__(self, budget: int, init_row: np.ndarray, index: str = "auto") -> None:
        """``index``: "hash" (the C index), "sorted" (numpy), or "auto": hash when the kernels were built."""
        if budget < 1:
            raise ValueError("a stream table needs a budget of at least one entry")
        self.budget = int(budget)
        self.init_row = np.asarray(init_row, dtype=np.float64)
        # Reserved at full size once: the pages are only touched (and counted in RSS) as slots are
        # used, and the table never holds two copies of itself while growing.
        self.state = np.empty((self.budget, len(self.init_row)))
        self.t_last = np.empty(self.budget)
        kernel = None if index == "sorted" else _hash_kernel()
        if index == "hash" and kernel is None:
            raise RuntimeError("the compiled hash index is not available (a C compiler builds it at install)")
        self.index = HashIndex(self.budget, kernel) if kernel else SortedIndex(self.budget)
        self.in_use = np.zeros(self.budget, dtype=bool)
        self.free = np.empty(0, dtype=np.int64)  # slots given back by eviction
        self.fresh = 0  # slots fresh..budget-1 were never used (not even counted in RSS yet)
        self.evicted = 0
        self._rng = np.random.default_rng(0)  # eviction's age samples: the same victims on every run

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return self.state.nbytes + self.t_last.nbytes + self.index.nbytes + self.in_use.nbytes + self.free.nbytes

    def lookup(self, keys: np.ndarray, t_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots for distinct ``keys``; absent keys get fresh rows with ``t_last = t_new``.

        Returns (slots, is_new).  ``len(keys)`` must not exceed the budget.
        """
        if len(keys) > self.budget:
            raise ValueError(f"{len(keys)} streams in one batch exceed the table budget {self.budget}")
        slots = self.index.find(keys)
        is_new = slots < 0
        if is_new.any():
            slots[is_new] = self.insert(keys[is_new], t_new[is_new], protected=slots[~is_new])
        return slots, is_new

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The slot of every key (repeats allowed), -1 where absent: a read, nothing is added or touched."""
        return self.index.find(keys)

    def insert(self, keys: np.ndarray, t_new: np.ndarray, protected: np.ndarray) -> np.ndarray:
        """Fresh rows for absent, distinct ``keys`` (t_last = ``t_new``); when the table is full the least
        recently updated rows are evicted, never the ``protected`` slots (those the batch uses)."""
        slots = self._allocate(len(keys), protected)
        self.index.add(keys, slots)
        self.in_use[slots] = True
        self.state[slots] = self.init_row
        self.t_last[slots] = t_new
        return slots

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Which ``keys`` are in the table (a read: nothing is added or touched)."""
        return self.index.find(keys) >= 0

    def _allocate(self, count: int, protected: np.ndarray) -> np.ndarray:
        """``count`` free slots, evicting least recently updated entries when none are left."""
        short = count - len(self.free) - (self.budget - self.fresh)
        if short > 0:
            # Evict an eighth of the budget at least (when that many are not protected): under a flood of new
            # streams the search for the least recently updated then runs every few batches, not every batch.
            in_use = self.fresh - len(self.free)
            self._evict(max(short, min(self.budget // EVICT_SLACK, in_use - len(protected))), protected)
        reused, self.free = self.free[:count], self.free[count:]
        new = np.arange(self.fresh, self.fresh + count - len(reused), dtype=np.int64)
        self.fresh += len(new)
        return np.concatenate([reused, new])

    def _oldest(self, age: np.ndarray, count: int) -> np.ndarray:
        """Slots of the ``count`` smallest ages.  A large table first finds the age below which about that many
        lie from a sample, so that only those few are sorted out (a full partition of 100,000 ages for every
        eviction cost a spoofed flood more than its features); the same smallest ages, ties aside."""
        if len(age) > 4 * EVICT_SAMPLE:
            sample = age[self._rng.integers(0, len(age), EVICT_SAMPLE)]
            share = min(1.0, 1.25 * count / len(age) + 0.01)  # aim a little above ``count``
            bound = np.quantile(sample, share)
            candidates = np.flatnonzero(age <= bound)
            # Exact when the candidates hold the ``count`` smallest: all ages at or below the bound are in them.
            if len(candidates) >= count and np.isfinite(bound):
                pick = np.argpartition(age[candidates], count - 1)[:count]
                return candidates[pick].astype(np.int64)
        return np.argpartition(age, count - 1)[:count].astype(np.int64)

    def _evict(self, count: int, protected: np.ndarray) -> None:
        """Drop the ``count`` least recently updated entries, sparing the ``protected`` slots."""
        age = np.where(self.in_use[: self.fresh], self.t_last[: self.fresh], np.inf)
        age[protected] = np.inf
        victims = self._oldest(age, count)
        self.index.remove(victims)
        self.in_use[victims] = False
        self.free = np.concatenate([self.free, victims])
        self.evicted += count
