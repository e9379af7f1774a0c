"""The bounded stream table: lookups allocate, contains only reads, the least recently updated are evicted."""

from __future__ import annotations

import numpy as np

from agent.features.stream_table import StreamTable


def keys(*values: int) -> np.ndarray:
    return np.array(sorted(values), dtype=np.uint64)


def test_lookup_allocates_once_and_contains_only_reads():
    table = StreamTable(4, np.zeros(1))
    slots, new = table.lookup(keys(5, 9), np.array([1.0, 1.0]))
    assert new.tolist() == [True, True] and len(table) == 2
    again, new = table.lookup(keys(5, 9), np.array([2.0, 2.0]))
    assert again.tolist() == slots.tolist() and not new.any()
    assert table.contains(np.array([9, 7, 5, 0], dtype=np.uint64)).tolist() == [True, False, True, False]
    assert len(table) == 2  # contains added nothing


def test_the_least_recently_updated_are_evicted_and_forgotten():
    table = StreamTable(2, np.zeros(1))
    table.lookup(keys(1), np.array([1.0]))
    table.lookup(keys(2), np.array([2.0]))
    table.t_last[table.lookup(keys(1), np.array([3.0]))[0]] = 3.0  # key 1 updated after key 2
    table.lookup(keys(3), np.array([4.0]))
    assert table.contains(keys(1, 2, 3)).tolist() == [True, False, True]
    assert table.evicted == 1


def test_an_empty_table_contains_nothing():
    assert StreamTable(1, np.zeros(1)).contains(keys(1, 2)).tolist() == [False, False]
