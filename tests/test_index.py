"""Every index method against a tiny obviously-correct reference on Python ints."""

import gc
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupfinder import index
from dupfinder.index import METHODS, Pairs, find_matches, find_pairs, hamming_distance
from dupfinder.models import UsageError


def as_ints(hashes):
    rows = hashes if hashes.ndim == 2 else hashes[:, None]
    return [sum(int(x) << (64 * k) for k, x in enumerate(row)) for row in rows]


def ref_pairs(hashes, threshold):
    v = as_ints(hashes)
    dist = [[bin(a ^ b).count("1") for b in v] for a in v]
    return [(i, j, dist[i][j]) for i in range(len(v)) for j in range(i + 1, len(v)) if dist[i][j] <= threshold]


def ref_matches(queries, database, threshold):
    q, d = as_ints(queries), as_ints(database)
    return [(i, j, bin(a ^ b).count("1")) for i, a in enumerate(q) for j, b in enumerate(d)
            if bin(a ^ b).count("1") <= threshold]


def to_array(values, words):
    arr = np.array([[(v >> (64 * k)) & (2**64 - 1) for k in range(words)] for v in values], dtype=np.uint64)
    return arr.reshape(len(values), words)[:, 0] if words == 1 else arr.reshape(len(values), words)


@st.composite
def hash_sets(draw, words, max_size=40):
    """Uniform hashes, a few values with many duplicates, or clumps: centres plus few-bit flips."""
    bits = 64 * words
    n = draw(st.integers(0, max_size))
    kind = draw(st.sampled_from(["uniform", "duplicates", "clumped"]))
    if kind == "uniform":
        values = draw(st.lists(st.integers(0, 2**bits - 1), min_size=n, max_size=n))
    else:
        centres = draw(st.lists(st.integers(0, 2**bits - 1), min_size=1, max_size=4))
        flips = st.lists(st.integers(0, bits - 1), max_size=0 if kind == "duplicates" else 6)
        values = []
        for _ in range(n):
            v = draw(st.sampled_from(centres))
            for b in draw(flips):
                v ^= 1 << b
            values.append(v)
    return to_array(values, words)


@st.composite
def problems(draw, pair=False):
    words = draw(st.sampled_from([1, 4]))
    hashes = draw(hash_sets(words))
    threshold = draw(st.one_of(st.integers(0, 12), st.integers(0, 64 * words + 3)))
    if pair:
        return draw(hash_sets(words, max_size=15)), hashes, threshold
    return hashes, threshold


def forced_layout(draw, words, threshold):
    """An MIH substring count m, small tables and few masks, to force instead of the planner's choice."""
    bits = 64 * words
    m = draw(st.integers(math.ceil(bits / 14), bits))
    lengths, radii = index._layout(bits, threshold, m)
    volume = sum(index._volume(n, r) for n, r in zip(lengths, radii) if r >= 0)
    return m if volume <= 1500 else math.ceil(bits / 6)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=40, deadline=None)
@given(problem=problems())
def test_find_pairs_matches_reference(method, problem):
    hashes, threshold = problem
    assert list(find_pairs(hashes, threshold, method=method)) == ref_pairs(hashes, threshold)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=30, deadline=None)
@given(problem=problems(pair=True))
def test_find_matches_matches_reference(method, problem):
    queries, database, threshold = problem
    assert list(find_matches(queries, database, threshold, method=method)) == ref_matches(queries, database, threshold)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_mih_exact_for_any_substring_count(data):
    """Every m, with thresholds well past 3*m and tiny chunks, so each code path runs."""
    words = data.draw(st.sampled_from([1, 4]))
    hashes = data.draw(hash_sets(words))
    queries = data.draw(hash_sets(words, max_size=10))
    threshold = data.draw(st.integers(1, 64 * words))
    m = forced_layout(data.draw, words, threshold)
    if m > 32:  # each substring rescans every chunk: 40 hashes in 200 substrings took 10-30 s
        hashes = hashes[:10]
    with mock.patch.object(index, "_mih_plan", lambda *args: (0.0, m)), \
         mock.patch.object(index, "_CANDIDATES", data.draw(st.sampled_from([3, 50, 1 << 21]))), \
         mock.patch.object(index, "_BLOCK", data.draw(st.sampled_from([7, 1 << 19]))):
        assert list(find_pairs(hashes, threshold, method="mih")) == ref_pairs(hashes, threshold)
        assert list(find_matches(queries, hashes, threshold, method="mih")) == ref_matches(queries, hashes, threshold)


