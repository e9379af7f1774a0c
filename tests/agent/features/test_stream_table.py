"""The bounded stream table: lookups allocate, contains only reads, the least recently updated are evicted;
the C hash index and the numpy sorted index agree under any sequence of operations."""

from __future__ import annotations

import numpy as np
import pytest

from agent.features.stream_table import HashIndex, SortedIndex, StreamTable, _hash_kernel

INDEXES = ["sorted", "hash"]


@pytest.fixture(params=INDEXES)
def index(request) -> str:
    if request.param == "hash" and _hash_kernel() is None:
        pytest.skip("the compiled kernels are not built here (.ci/run builds them)")
    return request.param


def keys(*values: int) -> np.ndarray:
    return np.array(sorted(values), dtype=np.uint64)


def test_lookup_allocates_once_and_contains_only_reads(index):
    table = StreamTable(4, np.zeros(1), index)
    slots, new = table.lookup(keys(5, 9), np.array([1.0, 1.0]))
    assert new.tolist() == [True, True] and len(table) == 2
    again, new = table.lookup(keys(5, 9), np.array([2.0, 2.0]))
    assert again.tolist() == slots.tolist() and not new.any()
    assert table.contains(np.array([9, 7, 5, 0], dtype=np.uint64)).tolist() == [True, False, True, False]
    assert table.find(np.array([9, 9, 7], dtype=np.uint64)).tolist() == [slots[1], slots[1], -1]
    assert len(table) == 2  # contains and find added nothing


def test_the_least_recently_updated_are_evicted_and_forgotten(index):
    table = StreamTable(2, np.zeros(1), index)
    table.lookup(keys(1), np.array([1.0]))
    table.lookup(keys(2), np.array([2.0]))
    table.t_last[table.lookup(keys(1), np.array([3.0]))[0]] = 3.0  # key 1 updated after key 2
    table.lookup(keys(3), np.array([4.0]))
    assert table.contains(keys(1, 2, 3)).tolist() == [True, False, True]
    assert table.evicted == 1 and len(table) == 2


def test_an_empty_table_contains_nothing(index):
    assert StreamTable(1, np.zeros(1), index).contains(keys(1, 2)).tolist() == [False, False]


def test_hash_and_sorted_index_agree_under_churn():
    """Random adds and removals with keys crowded onto few home cells (long probe runs, wrap-around)."""
    kernel = _hash_kernel()
    if kernel is None:
        pytest.skip("the compiled kernels are not built here (.ci/run builds them)")
    rng = np.random.default_rng(11)
    budget = 64
    hashed, plain = HashIndex(budget, kernel), SortedIndex(budget)
    key_of = {}  # slot -> key
    universe = np.concatenate([rng.integers(0, 2**63, 40, dtype=np.uint64),
                               np.arange(40, dtype=np.uint64) << np.uint64(57)])  # same top bits: same home  # fmt: skip
    for step in range(3000):
        if key_of and (len(key_of) == budget or rng.random() < 0.45):
            slots = rng.choice(sorted(key_of), size=min(len(key_of), int(rng.integers(1, 4))), replace=False)
            hashed.remove(slots.astype(np.int64))
            plain.remove(slots.astype(np.int64))
            for s in slots:
                del key_of[int(s)]
        else:
            absent = [k for k in universe if k not in key_of.values()]
            free = [s for s in range(budget) if s not in key_of]
            m = min(len(absent), len(free), int(rng.integers(1, 4)))
            new = rng.choice(np.array(absent, dtype=np.uint64), size=m, replace=False)
            slots = np.array(rng.choice(free, size=m, replace=False), dtype=np.int64)
            hashed.add(new, slots)
            plain.add(new, slots)
            key_of.update(zip(slots.tolist(), new.tolist()))
        probe = rng.choice(universe, size=30)
        assert hashed.find(probe).tolist() == plain.find(probe).tolist(), f"step {step}"
        assert len(hashed) == len(plain) == len(key_of)


def test_eviction_in_a_large_table_picks_exactly_the_least_recently_updated():
    """The sampled bound only narrows the search: the evicted are the oldest, as a full partition finds them."""
    rng = np.random.default_rng(3)
    budget = 50_000
    table = StreamTable(budget, np.zeros(1), "sorted")
    keys = rng.permutation(np.arange(1, budget + 1, dtype=np.uint64))
    t = rng.random(budget) * 1000
    table.lookup(keys, t)
    table.lookup(np.arange(budget + 1, budget + 10_001, dtype=np.uint64), np.full(10_000, 2000.0))
    gone = ~table.contains(keys)
    assert table.evicted == gone.sum() >= 10_000 and len(table) <= budget
    assert t[gone].max() <= np.sort(t)[table.evicted - 1]  # exactly the oldest (random times: no ties)
