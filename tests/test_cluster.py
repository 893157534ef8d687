"""Grouping pairs into groups, and the choice of the file to keep."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dupfinder.cluster import build_groups, connected_groups
from dupfinder.models import HashedFile


def files_for(hashes, **over):
    return [
        HashedFile(over.get("paths", {}).get(i, f"f{i:02d}.jpg"), over.get("sizes", {}).get(i, 100),
                   over.get("mtimes", {}).get(i, 0), *over.get("dims", {}).get(i, (100, 100)), f"{h:016x}")
        for i, h in enumerate(hashes)
    ]


def test_chain_is_one_group_and_its_spread_is_visible():
    # a~b and b~c within 2 bits, but a and c are 4 apart.
    hashes = [0b0000, 0b0011, 0b1111]
    (g,) = build_groups(files_for(hashes), np.array(hashes, np.uint64), 2)
    assert len(g) == 3
    assert g.max_distance == 4


def test_keep_most_pixels_then_largest_then_oldest_then_path():
    hashes = [0, 0, 0, 0]
    files = files_for(hashes, dims={1: (200, 200)})
    assert build_groups(files, np.zeros(4, np.uint64), 0)[0].keep.path == "f01.jpg"
    files = files_for(hashes, sizes={2: 500})
    assert build_groups(files, np.zeros(4, np.uint64), 0)[0].keep.path == "f02.jpg"
    files = files_for(hashes, mtimes={0: 5, 1: 5, 2: 5, 3: 1})
    assert build_groups(files, np.zeros(4, np.uint64), 0)[0].keep.path == "f03.jpg"
    assert build_groups(files_for(hashes), np.zeros(4, np.uint64), 0)[0].keep.path == "f00.jpg"


def test_members_ordered_keep_first_then_distance_then_path():
    hashes = [0b111, 0b0, 0b1, 0b0]
    files = files_for(hashes, dims={3: (500, 500)})
    (g,) = build_groups(files, np.array(hashes, np.uint64), 3)
    assert [(m.path, m.distance) for m in g.members] == [
        ("f03.jpg", 0), ("f01.jpg", 0), ("f02.jpg", 1), ("f00.jpg", 3)
    ]


def test_many_identical_hashes_group_without_pairs_blowup():
    n = 20_000
    files = files_for([7] * n)
    (g,) = build_groups(files, np.full(n, 7, np.uint64), 0)
    assert len(g) == n and g.max_distance == 0


def naive_components(n, edges):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    comps = {}
    for i in range(n):
        comps.setdefault(find(i), []).append(i)
    return sorted(sorted(c) for c in comps.values() if len(c) > 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=40))
))
def test_connected_groups_match_union_find(case):
    n, edges = case
    left = np.array([a for a, _ in edges], np.int64)
    right = np.array([b for _, b in edges], np.int64)
    got = sorted(sorted(c.tolist()) for c in connected_groups(n, left, right))
    assert got == naive_components(n, edges)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 3, 2**63]), min_size=0, max_size=40),
       st.integers(0, 10))
def test_groups_are_components_of_brute_force_pairs(hashes, threshold):
    words = np.array(hashes, np.uint64)
    groups = build_groups(files_for(hashes), words, threshold)
    edges = [(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
             if bin(hashes[i] ^ hashes[j]).count("1") <= threshold]
    want = sorted(sorted(f"f{i:02d}.jpg" for i in c) for c in naive_components(len(hashes), edges))
    assert sorted(sorted(m.path for m in g.members) for g in groups) == want
    for g in groups:
        keep = int(g.keep.hash, 16)
        for m in g.members:
            assert m.distance == bin(keep ^ int(m.hash, 16)).count("1")


def test_a_pairs_distance_is_the_same_both_ways_for_members_and_diameter():
    # pHash's turned variants come from the DCT, so b's variants against a
    # and a's variants against b can differ by a bit or two; the member's
    # distance and the group's largest distance must take the same (the
    # smaller) one, or a two-file group shows a member farther than its diameter.
    a, b = 0, (1 << 6) - 1  # 6 bits apart as they are
    far = (1 << 64) - 1
    variants = np.array([
        [a, far ^ 1, far ^ 3, far, far, far, far, far],      # a's turns: all far from b
        [b, a ^ 0b1111, far, far, far, far, far, far],       # b mirrored is 4 bits from a
    ], dtype=np.uint64)[:, :, None]
    files = [HashedFile("a.jpg", 10, 0, 64, 64, f"{a:016x}"), HashedFile("b.jpg", 10, 0, 128, 128, f"{b:016x}")]
    (group,) = build_groups(files, variants[:, 0, 0], 5, variants=variants)
    assert group.keep.path == "b.jpg"  # more pixels
    member = group.members[1]
    assert (member.distance, member.transform) == (4, "mirror")  # b mirrored is a: a is b's mirror
    assert group.max_distance == 4
