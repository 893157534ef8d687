"""Pairs that whole-image hashes miss: crops, small turns and local edits.

Each pHash'd file carries extra hashes (see
:func:`dupfinder.fingerprint.extra_hashes`): its centred crops in 8
orientations, its small turns, and 15 regions (halves, centre, quarters,
thirds).
Two files pair when

* a crop or a small turn of one is within the threshold of the other's
  whole-image hash (``crop``, ``crop+mirror``..., ``rotate``), or
* at least two of their regions, in the same place, are within the
  threshold (plus 2 bits) and their whole images are within ``REGION_GUARD``
  times it, or one region is within the threshold and the whole images
  within ``STRONG_GUARD`` times it
  (``edited``: a watermark, a caption, a sticker spoils the other regions).

Measured on the accuracy bench (142 real photos, 2130 files, seed 1, every
pair of files from different photos): no crop or turn hash of one photo came
within 8 bits of another photo's hash, and no two different photos had even
one region within 6 bits of each other.
"""

from __future__ import annotations

import numpy as np

from .fingerprint import N_CROPS, N_TURNS, TRANSFORMS
from .index import find_matches, find_pairs, hamming_distance, sorted_unique

__all__ = [
    "REGION_VOTES", "REGION_GUARD", "STRONG_GUARD", "extra_pairs", "extra_matches", "relation", "pair_distance",
]

# Regions that must agree, the slack they get over the threshold (a region
# has fewer pixels behind each bit, so its hash wobbles more), and how far
# apart (in multiples of the threshold) the whole images may be, for an
# "edited" pair.
REGION_VOTES = 2
REGION_SLACK = 2
REGION_GUARD = 4
# ... but never tighter than this many bits: at the default threshold a big
# badge can move a dark photo's whole hash by 22 bits.
REGION_GUARD_FLOOR = 22
# One region within the threshold itself is enough when the whole images are
# within twice the threshold (a badge over the only textured part, with a
# flat sky above, leaves one region to vote); one region with the very same
# hash, when they are within 4 times it and at most EXACT_GUARD_CAP bits (a big
# badge across the middle of a dark photo). Measured on the accuracy bench:
# different photos never came within 10 bits as whole images, nor shared a
# region hash; the caps keep higher thresholds from admitting them.
STRONG_GUARD = 2
EXACT_GUARD = 4
EXACT_GUARD_CAP = 20


# The extra hashes compare small parts of pictures, which agree by chance more
# often than whole pictures: past 6 bits (per 64) they start pairing different
# photos (accuracy bench: 29 false pairs at threshold 8 and 9513 at 10 before
# this cap, none at 6). A larger threshold widens only the whole-image match.
EXTRA_THRESHOLD_CAP = 6


def _capped(threshold: int, words: int) -> int:
    return min(threshold, EXTRA_THRESHOLD_CAP * words)


def _edited(votes, strong, exact, whole, threshold: int) -> np.ndarray:
    """Which pairs count as local edits, from their region votes and whole-image distance."""
    t = max(threshold, 1)
    return (
        ((votes >= REGION_VOTES) & (whole <= max(REGION_GUARD * t, REGION_GUARD_FLOOR)))
        | ((strong >= 1) & (whole <= STRONG_GUARD * t))
        | ((exact >= 1) & (whole <= min(EXACT_GUARD * t, EXACT_GUARD_CAP)))
    )

_INVERSE = {"rot90": "rot270", "rot270": "rot90"}


def _flat(a: np.ndarray) -> np.ndarray:
    return a[:, 0] if a.shape[1] == 1 else a


