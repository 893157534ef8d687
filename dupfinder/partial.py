"""Partial copies: a part of a picture, or a picture inside a larger frame, also mirrored.

Whole-image hashes see a crop at an offset, a square cut by a social network,
a screenshot around a picture or a 2x2 collage as a different picture. This
module finds them with local features (``pip install 'dupfinder[partial]'``
brings OpenCV):

1. **Features** (:func:`file_features`, in the worker processes): up to
   :data:`N_FEATURES` ORB keypoints of the image scaled to
   :data:`FEATURE_SIDE` pixels on its long side, with their 256-bit
   descriptors, the descriptors of the mirrored image at the mirrored
   points, and a small grey thumbnail. Compact arrays: about 40 KB a file.
2. **Candidates** (:func:`candidate_pairs`): every descriptor is cut into
   eight 32-bit words, and descriptors of two files that share a word
   exactly and are within :data:`MATCH_BITS` bits of each other vote for
   that pair of files. Sorting the words finds the sharing descriptors
   without comparing every pair of files.
3. **Verification** (:func:`verify`): the two files' descriptors are
   matched both ways, a similarity (scale, a small turn, offset) is fitted
   with RANSAC, and the pair is kept only with enough inliers spread over
   the matched region, a sane scale, a region that is a real part of one
   frame, and grey levels that agree there (:data:`MIN_CORRELATION`).

A :class:`PartialMatch` ``(a, b, kind, box, inliers, mirrored)`` says what
``b`` is to ``a``: ``crop`` (b shows a part of a; ``box`` is that part, in
a's pixels) or ``contained`` (b shows all of a inside a larger frame;
``box`` is where a is, in b's pixels).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .models import ScanError, UsageError

__all__ = [
    "INSTALL_HINT",
    "FEATURE_SIDE",
    "N_FEATURES",
    "Features",
    "PartialMatch",
    "require_opencv",
    "image_features",
    "file_features",
    "candidate_pairs",
    "verify",
    "find_partial",
    "relations",
    "features_for",
]

INSTALL_HINT = "partial matching needs OpenCV: pip install 'dupfinder[partial]'"

# Features are computed on the image scaled to this long side. 512 keeps a
# quarter of a 2x2 collage at 256 px, where ORB still finds ~100 keypoints.
FEATURE_SIDE = 512
N_FEATURES = 500
# ORB ranks keypoints by corner strength over the whole image, so the text
# of a screenshot or the busiest photo of a collage takes them all. We ask
# for this many times more, then keep the best of each cell of a grid in
# turn, so that every part of the frame keeps its share.
OVERSAMPLE = 3
GRID_CELL = 64  # feature pixels
FAST_THRESHOLD = 10
# ORB's pyramid: 8 levels 1.2 apart match scales up to 3.6 times apart.
LEVELS = 8
LEVEL_SCALE = 1.2
THUMB_SIDE = 128
# Two descriptors closer than this (of 256 bits) vote for their files; ORB's
# true correspondences under resizing and JPEG sit mostly below 40 bits.
MATCH_BITS = 48
# A 32-bit word shared by more descriptors than this is a flat patch or a
# stripe every picture has: it says nothing about which pictures match.
BUCKET_CAP = 48
# Pairs of files with fewer votes are not verified.
MIN_VOTES = 4
# When the votes fit a similarity with at least GUIDE_MIN (but fewer than
# MIN_INLIERS) inliers, more matches are sought within GUIDE_PIXELS of where
# the similarity puts each keypoint.
GUIDE_MIN = 4
GUIDE_PIXELS = 12.0
# Verification: RANSAC inliers, their tolerance in feature pixels, the turn
# and the scales (between the two feature images) a partial copy may have.
MIN_INLIERS = 10
RANSAC_PIXELS = 4.0
MAX_TURN_DEGREES = 10.0
SCALE_RANGE = (0.2, 5.0)
# The matched region: it must cover at least this share of the container's
# area and at most this share (above, the frames coincide: the whole-image
# hashes handle that), and the inliers must spread over this share of its
# width and of its height.
MIN_AREA = 0.1
MAX_AREA = 0.95
MIN_SPREAD = 0.1
# Grey levels of the two files over the matched region (thumbnails, 24x24)
# must correlate at least this much.
MIN_CORRELATION = 0.75

# Descriptors are cut into words of this many bits for the candidate search.
WORD_BITS = 32


def require_opencv():
    """Import OpenCV, or raise UsageError saying how to install it.

    >>> require_opencv().__name__
    'cv2'
    """
    try:
        import cv2
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return cv2


@dataclass(frozen=True, eq=False)
class Features:
    """ORB keypoints of one image, as compact arrays.

    ``points`` (n, 2) float32 are in feature pixels: the image scaled by
    ``scale`` (feature pixels per pixel of the ``width`` x ``height`` image a
    person sees). ``descriptors`` and ``mirrored`` are (n, 32) uint8: the
    image's, and the mirrored image's at the mirrored points.
    ``thumb`` is the grey image at :data:`THUMB_SIDE` pixels on its long side.
    """

    path: str
    width: int
    height: int
    scale: float
    points: np.ndarray
    descriptors: np.ndarray
    mirrored: np.ndarray
    thumb: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    @property
    def size(self) -> tuple[float, float]:
        """The feature image's width and height."""
        return self.width * self.scale, self.height * self.scale


