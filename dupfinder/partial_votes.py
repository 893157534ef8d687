"""Candidate pairs for partial copies: descriptors that share a 32-bit word vote for their files.

Every descriptor is cut into eight 32-bit words. The words of all files are
sorted once per position; descriptors of two files with an equal word that
are within :data:`MATCH_BITS` bits of each other vote for that pair of
files. Mirror images (and, in ``match``, the targets) look their words up in
the sorted references, so no pair of files is ever compared as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .index import sorted_unique
from .models import UsageError
from .partial_features import Features

__all__ = ["MATCH_BITS", "BUCKET_CAP", "MIN_VOTES", "WORD_BITS", "N_POSITIONS", "vote_matches", "votes_at",
           "sorted_words_at", "merge_votes", "packed", "unpacked", "stacked", "candidate_pairs", "grouped", "popcount_rows"]

# Two descriptors closer than this (of 256 bits) vote for their files; ORB's
# true correspondences under resizing and JPEG sit mostly below 40 bits.
MATCH_BITS = 48
# A 32-bit word shared by more descriptors than this is a flat patch or a
# stripe every picture has: it says nothing about which pictures match.
BUCKET_CAP = 48
# Pairs of files with fewer votes are not verified.
MIN_VOTES = 3
# Descriptors are cut into words of this many bits for the candidate search.
# On the 599-file bench tree, 32-bit words gave 5618 candidate pairs in
# 0.6 s, 24-bit ones 21810 in 2.9 s and 16-bit ones 64621 in 22 s, for the
# same recall (0.956-0.958): the pairs they miss lack keypoints, not votes.
WORD_BITS = 32


_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount_rows(x: np.ndarray) -> np.ndarray:
    """Bits set in each row of a (n, 32) uint8 array.

    >>> popcount_rows(np.array([[255] * 32, [1] + [0] * 31], np.uint8)).tolist()
    [256, 1]
    """
    if hasattr(np, "bitwise_count"):  # numpy 2: a popcount instruction
        return np.bitwise_count(np.ascontiguousarray(x).view(np.uint64)).sum(axis=1, dtype=np.int32)
    return _BITS[x].sum(axis=1, dtype=np.int32)


def stacked(group: Sequence[Features], *, mirrored: bool):
    """All descriptors of a set of files (or of their mirror images), with owner file and keypoint."""
    parts = [(f.mirrored if mirrored else f.descriptors, i) for i, f in enumerate(group) if len(f)]
    if not parts:
        return np.zeros((0, 32), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    desc = np.ascontiguousarray(np.concatenate([d for d, _ in parts]))
    owner = np.concatenate([np.full(len(d), i, np.int64) for d, i in parts])
    point = np.concatenate([np.arange(len(d), dtype=np.int64) for d, _ in parts])
    return desc, owner, point


def vote_matches(
    features: Sequence[Features], *, queries: Sequence[Features] | None = None
) -> tuple[np.ndarray, ...]:
    """Descriptor matches found through shared 32-bit words: arrays ``(i, j, mirrored, ki, kj)``.

    Without ``queries``, matches within ``features`` (file i < file j); with
    them, of query file ``i`` and ``features[j]``. ``ki`` and ``kj`` index
    the two files' keypoints; ``mirrored`` says the match is between file i
    and file j's mirror image (ki is then a point of i, kj one of j's mirror;
    within ``features``, the mirror is always on the larger file).
    """
    db = stacked(features, mirrored=False)
    # Only the database is sorted; mirror images and queries look their words up in it.
    probes = [(*stacked(features, mirrored=True), True)] if queries is None else [
        (*stacked(queries, mirrored=False), False), (*stacked(queries, mirrored=True), True)]
    return merge_votes(votes_at(db, probes, p, within=queries is None) for p in range(N_POSITIONS))


def votes_at(db: tuple, probes: list, position: int, *, within: bool, index: tuple | None = None) -> np.ndarray:
    """The matches of :func:`vote_matches` through the word at one ``position`` (0 to N_POSITIONS - 1), :func:`packed`.

    ``db`` is ``(descriptors, owner, point)`` of the files looked up,
    ``probes`` a list of ``(descriptors, owner, point, mirrored)`` that look
    them up; ``within`` says the probes are the mirror images of ``db``
    itself (a scan), not other files (a match). ``index`` is
    :func:`sorted_words_at` of ``db`` at this position, if kept from before.
    """
    desc_db, db_owner, db_point = db
    order, sorted_words = index if index is not None else sorted_words_at(desc_db, position)
    out = []
    if within:
        a, b = _same_word_pairs(sorted_words, order)
        a, b = _close(desc_db, desc_db, a, b, db_owner[a] != db_owner[b])
        swap = db_owner[a] > db_owner[b]
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        out.append((db_owner[a], db_owner[b], np.zeros(len(a), bool), db_point[a], db_point[b]))
    for desc, owner, point, mirrored in probes:
        q, d = _lookup(sorted_words, order, _word(desc, position))
        # Within one set, file i's mirror against file j equals j's against i: keep it on the larger.
        q, d = _close(desc, desc_db, q, d, owner[q] > db_owner[d] if within else None)
        if within:
            out.append((db_owner[d], owner[q], np.full(len(q), mirrored), db_point[d], point[q]))
        else:
            out.append((owner[q], db_owner[d], np.full(len(q), mirrored), point[q], db_point[d]))
    # Packed where they are found: 8 bytes a match, to send and to merge.
    return packed(tuple(np.concatenate(parts) for parts in zip(*out)))


def sorted_words_at(desc: np.ndarray, position: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, words[order])``: the descriptors' words at ``position``, sorted, for looking words up.

    >>> desc = np.zeros((3, 32), np.uint8); desc[:, 0] = [7, 3, 5]
    >>> [a.tolist() for a in sorted_words_at(desc, 0)]
    [[1, 2, 0], [3, 5, 7]]
    """
    word = _word(desc, position)
    order = np.argsort(word)
    return order, word[order]