def extra_pairs(
    extras: np.ndarray, identity: np.ndarray, variants: np.ndarray, threshold: int, *, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """File pairs (left < right) found through crops, turns or regions.

    ``extras`` is (n, N_EXTRAS, words), ``identity`` (n, words) and
    ``variants`` (n, 8, words), for the same n files.
    """
    n, _, w = extras.shape
    threshold = _capped(threshold, w)
    if n < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty
    k = N_CROPS + N_TURNS
    n_var = variants.shape[1]
    # Hash kind first: a FileTable stores extras so, and then the crops and
    # turns of all files, and each region of all files, are contiguous blocks
    # searched without a copy (72 MB and more at a million files).
    by_kind = extras.transpose(1, 0, 2)
    # A crop or turn of one file against every orientation of the others.
    queries = by_kind[:k].reshape(k * n, w)
    database = variants.reshape(n * n_var, w)
    p = find_matches(_flat(queries), _flat(database), threshold, method=method)
    a = np.asarray(p.left, np.int64) % n
    b = np.asarray(p.right, np.int64) // n_var
    keep = a != b
    pairs = [np.stack([np.minimum(a, b), np.maximum(a, b)])[:, keep]]

    found, near = [], []
    for r in range(k, by_kind.shape[0]):
        # Flat regions are stored as 0 (see fingerprint.extra_hashes): no vote.
        region = by_kind[r]
        live = np.flatnonzero(region.any(axis=1))
        q = find_pairs(_flat(region if len(live) == n else region[live]), threshold + REGION_SLACK, method=method)
        found.append(live[np.asarray(q.left, np.int64)] * n + live[np.asarray(q.right, np.int64)])
        near.append(np.asarray(q.distance))
    if found:
        all_keys = np.concatenate(found)
        dist = np.concatenate(near)
        keys, inverse, votes = np.unique(all_keys, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        strong = np.bincount(inverse, weights=dist <= threshold, minlength=len(keys))
        exact = np.bincount(inverse, weights=dist == 0, minlength=len(keys))
        maybe = (votes >= REGION_VOTES) | (strong >= 1)
        keys, votes, strong, exact = keys[maybe], votes[maybe], strong[maybe], exact[maybe]
        ra, rb = keys // n, keys % n
        if len(keys):
            whole = _whole_distance(variants, ra, rb)
            ok = _edited(votes, strong, exact, whole, threshold)
            pairs.append(np.stack([ra[ok], rb[ok]]))
    both = np.concatenate(pairs, axis=1)
    if both.shape[1] == 0:
        return both[0], both[1]
    # Each pair as one number, sorted, repeats dropped: np.unique(both,
    # axis=1) gives the same, sorting a structured view 16x slower (0.18 s
    # for the 171,000 pairs of 5000 files in clusters of 35).
    key = sorted_unique(both[0] * n + both[1])
    return key // n, key % n


def pair_distance(variants_a: np.ndarray, variants_b: np.ndarray) -> int:
    """Smallest whole-image distance between two files over orientations, both ways.

    >>> v = np.array([[0b0111], [0]], dtype=np.uint64)
    >>> pair_distance(v, np.array([[0], [0b1]], dtype=np.uint64))
    0
    """
    a = hamming_distance(variants_b, variants_a[0][None, :]).min()
    b = hamming_distance(variants_a, variants_b[0][None, :]).min()
    return int(min(a, b))


def _whole_distance(variants: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest whole-image distance over orientations, pair by pair."""
    n_var, w = variants.shape[1], variants.shape[2]
    va = variants[a].reshape(len(a) * n_var, w)
    vb = np.repeat(variants[b, 0], n_var, axis=0)
    return hamming_distance(va, vb).reshape(len(a), n_var).min(axis=1)


def relation(
    extras_a: np.ndarray, variants_a: np.ndarray, extras_b: np.ndarray, variants_b: np.ndarray, threshold: int
) -> tuple[int, str] | None:
    """How file a relates to file b through its extra hashes, if it does: (distance, name).

    The name says what a is relative to b: ``crop`` (one is a centred crop of
    the other), ``crop+mirror`` etc. when also flipped or turned, ``rotate``
    for a small turn, ``edited`` for a local change (regions agree).
    """
    k = N_CROPS + N_TURNS
    w = variants_a.shape[-1]
    threshold = _capped(threshold, w)
    best: tuple[int, str] | None = None
    for extras, variants, reverse in ((extras_a, variants_b, False), (extras_b, variants_a, True)):
        # d[i, t]: extra hash i of one file against orientation t of the other.
        d = hamming_distance(
            np.repeat(extras[:k], len(variants), axis=0), np.tile(variants, (k, 1)).reshape(-1, w)
        ).reshape(k, len(variants))
        i, t = np.unravel_index(int(np.argmin(d)), d.shape)
        if d[i, t] > threshold or (best is not None and d[i, t] >= best[0]):
            continue
        # Forward: crop(a) ~ T(b), so a is b turned by T. Reverse: crop(b) ~ T(a),
        # so a is b turned by T's inverse.
        turn = TRANSFORMS[t]
        turn = _INVERSE.get(turn, turn) if reverse else turn
        kind = "crop" if i < N_CROPS else "rotate"
        best = (int(d[i, t]), kind if turn == "identity" else f"{kind}+{turn}")
    if best is not None:
        return best
    votes = hamming_distance(extras_a[k:], extras_b[k:])
    live = extras_a[k:].any(axis=1) & extras_b[k:].any(axis=1)
    close = (votes <= threshold + REGION_SLACK) & live
    strong = int(((votes <= threshold) & live).sum())
    exact = int(((votes == 0) & live).sum())
    whole = pair_distance(variants_a, variants_b)
    if close.any() and _edited(
        np.array([close.sum()]), np.array([strong]), np.array([exact]), np.array([whole]), threshold
    )[0]:
        return int(votes[close].max()), "edited"
    return None


def extra_matches(
    t_extras: np.ndarray,
    t_variants: np.ndarray,
    r_extras: np.ndarray,
    r_variants: np.ndarray,
    threshold: int,
    *,
    method: str = "auto",
) -> list[tuple[int, int, int, str]]:
    """Target-reference pairs found through crops, turns or regions: (target, ref, distance, name).

    The name says what the target is relative to the reference, as for
    :func:`relation`. Only targets against references: never two of either.
    """
    nt, _, w = t_extras.shape
    nr = r_extras.shape[0]
    threshold = _capped(threshold, w)
    out: list[tuple[int, int, int, str]] = []
    if nt == 0 or nr == 0:
        return out
    k = N_CROPS + N_TURNS
    n_var = t_variants.shape[1]
    # The target is a part of the reference: some orientation of the target
    # is near a crop or turn of the reference. T(target) ~ X(ref), so the
    # target is X(ref) turned by T's inverse.
    p = find_matches(
        _flat(t_variants.reshape(nt * n_var, w)), _flat(r_extras[:, :k, :].reshape(nr * k, w)),
        threshold, method=method,
    )
    for q, d, dist in zip(p.left.tolist(), p.right.tolist(), p.distance.tolist()):
        turn = TRANSFORMS[q % n_var]
        turn = _INVERSE.get(turn, turn)
        kind = "crop" if d % k < N_CROPS else "rotate"
        out.append((q // n_var, d // k, dist, kind if turn == "identity" else f"{kind}+{turn}"))
    # The reference is a part of the target: X(target) ~ T(ref), so the target
    # holds the reference turned by T.
    p = find_matches(
        _flat(t_extras[:, :k, :].reshape(nt * k, w)), _flat(r_variants.reshape(nr * n_var, w)),
        threshold, method=method,
    )
    for q, d, dist in zip(p.left.tolist(), p.right.tolist(), p.distance.tolist()):
        turn = TRANSFORMS[d % n_var]
        kind = "crop" if q % k < N_CROPS else "rotate"
        out.append((q // k, d // n_var, dist, kind if turn == "identity" else f"{kind}+{turn}"))
    # Local edits: two regions in the same place agree, and the whole images
    # are not far apart.
    found, near = [], []
    for r in range(t_extras.shape[1] - k):
        tl = np.flatnonzero(t_extras[:, k + r, :].any(axis=1))
        rl = np.flatnonzero(r_extras[:, k + r, :].any(axis=1))
        if not len(tl) or not len(rl):
            continue
        p = find_matches(
            _flat(t_extras[tl, k + r, :]), _flat(r_extras[rl, k + r, :]), threshold + REGION_SLACK, method=method
        )
        found.append(tl[np.asarray(p.left, np.int64)] * nr + rl[np.asarray(p.right, np.int64)])
        near.append(np.asarray(p.distance))
    if found:
        dist = np.concatenate(near)
        keys, inverse, votes = np.unique(np.concatenate(found), return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        strong = np.bincount(inverse, weights=dist <= threshold, minlength=len(keys))
        exact = np.bincount(inverse, weights=dist == 0, minlength=len(keys))
        ta, rb = keys // nr, keys % nr
        for a, b, v, st, ex in zip(ta.tolist(), rb.tolist(), votes.tolist(), strong.tolist(), exact.tolist()):
            whole = int(hamming_distance(t_variants[a], r_variants[b, 0][None, :]).min())
            if _edited(np.array([v]), np.array([st]), np.array([ex]), np.array([whole]), threshold)[0]:
                out.append((a, b, whole, "edited"))
    return out