@dataclass(frozen=True, slots=True)
class PartialMatch:
    """File ``b`` is a ``crop`` of file ``a`` (box in a's pixels) or ``contained`` it (box in b's).

    ``a`` and ``b`` are indices or paths, as the caller gave the files;
    ``inliers`` counts the keypoints the fitted similarity explains;
    ``mirrored`` says b shows a mirrored.

    >>> PartialMatch(0, 1, "crop", (10, 0, 250, 240), 40, False).kind
    'crop'
    """

    a: object
    b: object
    kind: str
    box: tuple[int, int, int, int]
    inliers: int
    mirrored: bool

    @property
    def transform(self) -> str:
        """The name a report gives b relative to a: ``crop``, ``contained+mirror``...

        >>> PartialMatch(0, 1, "contained", (0, 0, 1, 1), 20, True).transform
        'contained+mirror'
        """
        return f"{self.kind}+mirror" if self.mirrored else self.kind


def image_features(image, *, path: str = "", width: int | None = None, height: int | None = None) -> Features:
    """ORB features of a PIL image; ``width``/``height`` give its full size if it was decoded smaller.

    >>> from PIL import Image
    >>> f = image_features(Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100))
    >>> f.descriptors.shape[1], f.mirrored.shape == f.descriptors.shape, f.scale
    (32, True, 1.0)
    """
    cv2 = require_opencv()
    from PIL import Image

    grey = image if image.mode == "L" else image.convert("L")
    width = width or grey.width
    height = height or grey.height
    factor = min(1.0, FEATURE_SIDE / max(grey.size))
    if factor < 1.0:
        size = (max(1, round(grey.width * factor)), max(1, round(grey.height * factor)))
        grey = grey.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(grey, dtype=np.uint8)
    t = min(1.0, THUMB_SIDE / max(grey.size))
    thumb = np.asarray(grey.resize((max(1, round(grey.width * t)), max(1, round(grey.height * t))),
                                   Image.Resampling.BOX), dtype=np.uint8)
    orb = cv2.ORB_create(nfeatures=int(N_FEATURES * OVERSAMPLE), fastThreshold=FAST_THRESHOLD, nlevels=LEVELS,
                         scaleFactor=LEVEL_SCALE)
    keypoints, descriptors = orb.detectAndCompute(pixels, None)
    if descriptors is not None and len(keypoints) > N_FEATURES:
        chosen = _spread(keypoints, N_FEATURES)
        keypoints = [keypoints[i] for i in chosen]
        descriptors = descriptors[chosen]
    if descriptors is None or not keypoints:
        empty = np.zeros((0, 32), np.uint8)
        return Features(path, width, height, grey.width / width, np.zeros((0, 2), np.float32),
                        empty, empty, thumb)
    # Mirrored descriptors at the mirrored points and angles: FAST, Harris and
    # the intensity centroid are symmetric, so these are the keypoints ORB
    # would find on the mirrored image, at 60% of the cost of finding them.
    w = pixels.shape[1]
    flipped = np.ascontiguousarray(pixels[:, ::-1])
    mirror_kp = [cv2.KeyPoint(w - 1.0 - k.pt[0], k.pt[1], k.size, (180.0 - k.angle) % 360.0, k.response, k.octave)
                 for k in keypoints]
    mirror_kp, mirrored = orb.compute(flipped, mirror_kp)
    if mirrored is None or len(mirror_kp) != len(keypoints):
        mirrored = np.zeros_like(descriptors)  # never in practice: the points are inside the image
    # OpenCV puts pixel i's centre at i; we keep i + 0.5, so that the frame
    # is [0, w] x [0, h] and mirroring is x -> w - x.
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2) + 0.5
    return Features(path, width, height, grey.width / width, points, descriptors, mirrored, thumb)


