"""Turn near-duplicate pairs into groups, and choose the file each group keeps.

A group is a connected component of the graph whose edges are the pairs
within the threshold (scipy.sparse.csgraph). Files with identical
fingerprints are collapsed into one node before the search, so ten thousand
copies of one picture cost one node.

When each file comes with its 8 flipped and turned variants (see
:data:`dupfinder.fingerprint.TRANSFORMS`), a pair matches if any variant of
one is within the threshold of the other, and the report names the
transform. Byte-identical files (same content digest) always group, whatever
the threshold; low-information files (blank, flat) group only that way.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from .filetable import (
    LOW_QUALITY,
    is_low_information,
    low_information_mask,
    same_content_pairs,
)
from .index import _popcount, find_matches, find_pairs, hamming_distance
from .models import DuplicateGroup, HashedFile, Member, UsageError
from .robust import extra_pairs, pair_distance, relation

__all__ = [
    "KEEP_RULES",
    "LOW_QUALITY",
    "INVERSE",
    "keep_key",
    "is_low_information",
    "keep_rule",
    "connected_groups",
    "build_groups",
    "only_new",
]

KEEP_RULES = ("default", "largest", "oldest", "newest", "shortest-path", "prefer:GLOB")

# Variant k of a file is the file turned by TRANSFORMS[k]; if that matches the
# kept file, the file *is* the kept file turned by the inverse.
INVERSE = {
    "identity": "identity",
    "mirror": "mirror",
    "flip": "flip",
    "rot180": "rot180",
    "transpose": "transpose",
    "rot90": "rot270",
    "rot270": "rot90",
    "transverse": "transverse",
}


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
        pattern = name[len("prefer:") :]
        return lambda f: (not fnmatch.fnmatchcase(f.path, pattern), *keep_key(f))
    msg = f"unknown keep rule {name!r}; choose from {', '.join(KEEP_RULES)}"
    raise UsageError(msg)


def _component_labels(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Smallest node index of each node's component."""
    # Min-label propagation with pointer jumping, in numpy: a few passes over
    # the edges for the shallow graphs a scan makes, and no scipy.sparse
    # import (0.25 s, a sixth of a warm re-scan). Deep chains hand over to
    # scipy after a bounded number of passes.
    labels = np.arange(n)
    for _ in range(64):
        low = np.minimum(labels[left], labels[right])
        new = labels.copy()
        np.minimum.at(new, left, low)
        np.minimum.at(new, right, low)
        new = new[new]
        if np.array_equal(new, labels):
            return labels
        labels = new
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, found = connected_components(graph, directed=False)
    return found


def connected_groups(n: int, left: np.ndarray, right: np.ndarray) -> list[np.ndarray]:
    """Connected components with two or more nodes, each as sorted node indices.

    >>> [g.tolist() for g in connected_groups(5, np.array([0, 3]), np.array([1, 4]))]
    [[0, 1], [3, 4]]
    """
    if n == 0 or len(left) == 0:
        return []
    labels = _component_labels(n, np.asarray(left, np.int64), np.asarray(right, np.int64))
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return [c for c in np.split(order, bounds) if len(c) > 1]


