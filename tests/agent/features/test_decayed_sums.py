"""agent.features.decayed_sums: the vectorised segment sums against obviously correct scalar loops.

Streams get random lengths (one packet, a few, hundreds), random stored states and times, and gaps long
enough that ``decayed_sums`` has to cut a stream into several blocks and chain the carry between them.
"""

from __future__ import annotations

import numpy as np
import pytest

from agent.features.decayed_sums import (
    BLOCK_BITS,
    Segments,
    decayed_sums,
    previous_time,
    running_time,
    segmented_accumulate,
)

LAMBDAS = np.array([5.0, 3.0, 1.0, 0.1, 0.01])  # N-BaIoT's decay rates


def random_segments(rng: np.random.Generator, streams: int) -> Segments:
    lengths = rng.choice([1, 1, 2, 3, 7, 16, 17, rng.integers(1, 300)], size=streams)
    return Segments.from_sorted(np.repeat(np.arange(streams), lengths))


def scalar_sums(seg: Segments, T: np.ndarray, terms: np.ndarray, init: np.ndarray, t_init: np.ndarray) -> np.ndarray:
    """S_k = 2^(-lam (T_k - T_{k-1})) S_{k-1} + c_k, one packet at a time, starting from the stored state."""
    out = np.zeros((len(T), len(LAMBDAS), terms.shape[2]))
    for s in range(len(seg)):
        state, t_last = init[s].copy(), t_init[s]
        for k in range(seg.start[s], seg.start[s] + seg.length[s]):
            state = state * np.exp2(-LAMBDAS * (T[k] - t_last))[:, None] + terms[k]
            t_last = T[k]
            out[k] = state
    return out


def stream_times(rng: np.random.Generator, seg: Segments, long_gaps: bool) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing packet times per stream, and each stream's stored time (before its first packet)."""
    gaps = rng.exponential(0.05, len(seg.ids))
    if long_gaps:  # idle periods of hundreds of seconds: more than BLOCK_BITS bits of decay at lambda 5
        gaps[rng.random(len(gaps)) < 0.05] = rng.uniform(150, 900)
    T = np.empty(len(gaps))
    for s in range(len(seg)):
        run = slice(seg.start[s], seg.start[s] + seg.length[s])
        T[run] = 1.6e9 + rng.uniform(0, 10) + np.cumsum(gaps[run])
    t_init = T[seg.start] - rng.choice([0.0, 0.01, 2.0, 400.0], len(seg))
    return T, t_init


@pytest.mark.parametrize("long_gaps", [False, True], ids=["one_block", "chained_blocks"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decayed_sums_match_the_scalar_recurrence(seed, long_gaps):
    rng = np.random.default_rng(seed)
    seg = random_segments(rng, 40)
    n = len(seg.ids)
    T, t_init = stream_times(rng, seg, long_gaps)
    if long_gaps:  # the case the block carry exists for
        spans = LAMBDAS.max() * (T[seg.last] - T[seg.start])
        assert (spans > BLOCK_BITS).any()
    terms = rng.uniform(0, 1500, (n, len(LAMBDAS), 3))
    init = rng.uniform(0, 5000, (len(seg), len(LAMBDAS), 3))
    got = decayed_sums(seg, T, LAMBDAS, terms, init, t_init)
    want = scalar_sums(seg, T, terms, init, t_init)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_terms_shared_by_every_rate_broadcast():
    rng = np.random.default_rng(5)
    seg = random_segments(rng, 10)
    T, t_init = stream_times(rng, seg, long_gaps=False)
    terms = rng.uniform(0, 10, (len(T), 1, 2))
    init = np.zeros((len(seg), len(LAMBDAS), 2))
    got = decayed_sums(seg, T, LAMBDAS, terms, init, t_init)
    want = scalar_sums(seg, T, np.broadcast_to(terms, (len(T), len(LAMBDAS), 2)), init, t_init)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_a_single_stream_by_hand():
    # Lambda 1: the stored 4 (at t=-1) has halved twice by the first packet (t=1); then every second what is
    # there halves and the packet adds 1.
    seg = Segments.from_sorted(np.zeros(3, dtype=np.int64))
    T = np.array([1.0, 2.0, 3.0])
    got = decayed_sums(seg, T, np.array([1.0]), np.ones((3, 1, 1)), np.full((1, 1, 1), 4.0), np.array([-1.0]))
    np.testing.assert_allclose(got[:, 0, 0], [1 + 1, 2 / 2 + 1, 2 / 2 + 1])


def test_no_packets():
    seg = Segments.from_sorted(np.zeros(0, dtype=np.int64))
    out = decayed_sums(seg, np.zeros(0), LAMBDAS, np.zeros((0, len(LAMBDAS), 4)), np.zeros((0, 5, 4)), np.zeros(0))
    assert out.shape == (0, len(LAMBDAS), 4)


def test_segments_from_sorted_keys():
    seg = Segments.from_sorted(np.array([3, 3, 5, 8, 8, 8]))
    assert seg.start.tolist() == [0, 2, 3]
    assert seg.length.tolist() == [2, 1, 3]
    assert seg.ids.tolist() == [0, 0, 1, 2, 2, 2]
    assert seg.last.tolist() == [1, 2, 5]
    assert seg.first_mask(6).tolist() == [True, False, True, True, False, False]


@pytest.mark.parametrize("ufunc", [np.add, np.maximum], ids=["add", "maximum"])
def test_segmented_accumulate_restarts_at_every_segment(ufunc):
    rng = np.random.default_rng(3)
    seg = random_segments(rng, 60)
    values = rng.normal(size=(len(seg.ids), 2))
    got = segmented_accumulate(ufunc, values, seg)
    for s in range(len(seg)):
        run = slice(seg.start[s], seg.start[s] + seg.length[s])
        np.testing.assert_allclose(got[run], ufunc.accumulate(values[run], axis=0), rtol=1e-12)


def test_running_and_previous_time_follow_each_stream():
    rng = np.random.default_rng(4)
    seg = random_segments(rng, 30)
    t = rng.uniform(0, 100, len(seg.ids))  # out of order within streams
    t_init = rng.uniform(0, 50, len(seg))
    T = running_time(t, t_init, seg)
    before = previous_time(T, t_init, seg)
    for s in range(len(seg)):
        latest = t_init[s]
        for k in range(seg.start[s], seg.start[s] + seg.length[s]):
            assert before[k] == latest
            latest = max(latest, t[k])
            assert T[k] == latest
