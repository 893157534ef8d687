"""All pairs of perceptual hashes within a Hamming distance: brute force, BK-tree or MIH.

A set of n hashes is a uint64 array: shape (n,) for 64-bit hashes, (n, w) for
w*64-bit ones.  Every method is exact and returns the same pairs; identical
hashes are collapsed first and expanded back at the end.  "auto" takes brute
force or multi-index hashing, whichever a fitted cost model expects to be
faster (bench/search.py: MIH from 1-3 thousand hashes up; pybktree, pure
Python, is never the fastest: 0.003x-0.04x the speed of brute force).
MIH keeps one substring's table of the database side at a time (12 bytes a
hash) and find_matches probes it with ~10**6 queries at a time, so 9*10**6
queries against 8*10**6 hashes take ~200 MB beyond the inputs, not 2 GB
(bench/index_memory.py).

>>> h = np.array([0b1011, 0xFF00, 0b1001], dtype=np.uint64)
>>> list(find_pairs(h, 1))
[(0, 2, 1)]
"""

from __future__ import annotations

import functools
import gc
import math
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pybktree

from .models import UsageError  # a ValueError: a bad option or argument

__all__ = ["METHODS", "Pairs", "find_pairs", "find_matches", "hamming_distance", "sorted_unique"]

METHODS = ("auto", "mih", "bktree", "brute")

# Elements per temporary block: 2**19 uint64 (4 MB) keeps brute force in cache,
# measured 1.6 ns/pair against 10 ns/pair with 200 MB blocks.
_BLOCK = 1 << 19
# Candidate pairs expanded at once by MIH: each temporary array is 2 MB.  At
# 9*10**6 x 8*10**6 hashes 2**18 ran 1.4x as fast as 2**21 (16 MB arrays,
# out of cache) and kept ~100 MB less at the peak.
_CANDIDATES = 1 << 18
# Bucket lookups per step of MIH: a step's arrays take tens of bytes a lookup,
# so 2**17 keep them to a few MB (2**19 cost 60 MB more at 9*10**6 queries).
_LOOKUPS = 1 << 17
# Longest MIH substring, so its bucket tables have at most 2**24 entries.
_MAX_BITS = 24
# Queries per part of a big find_matches: a part's grouping, keys and buckets
# take ~40 bytes a query, ~40 MB for 2**20, where MIH on all 9*10**6 queries
# of a 10**6-file scan at once took 1.5 GB.
_QUERIES = 1 << 20
# Which uint32 half of a uint64 holds its low bits.
_LOW = 0 if np.little_endian else 1

_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_lut(x):
    flat = np.ascontiguousarray(x, dtype=np.uint64).reshape(-1)
    return _LUT[flat.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.uint8).reshape(np.shape(x))


# np.bitwise_count arrived in numpy 2.0; the byte table serves numpy 1.24+.
_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
_popcount = np.bitwise_count if _HAS_BITWISE_COUNT else _popcount_lut


@dataclass(frozen=True, eq=False)
class Pairs:
    """Index pairs with their Hamming distances, sorted by (left, right).

    >>> p = Pairs(np.array([0]), np.array([2]), np.array([1], dtype=np.int32))
    >>> len(p), list(p)
    (1, [(0, 2, 1)])
    """

    left: np.ndarray
    right: np.ndarray
    distance: np.ndarray

    def __len__(self):
        return len(self.left)

    def __iter__(self):
        return zip(self.left.tolist(), self.right.tolist(), self.distance.tolist())

    def __eq__(self, other):
        if not isinstance(other, Pairs):
            return NotImplemented
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in ("left", "right", "distance"))

    __hash__ = None


def _columns(hashes, name):
    """Validate a hash set and return it as a tuple of contiguous 1-D word columns."""
    arr = np.asarray(hashes)
    if arr.dtype != np.uint64:
        msg = f"{name} must be a numpy array of dtype uint64, got {arr.dtype}"
        raise UsageError(msg)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        msg = f"{name} must have shape (n,) or (n, words), got {arr.shape}"
        raise UsageError(msg)
    return tuple(np.ascontiguousarray(arr[:, c]) for c in range(arr.shape[1]))


