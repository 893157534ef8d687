"""Turn near-duplicate pairs into groups, and choose the file each group keeps.

A group is a connected component of the graph whose edges are the pairs
within the threshold (scipy.sparse.csgraph). Identical hashes are collapsed
before the search, so ten thousand copies of one picture cost one node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .index import find_pairs, hamming_distance
from .models import DuplicateGroup, HashedFile, Member

__all__ = ["KEEP_RULES", "keep_key", "keep_rule", "connected_groups", "build_groups", "only_new"]

KEEP_RULES = ("default", "largest", "oldest", "newest", "shortest-path", "prefer:GLOB")


def keep_key(f: HashedFile) -> tuple:
    """Sort key that puts the file to keep first.

    Most pixels, then the largest file, then the oldest, then the path, so
    the choice never depends on the order files were found in.

    >>> a = HashedFile("a.jpg", 100, 5, 10, 10, "0")
    >>> b = HashedFile("b.jpg", 900, 9, 10, 10, "0")
    >>> min([a, b], key=keep_key).path
    'b.jpg'
    """
    return (-f.pixels, -f.size, f.mtime_ns, f.path)


def keep_rule(name: str) -> Callable[[HashedFile], tuple]:
    """The sort key for a ``--keep`` rule; ties always fall back to :func:`keep_key`.

    ``largest`` (file size), ``oldest``, ``newest``, ``shortest-path``, or
    ``prefer:GLOB`` (files whose path matches GLOB first).

    >>> a = HashedFile("new/a.jpg", 100, 9, 10, 10, "0")
    >>> b = HashedFile("old/b.jpg", 100, 1, 10, 10, "0")
    >>> min([a, b], key=keep_rule("newest")).path, min([a, b], key=keep_rule("prefer:old/*")).path
    ('new/a.jpg', 'old/b.jpg')
    """
    import fnmatch

    from .models import UsageError

    if name == "default":
        return keep_key
    if name == "largest":
        return lambda f: (-f.size, *keep_key(f))
    if name == "oldest":
        return lambda f: (f.mtime_ns, *keep_key(f))
    if name == "newest":
        return lambda f: (-f.mtime_ns, *keep_key(f))
    if name == "shortest-path":
        return lambda f: (len(f.path), *keep_key(f))
    if name.startswith("prefer:") and len(name) > len("prefer:"):
        pattern = name[len("prefer:"):]
        return lambda f: (not fnmatch.fnmatchcase(f.path, pattern), *keep_key(f))
    msg = f"unknown keep rule {name!r}; choose from {', '.join(KEEP_RULES)}"
    raise UsageError(msg)


def connected_groups(n: int, left: np.ndarray, right: np.ndarray) -> list[np.ndarray]:
    """Connected components with two or more nodes, each as sorted node indices.

    >>> [g.tolist() for g in connected_groups(5, np.array([0, 3]), np.array([1, 4]))]
    [[0, 1], [3, 4]]
    """
    if n == 0 or len(left) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    bounds = np.flatnonzero(np.diff(sorted_labels)) + 1
    return [c for c in np.split(order, bounds) if len(c) > 1]


def _as_rows(words: np.ndarray) -> np.ndarray:
    return words.reshape(len(words), -1)


def _max_pairwise(rows: np.ndarray) -> int:
    # Exact diameter of a group over its distinct hashes, one row at a time
    # so that a group of thousands stays small in memory.
    best = 0
    for i in range(len(rows) - 1):
        best = max(best, int(hamming_distance(rows[i + 1 :], rows[i : i + 1]).max()))
    return best


def build_groups(
    files: Sequence[HashedFile],
    words: np.ndarray,
    threshold: int,
    *,
    method: str = "auto",
    key: Callable[[HashedFile], tuple] = keep_key,
    ignored: set[tuple[bytes, bytes]] | frozenset = frozenset(),
) -> tuple[DuplicateGroup, ...]:
    """Group files whose hashes are within ``threshold`` bits, in a stable order.

    ``words`` holds one hash per file (uint64, one row of words per hash).
    Each group lists its kept file first, then the others by distance to it
    and by path; groups are ordered by their kept file's path. ``ignored``
    holds pairs of content digests (smaller first) a person said are not
    duplicates: they are no edge of the graph.

    >>> fs = [HashedFile(p, 1, 0, 1, 1, h) for p, h in [("a", "00"), ("b", "03"), ("c", "ff")]]
    >>> [[m.path for m in g.members] for g in build_groups(fs, np.array([0, 3, 255], np.uint64), 2)]
    [['a', 'b']]
    """
    if len(files) < 2:
        return ()
    rows = _as_rows(np.asarray(words, dtype=np.uint64))
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    searched = unique[:, 0] if unique.shape[1] == 1 else unique
    pairs = find_pairs(searched, threshold, method=method)
    # Nodes are unique hashes; every file hangs off its hash's node, so
    # identical hashes group without ever listing their n^2 pairs.
    n_unique = len(unique)
    file_nodes = n_unique + np.arange(len(files))
    left = np.concatenate([np.asarray(pairs.left, dtype=np.int64), inverse.astype(np.int64)])
    right = np.concatenate([np.asarray(pairs.right, dtype=np.int64), file_nodes])
    groups = []
    for component in connected_groups(n_unique + len(files), left, right):
        members_idx = component[component >= n_unique] - n_unique
        if len(members_idx) < 2:
            continue
        for part in _without_ignored(members_idx, files, rows, threshold, ignored):
            groups.append(_make_group([files[i] for i in part], rows[part], key))
    groups.sort(key=lambda g: g.keep.path)
    return tuple(
        DuplicateGroup(i, g.members, g.max_distance) for i, g in enumerate(groups, start=1)
    )


def _without_ignored(members_idx, files, rows, threshold, ignored):
    """Split a component again at file level once its ignored pairs are cut."""
    if not ignored:
        return [members_idx]
    digests = [bytes.fromhex(files[i].digest) if files[i].digest else None for i in members_idx]
    cut = {
        (a, b)
        for a in range(len(digests))
        for b in range(a + 1, len(digests))
        if digests[a] and digests[b] and (min(digests[a], digests[b]), max(digests[a], digests[b])) in ignored
    }
    if not cut:
        return [members_idx]
    sub = rows[members_idx]
    left, right = [], []
    for a in range(len(members_idx) - 1):
        d = hamming_distance(sub[a + 1 :], sub[a : a + 1]).reshape(-1)
        for off in np.flatnonzero(d <= threshold):
            b = a + 1 + int(off)
            if (a, b) not in cut:
                left.append(a)
                right.append(b)
    parts = connected_groups(len(members_idx), np.array(left, np.int64), np.array(right, np.int64))
    return [members_idx[p] for p in parts]


def only_new(groups: Sequence[DuplicateGroup], is_new: Callable[[str], bool]) -> tuple[DuplicateGroup, ...]:
    """Keep the groups that gained a file, marking which members are new; renumber them.

    >>> g = DuplicateGroup(1, (Member("a", True, 0, 1, 1, 1, 0, "0"), Member("b", False, 0, 1, 1, 1, 0, "0")), 0)
    >>> [[m.new for m in x.members] for x in only_new([g], lambda p: p == "b")]
    [[False, True]]
    >>> only_new([g], lambda p: False)
    ()
    """
    from dataclasses import replace

    out = []
    for g in groups:
        flags = [is_new(m.path) for m in g.members]
        if any(flags):
            members = tuple(replace(m, new=f) for m, f in zip(g.members, flags))
            out.append(DuplicateGroup(len(out) + 1, members, g.max_distance))
    return tuple(out)


def _make_group(files: list[HashedFile], rows: np.ndarray, key) -> DuplicateGroup:
    keep_at = min(range(len(files)), key=lambda i: key(files[i]))
    distances = hamming_distance(rows, rows[keep_at][None, :]).reshape(-1)
    members = [
        Member(
            path=f.path,
            keep=i == keep_at,
            distance=int(distances[i]),
            width=f.width,
            height=f.height,
            size=f.size,
            mtime_ns=f.mtime_ns,
            hash=f.hash,
        )
        for i, f in enumerate(files)
    ]
    members.sort(key=lambda m: (not m.keep, m.distance, m.path))
    return DuplicateGroup(0, tuple(members), _max_pairwise(np.unique(rows, axis=0)))
