"""The memory-saving paths of dupfinder.index give the same answers as brute force.

find_matches splits more than _QUERIES queries into parts (by ranges of MIH
substring keys, or by position for brute force and BK-tree); the tests force
tiny parts, tables and steps so every one of those paths runs on small inputs.
"""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupfinder import index
from dupfinder.index import find_matches, find_pairs

from .test_index import forced_layout, hash_sets, ref_matches, ref_pairs


def clumped(rng, n, words):
    """Copies of a few centres with 0-4 bits flipped per word, plus exact duplicates."""
    centres = rng.integers(0, 2**64, size=(max(1, n // 20), words), dtype=np.uint64)
    h = centres[rng.integers(0, len(centres), size=n)]
    for _ in range(4 * words):
        flip = rng.random(n) < 0.5
        pos = rng.integers(0, 64 * words, size=n)
        h[flip, pos[flip] // 64] ^= np.uint64(1) << (pos[flip] % 64).astype(np.uint64)
    return h[:, 0].copy() if words == 1 else h


def tiny(queries=7, candidates=5, lookups=3, block=11):
    return (mock.patch.object(index, "_QUERIES", queries), mock.patch.object(index, "_CANDIDATES", candidates),
            mock.patch.object(index, "_LOOKUPS", lookups), mock.patch.object(index, "_BLOCK", block))


def same(a, b):
    return (np.array_equal(a.left, b.left) and np.array_equal(a.right, b.right)
            and np.array_equal(a.distance, b.distance) and a.left.dtype == b.left.dtype == np.int64
            and a.right.dtype == np.int64 and a.distance.dtype == b.distance.dtype == np.int32)


@pytest.mark.parametrize("method", index.METHODS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_find_matches_in_parts_matches_reference(method, data):
    words = data.draw(st.sampled_from([1, 4]))
    queries, database = data.draw(hash_sets(words)), data.draw(hash_sets(words, max_size=25))
    threshold = data.draw(st.integers(0, 64 * words if method != "bktree" else 20))
    patches = tiny(queries=data.draw(st.sampled_from([1, 3, 8])))
    with patches[0], patches[1], patches[2], patches[3]:
        got = find_matches(queries, database, threshold, method=method)
    assert list(got) == ref_matches(queries, database, threshold)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_mih_in_parts_exact_for_any_substring_count(data):
    words = data.draw(st.sampled_from([1, 4]))
    queries, database = data.draw(hash_sets(words)), data.draw(hash_sets(words))
    threshold = data.draw(st.integers(1, 64 * words))
    m = forced_layout(data.draw, words, threshold)
    if m > 32:  # each substring rescans every chunk: 40 hashes in 200 substrings took 10-30 s
        queries, database = queries[:10], database[:10]
    patches = tiny(queries=data.draw(st.sampled_from([1, 5, 1 << 20])), lookups=data.draw(st.sampled_from([1, 4, 1 << 17])))
    with mock.patch.object(index, "_mih_plan", lambda *args: (0.0, m)), patches[0], patches[1], patches[2], patches[3]:
        assert list(find_pairs(database, threshold, method="mih")) == ref_pairs(database, threshold)
        assert list(find_matches(queries, database, threshold, method="mih")) == ref_matches(queries, database, threshold)


@pytest.mark.parametrize("words, threshold", [(1, 5), (1, 9), (4, 31)])
def test_parts_agree_with_one_part_on_clumped_hashes(words, threshold):
    rng = np.random.default_rng(words * 100 + threshold)
    database, queries = clumped(rng, 3000, words), clumped(rng, 2500, words)
    queries[::50] = database[::60][: len(queries[::50])]  # exact copies across the two sides
    expected = find_matches(queries, database, threshold, method="brute")
    assert len(expected) > 500
    for method in ("mih", "auto"):
        with mock.patch.object(index, "_QUERIES", 400):
            assert same(find_matches(queries, database, threshold, method=method), expected)
        assert same(find_matches(queries, database, threshold, method=method), expected)
    assert same(find_pairs(database, threshold, method="mih"), find_pairs(database, threshold, method="brute"))


def test_all_distinct_and_all_equal_hashes():
    rng = np.random.default_rng(7)
    distinct = rng.integers(0, 2**64, size=3000, dtype=np.uint64)
    distinct[1::2] = distinct[::2] ^ np.uint64(1 << 40)  # distinct, yet in pairs at distance 1
    for method in ("mih", "brute"):
        p = find_pairs(distinct, 1, method=method)
        assert list(p) == [(i, i + 1, 1) for i in range(0, 3000, 2)] and same(p, p)
    with mock.patch.object(index, "_QUERIES", 100):
        m = find_matches(distinct[::2], distinct, 0, method="mih")
    assert list(m) == [(i, 2 * i, 0) for i in range(1500)]
    equal = np.full(300, 99, np.uint64)
    with mock.patch.object(index, "_QUERIES", 64):
        m = find_matches(equal[:200], equal, 2, method="mih")
    assert len(m) == 200 * 300 and m.left.tolist() == np.repeat(np.arange(200), 300).tolist()


def test_keysort_is_a_stable_sort():
    keys = np.random.default_rng(0).integers(0, 1 << 24, size=50_000).astype(np.int32)
    keys[::3] = 12345  # many ties
    with mock.patch.object(index, "_BLOCK", 1000):
        perm, srt = index._keysort(keys.copy())
    assert perm.dtype == np.int32
    assert np.array_equal(perm, np.argsort(keys, kind="stable")) and np.array_equal(srt, np.sort(keys))


def test_bktree_is_built_once_for_all_parts_of_the_queries():
    rng = np.random.default_rng(3)
    queries = rng.integers(0, 2**64, size=300, dtype=np.uint64)
    database = np.concatenate([queries[:50] ^ np.uint64(1), rng.integers(0, 2**64, size=100, dtype=np.uint64)])
    built = []
    real = index.pybktree.BKTree

    def counting(*args):
        built.append(1)
        return real(*args)

    expected = index.find_matches(queries, database, 2, method="brute")
    with mock.patch.object(index, "_QUERIES", 64), mock.patch.object(index.pybktree, "BKTree", counting):
        got = index.find_matches(queries, database, 2, method="bktree")
    assert got == expected and len(got) >= 50
    assert len(built) == 1
