"""Partial copies: a part of a picture, or a picture inside a larger frame, also mirrored.

Whole-image hashes see a crop at an offset, a square cut by a social network,
a screenshot around a picture or a 2x2 collage as a different picture. This
module finds them with local features (``pip install 'dupfinder[partial]'``
brings OpenCV):

1. **Features** (:func:`file_features`, in the worker processes): up to
   :data:`N_FEATURES` ORB keypoints of the image scaled to
   :data:`FEATURE_SIDE` pixels on its long side, with their 256-bit
   descriptors, the descriptors of the mirrored image at the mirrored
   points, and a small grey thumbnail. Compact arrays: about 50 KB a file.
2. **Candidates** (:func:`candidate_pairs`): every descriptor is cut into
   eight 32-bit words, and descriptors of two files that share a word
   exactly and are within :data:`MATCH_BITS` bits of each other vote for
   that pair of files. Sorting the words finds the sharing descriptors
   without comparing every pair of files.
3. **Verification** (:func:`verify`): a similarity (scale, a small turn,
   offset) is fitted with RANSAC to the voting matches (when a few agree,
   more are sought where it says they must be), and the pair is kept only
   with :data:`MIN_INLIERS` inliers spread over the matched region, a sane
   scale, a region that is a real part of one frame, and grey levels that
   agree there, overall and in the detail (:data:`MIN_CORRELATION`).
   :func:`partial_relations` (what ``scan`` uses) skips candidates whose
   files are already joined until grouping asks for them.

With a worker pool, steps 2 and 3 run in its workers, the features shared
through a memory-mapped table (:mod:`dupfinder.partial_pool`); ``match``
sends each target to a worker that computes its features and matches them
against the references, written once (:mod:`dupfinder.partial_refs`).

A :class:`PartialMatch` ``(a, b, kind, box, inliers, mirrored)`` says what
``b`` is to ``a``: ``crop`` (b shows a part of a; ``box`` is that part, in
a's pixels) or ``contained`` (b shows all of a inside a larger frame;
``box`` is where a is, in b's pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing, nullcontext

from . import partial_pool
from .executor import worker_count
from .models import Progress
from .partial_features import (
    FEATURE_SIDE,
    INSTALL_HINT,
    N_FEATURES,
    Features,
    PartialMatch,
    features_for,
    file_features,
    image_features,
    or_empty,
    require_opencv,
)
from .partial_pool import Task, shared, verify_task
from .partial_verify import best_matches, verify
from .partial_votes import MIN_VOTES, candidate_pairs, grouped, vote_matches

__all__ = [
    "INSTALL_HINT",
    "FEATURE_SIDE",
    "N_FEATURES",
    "Features",
    "SameBytes",
    "PartialMatch",
    "require_opencv",
    "image_features",
    "file_features",
    "features_for",
    "candidate_pairs",
    "verify",
    "find_partial",
    "relations",
    "Relations",
    "partial_relations",
    "verify_all",
]


def find_partial(
    features: Sequence[Features | None], *, queries: Sequence[Features | None] | None = None,
    executor=None,
) -> list[PartialMatch]:
    """Every verified partial match among ``features`` (or of ``queries`` against them).

    ``a`` and ``b`` of each match are indices into the sequences (``a`` into
    ``features``, ``b`` into ``queries`` when given); ``None`` entries
    (files without features) never match. With an ``executor`` (a worker
    pool), the candidates are verified in its workers.

    >>> from PIL import Image
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> sheet = Image.new("L", (700, 520), 200)
    >>> sheet.paste(art, (300, 200))
    >>> [(m.a, m.b, m.kind, [round(v, -1) for v in m.box])
    ...  for m in find_partial([image_features(art), image_features(sheet)])]
    [(0, 1, 'contained', [300, 200, 620, 440])]
    """
    db = or_empty(features)
    qs = None if queries is None else or_empty(queries)
    candidates = list(grouped(vote_matches(db, queries=qs), MIN_VOTES))
    if qs is None:
        everything, tasks = db, [Task(i, j, m, ki, kj, i, j) for i, j, m, ki, kj in candidates]
    else:
        # i is a query (target), j a reference: how the target relates to the reference.
        everything = db + qs
        tasks = [Task(j, len(db) + i, m, kj, ki, j, i) for i, j, m, ki, kj in candidates]
    return best_matches(candidates, verify_all(everything, tasks, executor=executor))


def verify_all(features: Sequence[Features], tasks: Sequence[Task], *, executor=None) -> list[PartialMatch | None]:
    """:func:`verify` each :class:`~dupfinder.partial_pool.Task`: is features[y] a partial copy of features[x]?

    With an ``executor`` of two workers or more (and
    :data:`~dupfinder.partial_pool.POOL_MIN_CANDIDATES` tasks), the tasks go
    to its workers in batches (:mod:`dupfinder.partial_pool`; measured: 1.45
    -> 0.85 s for the 8539 candidates of the 599-file bench tree, 2 workers);
    a batch whose worker died is verified again in this process.

    >>> from PIL import Image
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> fs = [image_features(art), image_features(art.crop((40, 30, 300, 230)))]
    >>> i, j, mirrored, ki, kj = next(grouped(vote_matches(fs), MIN_VOTES))  # the most votes
    >>> [(m.a, m.b, m.kind) for m in verify_all(fs, [Task(i, j, mirrored, ki, kj, "art", "part")])]
    [('art', 'part', 'crop')]
    """
    if worker_count(executor) < 2 or len(tasks) < partial_pool.POOL_MIN_CANDIDATES:
        return [verify_task(features, t) for t in tasks]
    out: list[PartialMatch | None] = [None] * len(tasks)
    size = partial_pool.VERIFY_BATCH
    batches = [(s, tasks[s : s + size]) for s in range(0, len(tasks), size)]
    with shared(features, executor) as pool:
        for (start, batch), result in pool.verify(batches):
            if result is None:  # its worker died
                result = [verify_task(features, t) for t in batch]
            out[start : start + len(result)] = result
    return out


class Relations(Mapping):
    """Verified partial matches among files, both ways: ``(i, j) -> (what j is to i, box)``.

    Built by :func:`partial_relations`. Iterating gives the pairs verified
    so far; asking for a pair that was set aside (see there) verifies it then.
    """

    def __init__(self, features: list[Features], found: dict, deferred: dict):
        self._features = features
        self._found = found
        self._deferred = deferred

    def __getitem__(self, key):
        if key not in self._found:
            self._settle(key)
        return self._found[key]

    def __contains__(self, key) -> bool:
        if key not in self._found:
            self._settle(key)
        return key in self._found

    def __iter__(self):
        return iter(list(self._found))

    def __len__(self) -> int:
        return len(self._found)

    def _settle(self, key) -> None:
        i, j = sorted(key)
        # Most votes first, the first that verifies: the rule of find_partial
        # and of the candidates verified at once.
        for _, mirrored, ki, kj in sorted(self._deferred.pop((i, j), ()), key=lambda d: d[0]):
            found = verify(self._features[i], self._features[j], mirrored=mirrored, a=i, b=j, hint=(ki, kj))
            if found is not None:
                self._found.update(relations([found]))
                return


class SameBytes(Mapping):
    """Relations among files some of which are byte-for-byte copies: a copy answers as its first file.

    ``first[i]`` is the first file with file i's bytes (i itself for most);
    ``relations`` were found among first files only. Two copies of one
    content are not a partial copy of each other: their hashes are equal,
    which groups them. Iterating gives the pairs of first files; grouping
    needs no more, since every copy joins its first file by its hash.

    >>> rel = SameBytes({(0, 2): ("crop", (0, 0, 5, 5))}, [0, 0, 2])
    >>> rel[1, 2], (0, 1) in rel, list(rel)
    (('crop', (0, 0, 5, 5)), False, [(0, 2)])
    """

    def __init__(self, relations: Mapping, first):
        self._relations = relations
        self._first = first

    def _firsts(self, key) -> tuple[int, int] | None:
        a, b = (int(self._first[k]) for k in key)
        return None if a == b else (a, b)

    def __getitem__(self, key):
        pair = self._firsts(key)
        if pair is None:
            raise KeyError(key)
        return self._relations[pair]

    def __contains__(self, key) -> bool:
        pair = self._firsts(key)
        return pair is not None and pair in self._relations

    def __iter__(self):
        return iter(self._relations)

    def __len__(self) -> int:
        return len(self._relations)


def partial_relations(features: Sequence[Features | None], *, executor=None, progress=None) -> Relations:
    """The partial matches among files, for grouping: what :func:`find_partial` finds, verified lazily.

    Candidates are verified most votes first, and one whose two files are
    already joined by verified matches is set aside: grouping needs it only
    if one of the two becomes a group's kept file, and then asks for it.
    On the bench this verifies 40% fewer pairs than :func:`find_partial`.
    With an ``executor`` of two workers or more (:mod:`dupfinder.partial_pool`),
    the candidate search runs a word position per task, and the candidates
    go to the workers a batch at a time, each batch set aside by the joins
    known when it is sent. Which pairs are set aside then depends on timing, but not
    the answers: a pair's answer is its first candidate (most votes first)
    that verifies, whether verified at once or when asked. ``progress``, if
    given, gets a ``Progress("partial", done, candidates)`` as candidates are
    verified or set aside (``total`` None during the candidate search).

    >>> from PIL import Image
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> rel = partial_relations([image_features(art), None, image_features(art.crop((0, 0, 250, 200)))])
    >>> sorted(rel), rel[0, 2][0]
    ([(0, 2), (2, 0)], 'crop')
    """
    report = progress or (lambda _: None)
    db = or_empty(features)
    pooled = worker_count(executor) >= 2 and sum(len(f) for f in db) >= partial_pool.POOL_MIN_KEYPOINTS
    report(Progress("partial", 0, None))
    with shared(db, executor) if pooled else nullcontext() as pool:
        candidates = list(grouped(pool.votes() if pool else vote_matches(db), MIN_VOTES))
        if pool is None or len(candidates) < partial_pool.POOL_MIN_CANDIDATES:
            pool = None
        return _relations(db, candidates, pool, lambda done: report(Progress("partial", done, len(candidates))))


def _relations(db: list[Features], candidates: list, pool, report) -> Relations:
    """partial_relations' verification: one candidate at a time, or batches in the pool."""
    parent = list(range(len(db)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    found: dict = {}
    deferred: dict = {}
    winner: dict[tuple[int, int], int] = {}  # pair -> the candidate whose match is in found

    def keep(index: int, match: PartialMatch) -> None:
        pair = (match.a, match.b)
        if pair in winner and winner[pair] < index:
            return  # its other way, with more votes, verified too
        winner[pair] = index
        found.update(relations([match]))
        parent[root(match.a)] = root(match.b)

    decided = 0  # candidates verified or set aside

    def set_aside(index: int) -> None:
        i, j, mirrored, ki, kj = candidates[index]
        deferred.setdefault((i, j), []).append((index, mirrored, ki, kj))

    def batches(size: int):
        """``((candidate indices, span), tasks)``, a batch of ``span`` candidates at a time, less those set aside."""
        nonlocal decided
        for start in range(0, len(candidates), size):
            indices, tasks = [], []
            span = min(size, len(candidates) - start)
            for index in range(start, start + span):
                i, j, mirrored, ki, kj = candidates[index]
                if root(i) == root(j):
                    set_aside(index)
                else:
                    indices.append(index)
                    tasks.append(Task(i, j, mirrored, ki, kj, i, j))
            if tasks:
                yield (indices, span), tasks
            else:
                decided += span

    report(0)
    if pool is not None:
        # The pool asks for the next batch as a worker frees up: each is
        # built with the joins of every result read so far.
        with closing(pool.verify(batches(partial_pool.VERIFY_BATCH))) as answers:
            for ((indices, span), _), results in answers:
                for k, index in enumerate(indices):
                    if results is None:  # its worker died: verified when asked, like the others set aside
                        set_aside(index)
                    elif results[k] is not None:
                        keep(index, results[k])
                decided += span
                report(decided)
    else:
        for ((index,), _), (task,) in batches(1):
            match = verify_task(db, task)
            if match is not None:
                keep(index, match)
            if index % partial_pool.VERIFY_BATCH == 0:
                report(index + 1)
    report(len(candidates))
    return Relations(db, found, deferred)


_OTHER_WAY = {"crop": "contained", "contained": "crop"}


def relations(matches: Sequence[PartialMatch]) -> dict[tuple, tuple[str, tuple[int, int, int, int]]]:
    """Both directions of each match: ``(x, y) -> (what y is to x, box)``.

    If b is a crop of a, a contains b, and the box (where b's content is in
    a, in a's pixels) is the same either way.

    >>> relations([PartialMatch("a", "b", "crop", (1, 2, 3, 4), 30, True)])
    {('a', 'b'): ('crop+mirror', (1, 2, 3, 4)), ('b', 'a'): ('contained+mirror', (1, 2, 3, 4))}
    """
    out = {}
    for m in matches:
        out[m.a, m.b] = (m.transform, m.box)
        back = _OTHER_WAY[m.kind]
        out[m.b, m.a] = (f"{back}+mirror" if m.mirrored else back, m.box)
    return out