def _check(threshold, method):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 0:
        msg = f"threshold must be a non-negative integer, got {threshold!r}"
        raise UsageError(msg)
    if method not in METHODS:
        msg = f"unknown method {method!r}; choose one of {', '.join(METHODS)}"
        raise UsageError(msg)
    return int(threshold)


def hamming_distance(a, b):
    """Hamming distances between hashes a and b, row by row with broadcasting.

    1-D (or scalar) inputs hold 64-bit hashes; 2-D inputs (n, w) hold w-word
    hashes, and a single one is passed as shape (1, w).

    >>> hamming_distance(np.array([0, 7], dtype=np.uint64), np.uint64(1))
    array([1, 2], dtype=int32)
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != np.uint64 or b.dtype != np.uint64:
        msg = f"hashes must be uint64, got {a.dtype} and {b.dtype}"
        raise UsageError(msg)
    if a.ndim <= 1 and b.ndim <= 1:
        return _popcount(a ^ b).astype(np.int32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        msg = f"cannot compare hashes of shapes {a.shape} and {b.shape}: need (n,) or (n, words) on both sides"
        raise UsageError(msg)
    return _popcount(a ^ b).sum(axis=1, dtype=np.int32)


def _narrow(idx, n):
    """Positions as int32 when n allows: half the memory of numpy's int64."""
    return idx.astype(np.int32) if n < 2**31 else idx


def _group(cols):
    """Collapse identical hashes: sort order, group starts and sizes, unique hashes.

    When all hashes differ (most big sets) the first three are None and the
    unique hashes are cols itself, so no order or copy is kept.
    """
    n = len(cols[0])
    if len(cols) == 1 and n > 1:
        srt = np.sort(cols[0])  # SIMD sort, 8x faster than argsort: most sets have no duplicate
        distinct = (srt[1:] != srt[:-1]).all()
        del srt
        if distinct:
            return None, None, None, cols
    if n < 2:
        return None, None, None, cols
    order = _narrow(np.lexsort(cols[::-1]) if len(cols) > 1 else np.argsort(cols[0]), n)
    new = np.ones(n, dtype=bool)
    for s in range(0, n - 1, _BLOCK):  # a block at a time: no full-size sorted copies
        o = order[s : s + _BLOCK + 1]
        same = np.ones(len(o) - 1, dtype=bool)
        for c in cols:
            v = c[o]
            same &= v[1:] == v[:-1]
        new[s + 1 : s + len(o)] = ~same
    starts = _narrow(np.flatnonzero(new), n)
    if len(starts) == n:
        return None, None, None, cols
    counts = np.diff(np.append(starts, starts.dtype.type(n)))
    return order, starts, counts, tuple(c[order[starts]] for c in cols)


def _expand(ga, gb, gi, gj):
    """Original positions of every pair behind unique-hash pairs (gi, gj) of groupings ga, gb, and its pair index."""
    (oa, sa, ca), (ob, sb, cb) = ga[:3], gb[:3]
    if oa is None and ob is None:  # all hashes differ on both sides
        return gi, gj, slice(None)
    ones = np.ones(len(gi), np.int64)
    pa, pb, own = _product(gi if oa is None else sa[gi], ones if oa is None else ca[gi],
                           gj if ob is None else sb[gj], ones if ob is None else cb[gj])
    return (pa if oa is None else oa[pa]), (pb if ob is None else ob[pb]), own