# A match packed in one uint64, most significant first: file i, file j,
# mirrored, keypoint ki, keypoint kj. Sorting the keys sorts the matches by
# pair of files; 8 bytes a match where the five arrays took 33 (a tree where
# every photo has 13 copies made 52 million matches for 2000 files: 1.9 GB).
_POINT_BITS = 10  # keypoints per file < 1024 (image_features keeps N_FEATURES)
_FILE_BITS = 21  # files < 2 million
MAX_FILES = 1 << _FILE_BITS


def packed(matches: tuple[np.ndarray, ...]) -> np.ndarray:
    """Matches ``(i, j, mirrored, ki, kj)`` as sorted unique uint64 keys (a pair that repeats, once).

    >>> unpacked(packed((np.array([3, 1]), np.array([4, 2]), np.array([True, False]),
    ...                  np.array([7, 0]), np.array([9, 5]))))[0].tolist()
    [1, 3]
    """
    i, j, m, ki, kj = matches
    if len(i) and (max(i.max(), j.max()) >= MAX_FILES or max(ki.max(), kj.max()) >> _POINT_BITS):
        raise UsageError(f"--partial handles up to {MAX_FILES - 1} files of up to {(1 << _POINT_BITS) - 1} keypoints")
    key = i.astype(np.uint64) << np.uint64(_FILE_BITS + 1 + 2 * _POINT_BITS)
    key |= j.astype(np.uint64) << np.uint64(1 + 2 * _POINT_BITS)
    key |= m.astype(np.uint64) << np.uint64(2 * _POINT_BITS)
    key |= ki.astype(np.uint64) << np.uint64(_POINT_BITS)
    key |= kj.astype(np.uint64)
    return sorted_unique(key)