def _distances_to(variants: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Distance from each file's variants to one identity hash: shape (n, 8)."""
    n, k, w = variants.shape
    d = hamming_distance(variants.reshape(n * k, w), target.reshape(1, w))
    return d.reshape(n, k)


def _distances_from(identities: np.ndarray, variants: np.ndarray) -> np.ndarray:
    """Distance from one file's variants (k, words) to each identity hash (n, words): shape (n, k).

    The other way round from :func:`_distances_to`. The two differ by a bit
    or two where a turn swaps the axes (pHash's turned variants come from
    the DCT, not from hashing the turned picture), so a pair's distance is
    the smaller of the two ways, for members and diameters alike.
    """
    return _popcount(identities[:, None, :] ^ variants[None, :, :]).sum(axis=2, dtype=np.int32)


def build_groups(
    files: Sequence[HashedFile],
    words: np.ndarray,
    threshold: int,
    *,
    method: str = "auto",
    key: Callable[[HashedFile], tuple] = keep_key,
    ignored: set[tuple[bytes, bytes]] | frozenset = frozenset(),
    variants: np.ndarray | None = None,
    transform_names: Sequence[str] = tuple(INVERSE),
    extras: np.ndarray | None = None,
    links: Mapping[tuple[int, int], tuple[str, tuple]] | None = None,
) -> tuple[DuplicateGroup, ...]:
    """Group files whose hashes are within ``threshold`` bits, in a stable order.

    ``words`` holds one hash per file (uint64, one row of words per hash);
    ``variants``, if given, holds each file's hashes under the 8 flips and
    turns, shape (n, 8, words), the first being ``words``; ``extras`` the
    crop, turn and region hashes of :mod:`dupfinder.robust`, shape (n, N_EXTRAS,
    words), which also pair crops, small turns and local edits. Each group lists
    its kept file first, then the others by distance to it and by path;
    groups are ordered by their kept file's path. ``ignored`` holds pairs of
    content digests (smaller first) a person said are not duplicates: they
    are no edge of the graph. ``links`` maps pairs of file indices found
    some other way (``(i, j) -> (what j is to i, box)``, as
    :func:`dupfinder.partial.relations` gives) to more edges, and names
    the member's transform and box when i is the kept file.

    >>> fs = [HashedFile(p, 1, 0, 64, 64, h) for p, h in [("a", "00"), ("b", "03"), ("c", "ff")]]
    >>> [[m.path for m in g.members] for g in build_groups(fs, np.array([0, 3, 255], np.uint64), 2)]
    [['a', 'b']]
    """
    n = len(files)
    if n < 2:
        return ()
    rows = np.asarray(words, dtype=np.uint64).reshape(n, -1)
    w = rows.shape[1]
    if variants is None:
        variants = rows[:, None, :]
    variants = np.asarray(variants, dtype=np.uint64).reshape(n, -1, w)

    eligible_idx = np.flatnonzero(~low_information_mask(files))
    # Row selections copy; most scans have no blank files, so skip them then.
    pick = (lambda a: a) if len(eligible_idx) == n else (lambda a: a[eligible_idx])
    picked = pick(variants)
    reps, inverse = _unique_rows(picked.reshape(len(eligible_idx), variants.shape[1] * w))
    m = len(reps)
    # One row per distinct signature, taken one orientation at a time: no
    # (m, 8, w) copy of them all.
    identity = picked[reps, 0, :]
    searched = identity[:, 0] if w == 1 else identity

    left, right = [], []
    if m > 1:
        p = find_pairs(searched, threshold, method=method)
        left.append(np.asarray(p.left, np.int64))
        right.append(np.asarray(p.right, np.int64))
        for t in range(1, variants.shape[1]):
            q = picked[reps, t, :]
            p = find_matches(q[:, 0] if w == 1 else q, searched, threshold, method=method)
            keep = p.left != p.right  # a symmetric picture matches itself
            left.append(np.asarray(p.left[keep], np.int64))
            right.append(np.asarray(p.right[keep], np.int64))
    # Graph nodes: m unique signatures, then n files. Each eligible file hangs
    # off its signature's node; byte-identical files are tied to each other.
    left.append(inverse.astype(np.int64))
    right.append(m + eligible_idx.astype(np.int64))
    if extras is not None:
        extras = np.asarray(extras, dtype=np.uint64).reshape(n, -1, w)
        ea, eb = extra_pairs(pick(extras), pick(rows), pick(variants), threshold, method=method)
        left.append(m + eligible_idx[ea])
        right.append(m + eligible_idx[eb])
    if links:
        pairs = np.array(sorted(links), dtype=np.int64).reshape(-1, 2)
        left.append(m + pairs[:, 0])
        right.append(m + pairs[:, 1])
    same_a, same_b = same_content_pairs(files)
    left.append(m + same_a)
    right.append(m + same_b)
    groups = []
    for component in connected_groups(m + n, np.concatenate(left), np.concatenate(right)):
        members_idx = component[component >= m] - m
        if len(members_idx) < 2:
            continue
        for part in _without_ignored(members_idx, files, variants, threshold, ignored, links, extras):
            groups.append(_make_group(files, part, variants, key, transform_names, extras, threshold, links))
    groups.sort(key=lambda g: g.keep.path)
    return tuple(DuplicateGroup(i, g.members, g.max_distance) for i, g in enumerate(groups, start=1))


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A representative row index per distinct row, and each row's distinct-row number.

    The distinct rows ``rows[reps]`` come in np.unique(axis=0)'s order
    (sorted lexicographically), and ``inverse`` is what it would return.
    np.unique(axis=0) sorts copies of the whole (n, 8) block; this sorts one
    64-bit mix per row and checks every row against its representative, so
    a million files cost tens of MB instead of hundreds. Rows whose mixes
    collide (never seen; checked) fall back to np.unique.

    >>> reps, inv = _unique_rows(np.array([[3, 1], [2, 2], [3, 1]], np.uint64))
    >>> reps.tolist(), inv.tolist()
    ([1, 0], [1, 0, 1])
    """
    n, k = rows.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    mix = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for c in range(k):  # a multiply-xorshift mix of each word in turn (splitmix64's constants)
            mix = (mix ^ rows[:, c]) * np.uint64(0xBF58476D1CE4E5B9)
            mix ^= mix >> np.uint64(31)
    _, first, inverse = np.unique(mix, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    step = 1 << 16
    for s in range(0, n, step):
        if not np.array_equal(rows[s : s + step], rows[first[inverse[s : s + step]]]):
            _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
            return first.astype(np.int64), inverse.reshape(-1)
    order = np.lexsort(rows[first].T[::-1])  # np.unique's order: rows sorted lexicographically
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return first[order].astype(np.int64), rank[inverse]


def _without_ignored(members_idx, files, variants, threshold, ignored, links=None, extras=None):
    """Split a component again at file level once its ignored pairs are cut.

    Every kind of edge counts again here: whole-image distance over
    orientations, byte-identical content, the extra hashes (crops, turns,
    edits) and partial-copy links.
    """
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
    left, right = [], []
    for a in range(len(members_idx) - 1):
        others = members_idx[a + 1 :]
        d = np.array([pair_distance(variants[int(members_idx[a])], variants[int(o)]) for o in others])
        for off in np.flatnonzero(d <= threshold):
            b = a + 1 + int(off)
            same = digests[a] is not None and digests[a] == digests[b]
            if same or (a, b) not in cut:
                left.append(a)
                right.append(b)
        for off, other in enumerate(others):
            b = a + 1 + off
            if (a, b) in cut or d[off] <= threshold:
                continue
            linked = links and (int(members_idx[a]), int(other)) in links
            if not linked and extras is not None:
                i, j = int(members_idx[a]), int(other)
                linked = relation(extras[i], variants[i], extras[j], variants[j], threshold) is not None
            if linked:
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
    out = []
    for g in groups:
        flags = [is_new(m.path) for m in g.members]
        if any(flags):
            members = tuple(replace(m, new=f) for m, f in zip(g.members, flags))
            out.append(DuplicateGroup(len(out) + 1, members, g.max_distance))
    return tuple(out)


def _make_group(files, idx: np.ndarray, variants: np.ndarray, key, names, extras=None, threshold=0,
                links=None) -> DuplicateGroup:
    # A FileTable's brief rows skip the variant and extra hashes' hex, which
    # nothing here reads (grouping 5000 files: 0.06 s of a 0.5 s warm scan).
    row = files.brief if hasattr(files, "brief") else files.__getitem__
    chosen = [row(int(i)) for i in idx]
    keep_at = min(range(len(chosen)), key=lambda i: key(chosen[i]))
    keep_file = chosen[keep_at]
    per_transform = _distances_to(variants[idx], variants[idx[keep_at], 0])
    # The kept file turned to each member (the other way round): a member
    # is that turn of the kept file, where it is the closer of the two.
    reverse = _distances_from(variants[idx, 0], variants[idx[keep_at]])
    # Prefer "as is" on ties: a transform is named only when it is closer.
    best, best_reverse = np.argmin(per_transform, axis=1), np.argmin(reverse, axis=1)
    members = []
    for i, f in enumerate(chosen):
        t, r = int(best[i]), int(best_reverse[i])
        box = None
        if f.digest and f.digest == keep_file.digest:
            transform, distance = ("" if i == keep_at else "identical"), 0
        else:
            if reverse[i, r] < per_transform[i, t]:
                transform, distance = names[r], int(reverse[i, r])
            else:
                transform = "" if t == 0 else INVERSE.get(names[t], names[t])
                distance = int(per_transform[i, t])
            if distance > threshold and links and (int(idx[keep_at]), int(idx[i])) in links:
                transform, box = links[int(idx[keep_at]), int(idx[i])]
            elif distance > threshold and extras is not None:
                a, b = idx[i], idx[keep_at]
                found = relation(extras[a], variants[a], extras[b], variants[b], threshold)
                if found is not None:
                    distance, transform = found
                elif links:
                    transform = ""  # in the group through another member: nothing to name
            elif distance > threshold and links:
                transform = ""
        members.append(
            Member(
                path=f.path,
                keep=i == keep_at,
                distance=distance,
                width=f.width,
                height=f.height,
                size=f.size,
                mtime_ns=f.mtime_ns,
                hash=f.hash,
                transform=transform,
                box=None if i == keep_at else box,
            )
        )
    members.sort(key=lambda m: (not m.keep, m.distance, m.path))
    return DuplicateGroup(0, tuple(members), _max_pairwise(variants[idx]))


def _max_pairwise(variants: np.ndarray) -> int:
    # Exact diameter of a group over its distinct fingerprints (smallest
    # distance over transforms for each pair), one row at a time so a group
    # of thousands stays small in memory.
    n = len(variants)
    flat = variants.reshape(n, -1)
    _, first = np.unique(flat, axis=0, return_index=True)
    distinct = variants[np.sort(first)]
    best = 0
    for i in range(len(distinct) - 1):
        d = np.minimum(_distances_to(distinct[i + 1 :], distinct[i, 0]).min(axis=1),
                       _distances_from(distinct[i + 1 :, 0], distinct[i]).min(axis=1))
        best = max(best, int(d.max()))
    return best