def _product(sa, ca, sb, cb):
    """Every pair of positions from ranges [sa, sa+ca) x [sb, sb+cb), and its range index."""
    ca, cb = ca.astype(np.int64), cb.astype(np.int64)  # int32 group sizes would overflow here
    sizes = ca * cb
    owner = np.repeat(np.arange(len(sizes)), sizes)
    offs = np.arange(len(owner)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    cbo = cb[owner]
    return sa[owner] + offs // cbo, sb[owner] + offs % cbo, owner


def _distances(ca, cb, ia, ib, threshold):
    """Distances of candidate pairs (ia, ib), keeping those within threshold word by word."""
    d = np.zeros(len(ia), dtype=np.int32)
    for wa, wb in zip(ca, cb):
        d += _popcount(wa[ia] ^ wb[ib])
        if len(ca) > 1:  # random words push most 256-bit candidates past T after two words
            keep = np.flatnonzero(d <= threshold)
            ia, ib, d = ia[keep], ib[keep], d[keep]
    keep = np.flatnonzero(d <= threshold)
    return ia[keep], ib[keep], d[keep]


def _brute_join(ua, ub, threshold, same):
    """Blocks of rows of ua against all of ub (only j > i when same) with XOR + popcount."""
    na, nb, w, out = len(ua[0]), len(ub[0]), len(ua), []
    rows = max(1, _BLOCK // max(1, nb))
    # Reused buffers: fresh 4 MB arrays per block cost page faults, 2.3x slower.
    xbuf, pbuf = np.empty(rows * nb, np.uint64), np.empty(rows * nb, np.uint8)
    dbuf, mbuf = np.empty(rows * nb if w > 1 else 0, np.uint16), np.empty(rows * nb, bool)
    limit = min(threshold, 64 * w)  # fits the dtype of d, and no distance exceeds it
    for s in range(0, na, rows):
        e, b0 = min(na, s + rows), (s + 1 if same else 0)
        shape = (e - s, nb - b0)
        size = shape[0] * shape[1]
        x, p, d = xbuf[:size].reshape(shape), pbuf[:size].reshape(shape), dbuf[: size if w > 1 else 0]
        for c in range(w):
            np.bitwise_xor(ua[c][s:e, None], ub[c][None, b0:], out=x)
            if _HAS_BITWISE_COUNT:
                np.bitwise_count(x, out=p)
            else:
                p[...] = _popcount_lut(x)
            if w == 1:
                d = p
            elif c == 0:
                d = d.reshape(shape)
                np.copyto(d, p)
            else:
                d += p
        i, j = np.nonzero(np.less_equal(d, limit, out=mbuf[:size].reshape(shape)))
        dist = d[i, j].astype(np.int32)
        i, j = i + s, j + b0
        keep = j > i if same else slice(None)
        out.append((i[keep], j[keep], dist[keep]))
    return out


def _ints(cols):
    """Hashes as Python ints, word 0 the least significant."""
    if len(cols) == 1:
        return cols[0].tolist()
    raw = np.stack(cols, axis=1).astype("<u8").tobytes()
    step = 8 * len(cols)
    return [int.from_bytes(raw[k : k + step], "little") for k in range(0, len(raw), step)]


@contextmanager
def _no_gc():
    # The tree is 10**6 tuples and dicts: building it took 10.3 s with GC, 7.6 s without.
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _blocks(found):
    arr = np.array(found, dtype=np.int64).reshape(-1, 3)
    return [(arr[:, 0], arr[:, 1], arr[:, 2].astype(np.int32))]


def _bktree_self_join(ub, threshold):
    """Pairs within one set of unique hashes by pybktree: each queried before it is inserted."""
    vb = _ints(ub)
    where = {v: j for j, v in enumerate(vb)}
    tree, found = pybktree.BKTree(lambda x, y: (x ^ y).bit_count()), []
    with _no_gc():
        for j, v in enumerate(vb):  # each pair is found once, from its later element
            found.extend((where[u], j, d) for d, u in tree.find(v, threshold))
            tree.add(v)
    return _blocks(found)


def _bktree_searcher(ub):
    """A pybktree of ub built once, and a function that queries it with a set of hashes."""
    vb = _ints(ub)
    where = {v: j for j, v in enumerate(vb)}
    tree = pybktree.BKTree(lambda x, y: (x ^ y).bit_count())
    with _no_gc():
        for v in vb:
            tree.add(v)

    def search(ua, threshold):
        found = []
        with _no_gc():
            for i, v in enumerate(_ints(ua)):
                found.extend((i, where[u], d) for d, u in tree.find(v, threshold))
        return _blocks(found)

    return search


# Multi-index hashing (Norouzi, Punjani, Fleet 2012), refined pigeonhole.  Cut
# the b bits into m disjoint substrings and write T = m*s + a with 0 <= a < m.
# Claim: a pair within T is within s bits on one of substrings 0..a, or within
# s-1 bits on one of substrings a+1..m-1.  Proof: otherwise the first a+1
# substrings differ in >= s+1 bits each and the other m-a-1 in >= s each, so
# the distance is >= (a+1)(s+1) + (m-a-1)s = ms + a + 1 = T + 1 > T.
# A radius of -1 (s = 0) means that substring need not be searched at all.
# Each pair is kept only from the first substring whose radius it meets, so it
# is reported exactly once without a global deduplication.


def _layout(bits, threshold, m):
    s, a = divmod(threshold, m)
    q, rem = divmod(bits, m)
    lengths = [q + 1] * rem + [q] * (m - rem)
    return lengths, [s] * (a + 1) + [s - 1] * (m - a - 1)


def _volume(length, radius):
    return sum(math.comb(length, i) for i in range(radius + 1))


# Cost model, seconds per unit, least-squares fit of 320 timed runs on the
# 2-core bench machine (within 2x of the real time on 90% of them): brute
# pair, pair-word and block; MIH table entry, mask, sorted key, numpy call
# group, bucket lookup, candidate, candidate word beyond the first.
_C_PAIR, _C_PAIRWORD, _C_BLOCK = 1.3e-9, 0.63e-9, 1.6e-4
_C_TABLE, _C_MASK, _C_SORT, _C_CALL, _C_LOOKUP, _C_CAND, _C_WORD = 2.6e-9, 8e-6, 9.7e-9, 4.9e-6, 1.34e-8, 2.4e-8, 7.7e-9


def _brute_cost(na, nb, w, same):
    return (_C_PAIR + _C_PAIRWORD * w) * na * nb / (2 if same else 1) + _C_BLOCK * na * nb / _BLOCK


def _mih_plan(na, nb, bits, threshold, same):
    """(cost, m) of the cheapest MIH layout under a uniform-hash model; m=None if none is selective.

    Longer substrings mean fewer candidates but more masks to look up and
    bigger tables; the optimum lands near the paper's length log2(n): at
    T=5 on 64 bits m=4 (16-bit substrings) for 10**4 hashes and m=3 (21-22)
    for 10**5 and 10**6; at T=31 on 256 bits m=16 (16-bit) for 10**5.
    """
    best, half = (math.inf, None), 2 if same else 1
    for m in range(-(-bits // _MAX_BITS), bits + 1):
        cost, share = 0.0, 0.0
        for (length, r), times in Counter(zip(*_layout(bits, threshold, m))).items():
            if r < 0:
                continue
            vol, buckets = _volume(length, r), 2**length
            share += times * vol / buckets
            filled = buckets * -math.expm1(-na / buckets)  # expected non-empty query buckets
            cand = na * nb * vol / buckets / half
            cost += times * (_C_TABLE * buckets + _C_MASK * vol + _C_SORT * (na + nb) + _C_CALL * (length + 1)
                             + _C_LOOKUP * filled * vol / half + (_C_CAND + _C_WORD * (bits // 64 - 1)) * cand)
        if share < 0.5 and cost < best[0]:  # above half of all pairs MIH cannot win
            best = (cost, m)
    return best


def _substring(cols, start, length):
    """Bits start..start+length-1 of every hash as int32 (length <= 24), a block at a time."""
    word, off = divmod(start, 64)
    out = np.empty(len(cols[0]), np.int32)
    for s in range(0, len(out), _BLOCK):  # whole-array uint64 temporaries took 16 bytes a hash
        v = cols[word][s : s + _BLOCK] >> np.uint64(off)
        if off + length > 64:
            v |= cols[word + 1][s : s + _BLOCK] << np.uint64(64 - off)
        v &= np.uint64((1 << length) - 1)
        out[s : s + _BLOCK] = v
    return out


def _keysort(keys):
    """Stable sort of keys below 2**24: (positions in sorted order, sorted keys).

    One SIMD sort of (key << 32 | position) as uint64 is 6x faster than
    argsort, and the positions come out 4 bytes a key instead of 8.  The
    sorted keys are a view into the sorted pairs: drop them early.
    """
    n = len(keys)
    if n >= 2**32:
        perm = np.argsort(keys, kind="stable")
        return perm, keys[perm]
    pair = np.empty((n, 2), np.uint32)
    pair[:, 1 - _LOW] = keys
    del keys  # the caller holds no other reference: 4 bytes a key less at the peak
    for s in range(0, n, _BLOCK):
        pair[s : s + _BLOCK, _LOW] = np.arange(s, min(n, s + _BLOCK), dtype=np.uint32)
    pair.view(np.uint64).reshape(-1).sort()
    return pair[:, _LOW].astype(np.int32 if n < 2**31 else np.int64), pair[:, 1 - _LOW].view(np.int32)


def _masks(length, radius, top=None):
    """Masks of weight <= radius; with top, only those whose highest set bit is top."""
    if top is None:
        combos = (c for k in range(radius + 1) for c in combinations(range(length), k))
    else:
        combos = (c + (top,) for k in range(radius) for c in combinations(range(top), k))
    return np.array([sum(1 << b for b in c) for c in combos], dtype=np.int32)


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, sorted.

    Not np.unique: numpy 2.4 takes a hash table for it, 20x slower than a
    sort on millions of keys (19 s against 1 s for 8 x 6.5e6). The stable
    sort is a timsort, which merges already sorted runs in linear time.

    >>> sorted_unique(np.array([5, 1, 5, 3])).tolist()
    [1, 3, 5]
    """
    keys = np.sort(keys, kind="stable")
    return keys[np.append(True, keys[1:] != keys[:-1])] if len(keys) else keys


def _runs(k):
    """Starts and lengths of the runs of equal values in sorted k."""
    starts = _narrow(np.flatnonzero(np.append(True, k[1:] != k[:-1])), len(k))
    return starts, np.diff(np.append(starts, starts.dtype.type(len(k))))


def _table(cols, start, length):
    """Bucket table of one substring: positions of cols in key order; bucket start and size of every key.

    Direct-address tables of int32 (2**24 keys: 64 MB each) for random lookups.
    """
    perm, keys = _keysort(_substring(cols, start, length))
    count = np.zeros(1 << length, perm.dtype)
    # Runs of a block of sorted keys at a time: np.bincount's int64 counts of
    # every key would take 128 MB at 2**24 keys, and as much for few hashes.
    for s in range(0, len(keys), _BLOCK):
        run, size = _runs(keys[s : s + _BLOCK])
        count[keys[s + run]] += size  # a key that spans two blocks gets both parts
    first = np.cumsum(count, dtype=count.dtype)
    first -= count
    return perm, first, count


def _mih_join(parts, ub, threshold, same, m):
    """Exact MIH join: (part, blocks) for every searched substring and part of the a side; pairs once when same.

    One substring at a time, the b side's table is built once and probed by
    every part, so only one table and one part are alive at a time.
    """
    lengths, radii = _layout(64 * len(ub), threshold, m)
    searched = []
    for start, length, radius in zip(np.cumsum([0] + lengths[:-1]).tolist(), lengths, radii):
        if radius < 0:
            continue
        perm_b, first, count = _table(ub, start, length)
        # Hashes in bucket order: candidates then read memory nearly in sequence,
        # and only the survivors go through the permutation: 10-18% faster in bench runs.
        sorted_b = [c[perm_b] for c in ub]
        for part, ua in parts(start, length):
            if same:
                perm_a, sorted_a, hits = perm_b, sorted_b, _self_hits(first, count, length, radius)
            else:
                perm_a, hits = _hits(ua, first, count, start, length, radius)
                sorted_a = [c[perm_a] for c in ua]
            del ua  # only its sorted copy is read from here on
            out = []
            for sa, ca, sb, cb, tri in hits:
                for pa, pb in _chunks(sa, ca, sb, cb, tri):
                    pa, pb, d = _distances(sorted_a, sorted_b, pa, pb, threshold)
                    if searched and len(pa):  # drop pairs that an earlier substring reports
                        keep = np.flatnonzero(_unreported(sorted_a, sorted_b, pa, pb, searched))
                        pa, pb, d = pa[keep], pb[keep], d[keep]
                    out.append((perm_a[pa], perm_b[pb], d))
            yield part, out
            del part, perm_a, sorted_a, hits, out  # the next part is built before the loop rebinds them
        searched.append((start, length, radius))
        del perm_b, first, count, sorted_b  # likewise the next table


def _unreported(ca, cb, ia, ib, searched):
    """Which pairs (ia, ib) of hashes ca, cb no earlier substring reports: beyond its radius there."""
    x = [wa[ia] ^ wb[ib] for wa, wb in zip(ca, cb)]  # a substring of a XOR b is that of a XOR that of b
    keep = np.ones(len(ia), dtype=bool)
    for start, length, radius in searched:
        keep &= _popcount(_substring(x, start, length)) > radius
    return keep


def _hits(ua, first, count, start, length, radius):
    """Sort order of ua by one substring, and a generator of its bucket pairs with the table's within radius bits.

    Pairs are (start_a, count_a, start_b, count_b, inside) arrays, positions in
    ua's sort order and the table's; inside is always False here.
    """
    perm_a, sv = _keysort(_substring(ua, start, length))
    qs, qc = _runs(sv)
    keys = sv[qs]
    del sv

    def hits():
        msk = _masks(length, radius)
        step = max(1, _LOOKUPS // len(msk))
        for c in range(0, len(keys), step):
            target = keys[c : c + step, None] ^ msk[None, :]
            tc = count[target]
            i, j = np.nonzero(tc)
            yield qs[c + i], qc[c + i], first[target[i, j]], tc[i, j], False

    return perm_a, hits()


def _self_hits(first, count, length, radius):
    """Bucket pairs of a table with itself whose keys differ by <= radius bits, each once; see _hits."""
    keys = _narrow(np.flatnonzero(count), 1 << length)
    qs, qc = first[keys], count[keys]
    tri = np.flatnonzero(qc > 1)
    yield qs[tri], qc[tri], qs[tri], qc[tri], True
    # Keys differing by a mask pair up once: from the key whose top mask bit is 0.
    for t in range(length if radius > 0 else 0):
        msk, sel = _masks(length, radius, t), np.flatnonzero((keys >> t) & 1 == 0)
        step = max(1, _LOOKUPS // len(msk))
        for c in range(0, len(sel), step):
            rows = sel[c : c + step]
            target = keys[rows, None] ^ msk[None, :]
            tc = count[target]
            i, j = np.nonzero(tc)
            yield qs[rows[i]], qc[rows[i]], first[target[i, j]], tc[i, j], False


def _chunks(sa, ca, sb, cb, tri=False):
    """Position pairs of ranges [sa, sa+ca) x [sb, sb+cb), or a < b inside one range when tri.

    Yields about _CANDIDATES pairs at a time; pairs are numbered inside each
    range pair and decoded, so an oversized bucket is cut at any point.
    """
    ca, cb = ca.astype(np.int64), cb.astype(np.int64)  # int32 bucket sizes would overflow here
    sizes = ca * (ca - 1) // 2 if tri else ca * cb
    one = sizes == 1  # most bucket pairs of spread-out hashes: nothing to expand
    if not tri and one.all():
        yield sa, sb
        return
    if not tri and one.any():
        yield sa[one], sb[one]
        sa, ca, sb, cb, sizes = sa[~one], ca[~one], sb[~one], cb[~one], sizes[~one]
    big = sizes > _CANDIDATES
    for p in np.flatnonzero(big):  # a bucket of thousands: slices of its pair numbers
        for k in range(0, sizes[p], _CANDIDATES):
            a, b = _decode(np.arange(k, min(sizes[p], k + _CANDIDATES)), cb[p], tri)
            yield sa[p] + a, sb[p] + b
    sa, sb, cb, sizes = sa[~big], sb[~big], cb[~big], sizes[~big]
    ends = np.cumsum(sizes)
    bounds = np.searchsorted(ends, np.arange(_CANDIDATES, ends[-1] if len(ends) else 0, _CANDIDATES), side="right")
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(sizes)]):
        own = np.repeat(np.arange(lo, hi), sizes[lo:hi])
        if len(own):
            a, b = _decode(np.arange(len(own)) - (ends[own] - sizes[own] - (ends[lo - 1] if lo else 0)), cb[own], tri)
            yield sa[own] + a, sb[own] + b


def _decode(k, cb, tri):
    """Pair number k -> offsets (a, b): row-major in a cb-wide block, or (b-1)b/2 + a with a < b."""
    if not tri:
        return k // cb, k % cb
    b = ((1 + np.sqrt(8 * k + 1)) // 2).astype(np.int64)  # exact: 8k+1 < 2**53
    return k - b * (b - 1) // 2, b


def _join(ua, ub, threshold, same, method, parts=None):
    """Pairs of unique-hash indices within threshold: (part, blocks of (i, j, d)) for each part of the a side.

    parts(start, length) yields (part, unique hashes) covering the a side, by
    ranges of that substring's keys when MIH asks; ua then stands for the a
    side in the plan.  Without parts, ua is the one part, None.
    """
    if parts is None:
        parts = lambda *_: [(None, ua)]
    if not len(ua[0]) or not len(ub[0]) or (same and threshold == 0):  # unique hashes differ by >= 1 bit
        return
    if method == "bktree":
        # One tree for every part of the queries: building it is the slow half.
        search = None if same else _bktree_searcher(ub)
        for part, a in parts():
            yield part, _bktree_self_join(ub, threshold) if same else search(a, threshold)
        return
    na, nb, bits = len(ua[0]), len(ub[0]), 64 * len(ua)
    cost, m = _mih_plan(na, nb, bits, threshold, same) if method != "brute" else (0, None)
    brute = _brute_cost(na, nb, len(ua), same)
    if method == "auto" and m is not None and cost < brute:
        cost += _C_CAND * _excess(ua, ub, bits, threshold, same, m)
    if m is None or (method == "auto" and cost >= brute):
        for part, a in parts():
            yield part, _brute_join(a, ub, threshold, same)
        return
    yield from _mih_join(parts, ub, threshold, same, m)


def _excess(ua, ub, bits, threshold, same, m, sample=1 << 16):
    """Same-bucket candidates beyond what uniform hashes give (skewed bits, big clumps), from a sample."""
    rng = np.random.default_rng(0)  # a fixed sample keeps "auto" deterministic
    pick = [np.sort(rng.choice(len(u[0]), min(sample, len(u[0])), replace=False)) for u in (ua, ub)]
    lengths, radii = _layout(bits, threshold, m)
    extra = 0.0
    for o, n, r in zip(np.cumsum([0] + lengths[:-1]), lengths, radii):
        if r < 0:
            continue
        ka, ca = np.unique(_substring([c[pick[0]] for c in ua], o, n), return_counts=True)
        if same:
            rate = (ca * (ca - 1.0)).sum() / max(1, len(pick[0]) * (len(pick[0]) - 1))
        else:
            kb, cb = np.unique(_substring([c[pick[1]] for c in ub], o, n), return_counts=True)
            _, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
            rate = (ca[ia] * cb[ib].astype(np.float64)).sum() / (len(pick[0]) * len(pick[1]))
        extra += max(0.0, rate - 0.5**n) * len(ua[0]) * len(ub[0]) / (2 if same else 1)
    return extra


def _pairs(left, right, distance):
    key = left.astype(np.int64)  # built in place: a clumped set can have 10**7 pairs
    key *= int(right.max(initial=0)) + 1
    key += right
    order = np.argsort(key)
    del key
    left, right, distance = left[order], right[order], distance[order]
    return Pairs(left.astype(np.int64, copy=False), right.astype(np.int64, copy=False),
                 distance.astype(np.int32, copy=False))


def _concat(blocks):
    if not blocks:
        return (np.empty(0, np.int64),) * 2 + (np.empty(0, np.int32),)
    return tuple(np.concatenate([b[f] for b in blocks]).astype(t) for f, t in enumerate((np.int64, np.int64, np.int32)))


def find_pairs(hashes, threshold, *, method="auto"):
    """Every pair i < j of hashes within threshold bits, sorted by (left, right).

    >>> h = np.array([5, 5, 4, 1 << 40], dtype=np.uint64)
    >>> list(find_pairs(h, 1, method="mih"))
    [(0, 1, 0), (0, 2, 1), (1, 2, 1)]
    """
    cols = _columns(hashes, "hashes")
    threshold = _check(threshold, method)
    group = _group(cols)
    order, starts, counts, uniq = group
    gi, gj, d = _concat([b for _, found in _join(uniq, uniq, threshold, True, method) for b in found])
    a, b, own = _expand(group, group, gi, gj)
    d = d[own]
    if order is not None:  # identical hashes pair up at distance 0
        dup = np.flatnonzero(counts > 1)
        qa, qb, _ = _concat([(x, y, y) for x, y in _chunks(starts[dup], counts[dup], starts[dup], counts[dup], True)])
        a, b = np.concatenate([a, order[qa]]), np.concatenate([b, order[qb]])
        d = np.concatenate([d, np.zeros(len(qa), np.int32)])
    left, right = np.minimum(a, b), np.maximum(a, b)
    del a, b
    return _pairs(left, right, d)


def _query_parts(cols, start=None, length=None):
    """Parts of about _QUERIES queries, as ((positions, grouping), unique hashes).

    Given a substring, a part is a range of its keys: equal keys (and equal
    hashes) meet in one part and share their bucket lookups: parts by
    position would make twice as many at 9*10**6 queries.
    """
    n = len(cols[0])
    if start is None:
        for s in range(0, n, _QUERIES):
            yield _query_part(cols, _narrow(np.arange(s, min(n, s + _QUERIES)), n))
        return
    top = min(length, 12)  # 4096 ranges of keys, cut into parts by their sizes
    hist = np.zeros(1 << top, np.int64)
    for s in range(0, n, _BLOCK):
        hist += np.bincount(_substring([c[s : s + _BLOCK] for c in cols], start, length) >> (length - top),
                            minlength=1 << top)
    _, part = np.unique((np.cumsum(hist) - hist) // _QUERIES, return_inverse=True)
    part = part.astype(np.uint8 if part[-1] < 256 else np.uint16)
    pid = np.empty(n, part.dtype)  # 1-2 bytes a query
    for s in range(0, n, _BLOCK):
        pid[s : s + _BLOCK] = part[_substring([c[s : s + _BLOCK] for c in cols], start, length) >> (length - top)]
    for p in range(int(part[-1]) + 1):
        where = _narrow(np.flatnonzero(pid == p), n)
        if len(where):  # ranges past a big clump of equal keys can be empty
            yield _query_part(cols, where)
        del where  # before the next part is built


def _query_part(cols, where):
    group = _group([c[where] for c in cols])
    return (where, group[:3]), group[3]  # MIH drops the hashes once it has sorted them


def find_matches(queries, database, threshold, *, method="auto"):
    """Every (query, database) index pair within threshold bits, sorted.

    >>> db = np.array([0, 6, 1 << 63], dtype=np.uint64)
    >>> list(find_matches(np.array([1], dtype=np.uint64), db, 1))
    [(0, 0, 1)]
    """
    qcols, dcols = _columns(queries, "queries"), _columns(database, "database")
    threshold = _check(threshold, method)
    if len(qcols) != len(dcols):
        msg = f"queries have {len(qcols)} words per hash but database has {len(dcols)}"
        raise UsageError(msg)
    dgroup = _group(dcols)
    if len(qcols[0]) <= _QUERIES:  # one part, grouped once
        qgroup = _group(qcols)
        ua, parts = qgroup[3], lambda *_: [((None, qgroup), qgroup[3])]
    else:  # the database's tables are built once and probed part by part
        ua, parts = qcols, functools.partial(_query_parts, qcols)
    blocks = []
    for (where, group), found in _join(ua, dgroup[3], threshold, False, method, parts):
        gi, gj, d = _concat(found)
        pa, pb, own = _expand(group, dgroup, gi, gj)
        blocks.append((pa if where is None else where[pa], pb, d[own]))
        del where, group, found  # the next part is built before the loop rebinds them
    left, right, d = _concat(blocks)
    del blocks, dgroup  # before the sort: the pairs of a clumped set are the biggest arrays here
    return _pairs(left, right, d)