def unpacked(keys: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays ``(i, j, mirrored, ki, kj)`` of packed matches."""
    mask = np.uint64((1 << _POINT_BITS) - 1)
    kj = (keys & mask).astype(np.int64)
    ki = ((keys >> np.uint64(_POINT_BITS)) & mask).astype(np.int64)
    m = ((keys >> np.uint64(2 * _POINT_BITS)) & np.uint64(1)).astype(bool)
    j = ((keys >> np.uint64(1 + 2 * _POINT_BITS)) & np.uint64(MAX_FILES - 1)).astype(np.int64)
    i = (keys >> np.uint64(_FILE_BITS + 1 + 2 * _POINT_BITS)).astype(np.int64)
    return i, j, m, ki, kj


def merge_votes(parts: Iterable[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The matches of every position (:func:`packed` keys), a pair of descriptors that shares several words voting once.

    ``parts`` may be a generator: each is merged as it comes, so only the
    matches so far and one position's are held at once.
    """
    total = np.zeros(0, np.uint64)
    for keys in parts:
        # Two sorted runs, merged in linear time by sorted_unique's timsort.
        total = sorted_unique(np.concatenate((total, keys))) if len(total) else keys
    return unpacked(total)


def _same_word_pairs(sorted_words: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of entries with the same word, from buckets of 2 to :data:`BUCKET_CAP` entries."""
    starts = np.flatnonzero(np.r_[True, sorted_words[1:] != sorted_words[:-1]])
    sizes = np.diff(np.r_[starts, len(sorted_words)])
    run_size = np.repeat(sizes, sizes)
    pos_in_run = np.arange(len(sorted_words)) - np.repeat(starts, sizes)
    idx = np.flatnonzero((run_size >= 2) & (run_size <= BUCKET_CAP))
    lefts, rights = [], []
    gap = 1
    while len(idx):
        idx = idx[pos_in_run[idx] + gap < run_size[idx]]
        lefts.append(order[idx])
        rights.append(order[idx + gap])
        gap += 1
    if not lefts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(lefts), np.concatenate(rights)


def _lookup(sorted_words: np.ndarray, order: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (probe, entry) whose words are equal, from buckets of at most :data:`BUCKET_CAP` entries."""
    # Sorted needles search 10x faster than random ones (memory locality).
    needles = np.argsort(key)
    lo = np.searchsorted(sorted_words, key[needles], side="left")
    hi = np.searchsorted(sorted_words, key[needles], side="right")
    count = hi - lo
    count[count > BUCKET_CAP] = 0
    probe = np.repeat(needles, count)
    offset = np.arange(len(probe)) - np.repeat(np.cumsum(count) - count, count)
    return probe, order[np.repeat(lo, count) + offset]


def _close(desc_a, desc_b, a, b, keep):
    """The pairs (among ``keep``) whose descriptors are within :data:`MATCH_BITS` bits."""
    if keep is not None:
        a, b = a[keep], b[keep]
    close = popcount_rows(np.bitwise_xor(desc_a[a], desc_b[b])) <= MATCH_BITS
    return a[close], b[close]


# Words per descriptor: the positions of votes_at.
N_POSITIONS = 256 // WORD_BITS


def _word(desc: np.ndarray, position: int) -> np.ndarray:
    """The descriptors' :data:`WORD_BITS`-bit words at one position, as keys."""
    if WORD_BITS == 32:
        return np.ascontiguousarray(np.ascontiguousarray(desc).view(np.uint32)[:, position])
    step = WORD_BITS // 8
    key = np.zeros(len(desc), np.uint32)
    for k in range(step):
        key |= desc[:, position * step + k].astype(np.uint32) << np.uint32(8 * k)
    return key


def candidate_pairs(
    features: Sequence[Features], *, queries: Sequence[Features] | None = None, min_votes: int = MIN_VOTES
) -> list[tuple[int, int, bool, int]]:
    """Pairs of files worth verifying: ``(i, j, mirrored, votes)``, most votes first.

    Without ``queries``, pairs within ``features`` (i < j). With them, pairs
    of query ``i`` and ``features[j]``. ``mirrored`` says the match is
    between one file and the other's mirror image.

    >>> from PIL import Image
    >>> from dupfinder.partial_features import image_features
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> fs = [image_features(art), image_features(art.crop((40, 30, 300, 230)))]
    >>> candidate_pairs(fs)[0][:3]  # the most votes: as is, not mirrored
    (0, 1, False)
    """
    return [(i, j, m, len(ki)) for i, j, m, ki, _ in grouped(vote_matches(features, queries=queries), min_votes)]


def grouped(matches, min_votes: int):
    """Yield ``(i, j, mirrored, ki, kj)`` per pair of files with at least ``min_votes`` matches."""
    a, b, m, ka, kb = matches
    if not len(a):
        return
    n = int(max(a.max(), b.max())) + 1
    key = (a * n + b) * 2 + m
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    groups = [(int(e - s), int(s), int(e)) for s, e in zip(starts, ends) if e - s >= min_votes]
    groups.sort(key=lambda g: (-g[0], int(key[g[1]])))
    for _, s, e in groups:
        k = int(key[s])
        rows = order[s:e]
        yield k // 2 // n, k // 2 % n, bool(k % 2), ka[rows], kb[rows]