def _spread(keypoints, n: int) -> np.ndarray:
    """Indices of ``n`` keypoints: the strongest of each grid cell, then the second, and so on."""
    pts = np.array([k.pt for k in keypoints], dtype=np.float64)
    response = np.array([k.response for k in keypoints], dtype=np.float64)
    cell = (pts[:, 1] // GRID_CELL).astype(np.int64) * 4096 + (pts[:, 0] // GRID_CELL).astype(np.int64)
    order = np.lexsort((-response, cell))
    sorted_cells = cell[order]
    starts = np.flatnonzero(np.r_[True, sorted_cells[1:] != sorted_cells[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    return np.sort(order[np.lexsort((-response[order], rank))][:n])


def file_features(path: str, *, orient: bool = True) -> Features | ScanError:
    """Decode a file and compute its features; a file that cannot be read gives a ScanError.

    >>> import tempfile
    >>> from PIL import Image
    >>> p = tempfile.mktemp(suffix=".png")
    >>> Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100).save(p)
    >>> len(file_features(p)) > 100, file_features(p + "x").stage
    (True, 'open')
    """
    from .imaging import load_image

    decoded = load_image(os.fspath(path), min_size=FEATURE_SIDE // 2, orient=orient, grey=True)
    if isinstance(decoded, ScanError):
        return decoded
    try:
        return image_features(decoded.image, path=path, width=decoded.width, height=decoded.height)
    except (ValueError, MemoryError) as exc:
        return ScanError(path, "hash", str(exc) or type(exc).__name__)


def features_batch(paths: Sequence[str], orient: bool = True) -> list:
    """:func:`file_features` of each path: the work one worker does per batch."""
    # One thread per worker: the pool already keeps every core busy, and
    # OpenCV's own threads on top of it made the features 2x slower here.
    require_opencv().setNumThreads(1)
    return [file_features(p, orient=orient) for p in paths]


# --- candidates --------------------------------------------------------------------------


_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_rows(x: np.ndarray) -> np.ndarray:
    """Bits set in each row of a (n, 32) uint8 array.

    >>> _popcount_rows(np.array([[255] * 32, [1] + [0] * 31], np.uint8)).tolist()
    [256, 1]
    """
    if hasattr(np, "bitwise_count"):  # numpy 2: a popcount instruction
        return np.bitwise_count(np.ascontiguousarray(x).view(np.uint64)).sum(axis=1, dtype=np.int32)
    return _BITS[x].sum(axis=1, dtype=np.int32)


def vote_matches(
    features: Sequence[Features], *, queries: Sequence[Features] | None = None
) -> tuple[np.ndarray, ...]:
    """Descriptor matches found through shared 32-bit words: arrays ``(i, j, mirrored, ki, kj)``.

    Without ``queries``, matches within ``features`` (file i < file j); with
    them, of query file ``i`` and ``features[j]``. ``ki`` and ``kj`` index
    the two files' keypoints; ``mirrored`` says the match is between file i
    and file j's mirror image (ki is then a point of i, kj one of j's mirror).
    """
    scan = queries is None
    query_set = features if scan else queries
    parts_desc, owner, point, mirror, side = [], [], [], [], []
    for s, group in ((0, query_set), (1, () if scan else features)):
        for i, f in enumerate(group):
            n = len(f)
            if not n:
                continue
            kinds = ((f.descriptors, 0), (f.mirrored, 1)) if s == 0 else ((f.descriptors, 0),)
            for desc, flag in kinds:
                parts_desc.append(desc)
                owner.append(np.full(n, i, np.int64))
                point.append(np.arange(n, dtype=np.int64))
                mirror.append(np.full(n, flag, np.int8))
                side.append(np.full(n, s, np.int8))
    empty = np.zeros(0, np.int64)
    if not parts_desc:
        return empty, empty, empty.astype(bool), empty, empty
    desc = np.ascontiguousarray(np.concatenate(parts_desc))
    owner = np.concatenate(owner)
    point = np.concatenate(point)
    mirror = np.concatenate(mirror)
    side = np.concatenate(side)
    found = [_bucket_pairs(key, desc, owner, mirror, side, scan=scan) for key in _words(desc)]
    left = np.concatenate([f[0] for f in found])
    right = np.concatenate([f[1] for f in found])
    if not len(left):
        return empty, empty, empty.astype(bool), empty, empty
    n_entries = len(desc)
    keys = np.unique(left * n_entries + right)  # a descriptor pair votes once
    left, right = keys // n_entries, keys % n_entries
    if scan:  # the smaller file on the left; the mirrored entry (if any) on the right
        swap = (owner[left] > owner[right])
        left, right = np.where(swap, right, left), np.where(swap, left, right)
    mirrored = (mirror[left] ^ mirror[right]).astype(bool)
    return owner[left], owner[right], mirrored, point[left], point[right]


def _words(desc: np.ndarray):
    """The descriptors' :data:`WORD_BITS`-bit words, one array of keys per position."""
    step = WORD_BITS // 8
    wide = desc.astype(np.uint32)
    for start in range(0, desc.shape[1] - step + 1, step):
        key = np.zeros(len(desc), np.uint32)
        for k in range(step):
            key |= wide[:, start + k] << np.uint32(8 * k)
        yield key


def candidate_pairs(
    features: Sequence[Features], *, queries: Sequence[Features] | None = None, min_votes: int = MIN_VOTES
) -> list[tuple[int, int, bool, int]]:
    """Pairs of files worth verifying: ``(i, j, mirrored, votes)``, most votes first.

    Without ``queries``, pairs within ``features`` (i < j). With them, pairs
    of query ``i`` and ``features[j]``. ``mirrored`` says the match is
    between one file and the other's mirror image.

    >>> from PIL import Image
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> fs = [image_features(art), image_features(art.crop((40, 30, 300, 230)))]
    >>> candidate_pairs(fs)[0][:3]  # the most votes: as is, not mirrored
    (0, 1, False)
    """
    return [(i, j, m, len(ki)) for i, j, m, ki, _ in _grouped(vote_matches(features, queries=queries), min_votes)]


def _grouped(matches, min_votes: int):
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


def _bucket_pairs(key, desc, owner, mirror, side, *, scan: bool):
    """Entry pairs (left, right) whose ``key`` is equal and whose descriptors are close."""
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    sizes = np.diff(np.r_[starts, len(ks)])
    run_size = np.repeat(sizes, sizes)
    pos_in_run = np.arange(len(ks)) - np.repeat(starts, sizes)
    usable = (run_size >= 2) & (run_size <= BUCKET_CAP)
    idx = np.flatnonzero(usable)
    lefts, rights = [], []
    d = 1
    while len(idx):
        idx = idx[pos_in_run[idx] + d < run_size[idx]]
        if not len(idx):
            break
        i, j = order[idx], order[idx + d]
        if scan:
            # Different files; never two mirrored entries (that is the
            # unmirrored pair again); a mixed pair once: mirror on the larger file.
            ok = (owner[i] != owner[j]) & ((mirror[i] + mirror[j]) < 2)
            mixed = mirror[i] != mirror[j]
            mirrored_owner = np.where(mirror[i] == 1, owner[i], owner[j])
            plain_owner = np.where(mirror[i] == 1, owner[j], owner[i])
            ok &= ~mixed | (mirrored_owner > plain_owner)
        else:
            ok = side[i] != side[j]
        i, j = i[ok], j[ok]
        if len(i):
            close = _popcount_rows(np.bitwise_xor(desc[i], desc[j])) <= MATCH_BITS
            i, j = i[close], j[close]
            if not scan:  # queries on the left
                swap = side[i] == 1
                i, j = np.where(swap, j, i), np.where(swap, i, j)
            elif len(i):  # the mirrored entry on the right
                swap = mirror[i] == 1
                i, j = np.where(swap, j, i), np.where(swap, i, j)
            lefts.append(i)
            rights.append(j)
        d += 1
    if not lefts:
        empty = np.zeros(0, np.int64)
        return empty, empty
    return np.concatenate(lefts), np.concatenate(rights)


# --- verification ------------------------------------------------------------------------


def _matches(cv2, da: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours within 64 bits (brute force: ~5 ms for 500 x 500 here)."""
    found = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(da, db)
    pairs = np.array([(m.queryIdx, m.trainIdx) for m in found if m.distance <= 64], dtype=np.int64)
    pairs = pairs.reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _guided(fa: Features, fb: Features, pb_all: np.ndarray, matrix: np.ndarray, *, mirrored: bool):
    """Matches within :data:`GUIDE_PIXELS` of where ``matrix`` puts a's points: the closest descriptor of 4."""
    from scipy.spatial import cKDTree

    predicted = fa.points.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    _, near = cKDTree(pb_all).query(predicted, k=4, distance_upper_bound=GUIDE_PIXELS)
    near_a, slot = np.nonzero(near < len(pb_all))  # missing neighbours come back as len(pb_all)
    near_b = near[near_a, slot]
    if not len(near_a):
        return near_a, near_b
    db = fb.mirrored if mirrored else fb.descriptors
    bits = _popcount_rows(fa.descriptors[near_a] ^ db[near_b])
    close = bits <= 64
    near_a, near_b, bits = near_a[close], near_b[close], bits[close]
    order = np.lexsort((bits, near_a))
    first = np.r_[True, near_a[order][1:] != near_a[order][:-1]]
    return near_a[order][first], near_b[order][first]


def _fit(cv2, pa: np.ndarray, pb: np.ndarray):
    """A similarity from a's points to b's by RANSAC: (matrix, inlier mask), or (None, None)."""
    if len(pa) < 2:
        return None, None
    matrix, mask = cv2.estimateAffinePartial2D(
        pa, pb, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS, maxIters=2000, confidence=0.999
    )
    if matrix is None:
        return None, None
    return matrix, mask.ravel().astype(bool)


def _plausible(matrix: np.ndarray) -> bool:
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    turn = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    return SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] and abs(turn) <= MAX_TURN_DEGREES


def _quad(matrix: np.ndarray, w: float, h: float) -> np.ndarray:
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    return corners @ matrix[:, :2].T + matrix[:, 2]


def _inside(quad: np.ndarray, w: float, h: float, slack: float) -> bool:
    return bool((quad[:, 0] >= -slack * w).all() and (quad[:, 0] <= w * (1 + slack)).all()
                and (quad[:, 1] >= -slack * h).all() and (quad[:, 1] <= h * (1 + slack)).all())


def _invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def verify(
    fa: Features, fb: Features, *, mirrored: bool, a=0, b=1, hint: tuple[np.ndarray, np.ndarray] | None = None
) -> PartialMatch | None:
    """Check geometrically that ``fb`` is a crop of ``fa`` or contains it (mirrored if asked).

    ``hint`` holds matches already known (indices of a's and b's keypoints,
    from :func:`vote_matches`); without it the descriptors are matched by
    brute force.

    >>> from PIL import Image
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> m = verify(image_features(art), image_features(art.crop((40, 30, 300, 230))), mirrored=False)
    >>> m.kind, [round(v / 10) * 10 for v in m.box]
    ('crop', [40, 30, 300, 230])
    """
    cv2 = require_opencv()
    if len(fa) < MIN_INLIERS or len(fb) < MIN_INLIERS:
        return None
    wb = fb.size[0]
    pb_all = fb.points.astype(np.float64)
    if mirrored:  # b's points as they are in b's mirror image
        pb_all = pb_all.copy()
        pb_all[:, 0] = wb - pb_all[:, 0]
    ia, ib = hint if hint is not None else _matches(cv2, fa.descriptors, fb.mirrored if mirrored else fb.descriptors)
    matrix, inliers = _fit(cv2, fa.points[ia].astype(np.float64), pb_all[ib])
    if matrix is None or int(inliers.sum()) < GUIDE_MIN or not _plausible(matrix):
        return None
    if int(inliers.sum()) < MIN_INLIERS:
        # A few consistent matches: look for more where the model says they must be.
        ia, ib = _guided(fa, fb, pb_all, matrix, mirrored=mirrored)
        matrix, inliers = _fit(cv2, fa.points[ia].astype(np.float64), pb_all[ib])
        if matrix is None or int(inliers.sum()) < MIN_INLIERS or not _plausible(matrix):
            return None
    # Polish the model on every match it explains.
    refined, _ = cv2.estimateAffinePartial2D(fa.points[ia][inliers].astype(np.float64), pb_all[ib][inliers],
                                             method=cv2.LMEDS)
    if refined is not None and _plausible(refined):
        matrix = refined
    return _judge(cv2, fa, fb, matrix, fa.points[ia][inliers], pb_all[ib][inliers], mirrored=mirrored, a=a, b=b)


def _judge(cv2, fa, fb, matrix, pa, pb, *, mirrored, a, b) -> PartialMatch | None:
    """The kind and box of a fitted pair, or None if the region or the grey levels say no."""
    wa, ha = fa.size
    wb, hb = fb.size
    a_in_b = _quad(matrix, wa, ha)  # a's frame in (mirrored) b's feature pixels
    b_in_a = _quad(_invert(matrix), wb, hb)
    slack = 0.03
    if _inside(a_in_b, wb, hb, slack) and _area(a_in_b) <= MAX_AREA * wb * hb:
        kind, region, frame_w, frame_h, pts = "contained", a_in_b, wb, hb, pb
    elif _inside(b_in_a, wa, ha, slack) and _area(b_in_a) <= MAX_AREA * wa * ha:
        kind, region, frame_w, frame_h, pts = "crop", b_in_a, wa, ha, pa
    else:
        return None
    region = np.clip(region, [0, 0], [frame_w, frame_h])
    left, top = region.min(axis=0)
    right, bottom = region.max(axis=0)
    if (right - left) * (bottom - top) < MIN_AREA * frame_w * frame_h:
        return None
    spread_x = np.ptp(pts[:, 0]) / max(right - left, 1e-9)
    spread_y = np.ptp(pts[:, 1]) / max(bottom - top, 1e-9)
    if spread_x < MIN_SPREAD or spread_y < MIN_SPREAD:
        return None
    if _correlation(fa, fb, matrix, mirrored=mirrored) < MIN_CORRELATION:
        return None
    if kind == "contained":
        if mirrored:  # back to b's own pixels
            left, right = wb - right, wb - left
        box_scale = fb.scale
    else:
        box_scale = fa.scale
    box = tuple(int(round(v / box_scale)) for v in (left, top, right, bottom))
    return PartialMatch(a, b, kind, box, len(pts), mirrored)


def _area(quad: np.ndarray) -> float:
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _correlation(fa: Features, fb: Features, matrix: np.ndarray, *, mirrored: bool) -> float:
    """Correlation of the grey levels of a and b over the region both show, on their thumbnails."""
    cv2 = require_opencv()
    ta, tb = fa.thumb.astype(np.float32), fb.thumb.astype(np.float32)
    if mirrored:
        tb = np.ascontiguousarray(tb[:, ::-1])
    # matrix maps a's feature pixels to b's; thumbnails are scaled copies of those.
    sa = ta.shape[1] / fa.size[0]
    sb = tb.shape[1] / fb.size[0]
    m = matrix.copy()
    m[:, :2] *= sb / sa
    m[:, 2] *= sb
    # Whichever thumbnail is finer is blurred to the other's detail first:
    # warping a finer image down without it aliases, and halves the correlation.
    k = math.hypot(m[0, 0], m[1, 0])
    if k < 0.9:
        ta = cv2.GaussianBlur(ta, (0, 0), 0.6 * math.sqrt(1.0 / (k * k) - 1.0))
    elif k > 1.1:
        tb = cv2.GaussianBlur(tb, (0, 0), 0.6 * math.sqrt(k * k - 1.0))
    warped = cv2.warpAffine(ta, m, (tb.shape[1], tb.shape[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
    inside = cv2.warpAffine(np.ones_like(ta), m, (tb.shape[1], tb.shape[0]), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) > 0.5
    # Shrink the overlap by two pixels: its edge mixes in the border value.
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if inside.sum() < 64:
        return 0.0
    x, y = warped[inside], tb[inside]
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if denominator == 0.0:
        return 0.0
    return float((x * y).sum()) / denominator


def find_partial(
    features: Sequence[Features | None], *, queries: Sequence[Features | None] | None = None
) -> list[PartialMatch]:
    """Every verified partial match among ``features`` (or of ``queries`` against them).

    ``a`` and ``b`` of each match are indices into the sequences (``a`` into
    ``features``, ``b`` into ``queries`` when given); ``None`` entries
    (files without features) never match.

    >>> from PIL import Image
    >>> art = Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100)
    >>> sheet = Image.new("L", (700, 520), 200)
    >>> sheet.paste(art, (300, 200))
    >>> [(m.a, m.b, m.kind, [round(v, -1) for v in m.box])
    ...  for m in find_partial([image_features(art), image_features(sheet)])]
    [(0, 1, 'contained', [300, 200, 620, 440])]
    """
    empty = Features("", 1, 1, 1.0, np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8),
                     np.zeros((0, 32), np.uint8), np.zeros((1, 1), np.uint8))
    db = [f if f is not None else empty for f in features]
    qs = None if queries is None else [f if f is not None else empty for f in queries]
    best: dict[tuple[int, int], PartialMatch] = {}
    for i, j, mirrored, ki, kj in _grouped(vote_matches(db, queries=qs), MIN_VOTES):
        if qs is None:
            found = verify(db[i], db[j], mirrored=mirrored, a=i, b=j, hint=(ki, kj))
        else:
            # i is a query (target), j a reference: how the target relates to the reference.
            found = verify(db[j], qs[i], mirrored=mirrored, a=j, b=i, hint=(kj, ki))
        # A symmetric picture matches both as is and mirrored: the better fit says which.
        if found is not None and (found.a, found.b) not in best or (
            found is not None and found.inliers > best[found.a, found.b].inliers
        ):
            best[found.a, found.b] = found
    return [best[k] for k in sorted(best)]


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


def features_for(paths: Sequence[str], *, executor, workers: int = 1, orient: bool = True,
                 progress=None) -> list[Features | None]:
    """Features of each path, computed through an executor; None where they cannot be.

    A file that fails to decode, or whose worker died, is simply not
    partially matched: its errors are the hash stage's to report.

    >>> from dupfinder.executor import InlineExecutor
    >>> features_for(["/no/such.jpg"], executor=InlineExecutor())
    [None]
    """
    from functools import partial as bind

    from .hashing import batch_size
    from .models import Progress

    require_opencv()
    where = {p: i for i, p in enumerate(paths)}
    out: list[Features | None] = [None] * len(paths)
    size = batch_size(len(paths), workers)
    batches = [list(paths[s : s + size]) for s in range(0, len(paths), size)]
    done = 0
    for batch, result in executor.map_unordered(bind(features_batch, orient=orient), batches):
        if isinstance(result, list):  # else WorkerCrashed: no features for this batch
            for path, f in zip(batch, result):
                if isinstance(f, Features):
                    out[where[path]] = f
        done += len(batch)
        if progress is not None:
            progress(Progress("features", done, len(paths)))
    return out