def clumped(rng, n, words, centres):
    h = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    rows = rng.choice(n, size=n // 2, replace=False)
    h[rows] = h[rng.integers(0, centres, size=len(rows))]
    for _ in range(3 * words):
        pos = rng.integers(0, 64 * words, size=len(rows))
        h[rows, pos // 64] ^= np.uint64(1) << (pos % 64).astype(np.uint64)
    return h[:, 0] if words == 1 else h


@pytest.mark.parametrize("words, threshold", [(1, 3), (1, 10), (4, 31)])
def test_methods_agree_on_thousands_of_clumped_hashes(words, threshold):
    hashes = clumped(np.random.default_rng(words + threshold), 3000, words, centres=40)
    expected = find_pairs(hashes, threshold, method="brute")
    assert len(expected) > 1000
    for method in ("mih", "auto", "bktree"):
        assert find_pairs(hashes, threshold, method=method) == expected
    queries = hashes[::7]
    expected = find_matches(queries, hashes, threshold, method="brute")
    for method in ("mih", "auto", "bktree"):
        assert find_matches(queries, hashes, threshold, method=method) == expected


def test_oversized_buckets_are_cut():
    # 5000 hashes that differ only in their low 20 bits fill a few huge MIH buckets.
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**20, size=5000).astype(np.uint64) | np.uint64(0xABCDEF1234500000)
    with mock.patch.object(index, "_CANDIDATES", 10_000):
        assert find_pairs(hashes, 3, method="mih") == find_pairs(hashes, 3, method="brute")


@pytest.mark.parametrize("method", METHODS)
def test_edge_cases(method):
    empty = find_pairs(np.empty(0, np.uint64), 3, method=method)
    assert len(empty) == 0 and empty.left.dtype == np.int64 and empty.distance.dtype == np.int32
    assert len(find_pairs(np.empty((0, 4), np.uint64), 3, method=method)) == 0
    assert len(find_pairs(np.array([7], np.uint64), 64, method=method)) == 0
    assert len(find_matches(np.empty(0, np.uint64), np.arange(5, dtype=np.uint64), 3, method=method)) == 0
    assert len(find_matches(np.arange(5, dtype=np.uint64), np.empty(0, np.uint64), 3, method=method)) == 0
    same = np.full(6, 12345, np.uint64)
    assert list(find_pairs(same, 0, method=method)) == [(i, j, 0) for i in range(6) for j in range(i + 1, 6)]
    h = np.array([1, 3, 1, 0], np.uint64)
    assert list(find_pairs(h, 0, method=method)) == [(0, 2, 0)]
    assert len(find_pairs(h, 1000, method=method)) == 6  # beyond the bit count: every pair
    wide = np.array([[1, 0, 0, 0], [1, 0, 0, 1 << 63]], np.uint64)
    assert list(find_pairs(wide, 1, method=method)) == [(0, 1, 1)]


@pytest.mark.parametrize("bad", [np.arange(3), np.arange(3, dtype=np.uint32), [1, 2, 3], np.zeros((2, 2, 2), np.uint64)])
def test_bad_hashes_raise(bad):
    with pytest.raises(ValueError, match="uint64|shape"):
        find_pairs(bad, 2)
    with pytest.raises(ValueError, match="uint64|shape"):
        find_matches(bad, np.arange(3, dtype=np.uint64), 2)


def test_bad_options_raise():
    assert issubclass(UsageError, ValueError)
    h = np.arange(4, dtype=np.uint64)
    with pytest.raises(UsageError, match="unknown method"):  # the project's ValueError
        find_pairs(h, 2, method="kdtree")
    for threshold in (-1, 2.5, None, True):
        with pytest.raises(ValueError, match="threshold"):
            find_pairs(h, threshold)
    with pytest.raises(ValueError, match="words"):
        find_matches(h, np.zeros((4, 4), np.uint64), 2)


def test_hamming_distance():
    a = np.array([0, 1, 2**64 - 1], np.uint64)
    assert hamming_distance(a, a[::-1]).tolist() == [64, 0, 64]
    assert hamming_distance(a, np.uint64(0)).tolist() == [0, 1, 64]
    wide = np.array([[1, 2**64 - 1], [0, 0]], np.uint64)
    assert hamming_distance(wide, wide[:1]).tolist() == [0, 65]
    with pytest.raises(ValueError):
        hamming_distance(wide, a)
    with pytest.raises(ValueError, match="uint64"):
        hamming_distance(np.arange(3), a)


def test_popcount_fallback_without_bitwise_count():
    x = np.random.default_rng(0).integers(0, 2**64, size=(50, 3), dtype=np.uint64)
    assert index._popcount_lut(x).tolist() == [[bin(int(v)).count("1") for v in row] for row in x]
    hashes = clumped(np.random.default_rng(1), 500, 1, centres=10)
    expected = find_pairs(hashes, 6, method="brute")
    with mock.patch.object(index, "_popcount", index._popcount_lut), \
         mock.patch.object(index, "_HAS_BITWISE_COUNT", False):
        for method in METHODS:
            assert find_pairs(hashes, 6, method=method) == expected


def test_pairs_value_semantics():
    p = find_pairs(np.array([5, 4, 5], np.uint64), 1)
    assert p == Pairs(np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([1, 0, 1], np.int32))
    assert all(type(x) is int for row in p for x in row)
    assert p != Pairs(p.left, p.right, p.distance + 1)


def test_bktree_leaves_garbage_collection_as_it_was():
    h = np.arange(10, dtype=np.uint64)
    find_pairs(h, 2, method="bktree")
    assert gc.isenabled()
    gc.disable()
    try:
        find_pairs(h, 2, method="bktree")
        assert not gc.isenabled()
    finally:
        gc.enable()
