"""Verification of partial copies: one similarity, enough inliers, a sane region, agreeing grey levels.

Given two files' features and the matches that voted for them, fit a
similarity (scale, a small turn, offset) by RANSAC; when a few matches
agree, look for more where it says they must be. Keep the pair only with
:data:`MIN_INLIERS` inliers spread over the matched region, a scale in
:data:`SCALE_RANGE`, a region that lies inside one frame and covers
:data:`MIN_AREA` to :data:`MAX_AREA` of it, and grey levels that agree over
it (:data:`MIN_CORRELATION`, :data:`MIN_DETAIL_CORRELATION`), so that two
photos of the same kind of sky or building do not pair.
"""

from __future__ import annotations

import math

import numpy as np

from .partial_features import Features, PartialMatch, require_opencv
from .partial_votes import popcount_rows

__all__ = ["MIN_INLIERS", "SCALE_RANGE", "MIN_CORRELATION", "MIN_DETAIL_CORRELATION", "verify", "best_matches"]

# When the votes fit a similarity with at least GUIDE_MIN (but fewer than
# MIN_INLIERS) inliers, more matches are sought within GUIDE_PIXELS of where
# the similarity puts each keypoint.
GUIDE_MIN = 3
GUIDE_PIXELS = 12.0
# RANSAC samples for the voting matches. Two points fix a similarity, so
# 200 samples find a model that a fifth of the matches share (p = 0.9997);
# pairs with no model, most candidates, stop there instead of at 2000.
HINT_TRIES = 200
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
# Grey levels of the two files over the matched region (on the thumbnails)
# must correlate at least this much, and so must their detail (the grey
# levels less a blur of DETAIL_SIGMA thumbnail pixels). Measured with
# bench/partial.py on the shared photos (599 files), the geometry made
# lenient (6 inliers, no spread test) to let false pairs through: false
# pairs reached 0.53 and 0.48; 99% of the true ones are above 0.82 and 0.58.
MIN_CORRELATION = 0.75
MIN_DETAIL_CORRELATION = 0.5
DETAIL_SIGMA = 4.0


def _matches(cv2, da: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours within 64 bits (brute force: ~5 ms for 500 x 500 here)."""
    found = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(da, db)
    pairs = np.array([(m.queryIdx, m.trainIdx) for m in found if m.distance <= 64], dtype=np.int64)
    pairs = pairs.reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _guided(fa: Features, fb: Features, pb_all: np.ndarray, matrix: np.ndarray, *, mirrored: bool):
    """Matches within :data:`GUIDE_PIXELS` of where ``matrix`` puts a's points: the closest descriptor of 4."""
    predicted = fa.points.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    near_a, near_b = _near(predicted, pb_all, GUIDE_PIXELS, 4)
    if not len(near_a):
        return near_a, near_b
    db = fb.mirrored if mirrored else fb.descriptors
    bits = popcount_rows(fa.descriptors[near_a] ^ db[near_b])
    close = bits <= 64
    near_a, near_b, bits = near_a[close], near_b[close], bits[close]
    order = np.lexsort((bits, near_a))
    first = np.r_[True, near_a[order][1:] != near_a[order][:-1]]
    return near_a[order][first], near_b[order][first]


_GRID_WIDTH = 1 << 20  # cells per row of _near's grid, far more than a frame has
_NEIGHBOURS = (np.arange(-1, 2)[:, None] * _GRID_WIDTH + np.arange(-1, 2)[None, :]).ravel()  # 3 x 3 cells' keys


def _near(points: np.ndarray, targets: np.ndarray, radius: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (point, target) with the target among the point's ``k`` nearest closer than ``radius``.

    A grid of ``radius`` cells, looked up in the 3 x 3 cells around each point
    (a k-d tree needs scipy.spatial, a 1 s import in a scan).

    >>> _near(np.array([[0.0, 0.0], [50.0, 50.0]]), np.array([[1.0, 1.0], [3.0, 0.0], [40.0, 40.0]]), 5.0, 1)
    (array([0]), array([0]))
    """
    empty = np.zeros(0, np.int64)
    if not len(points) or not len(targets):
        return empty, empty
    width = _GRID_WIDTH
    tx, ty = (np.floor(targets / radius).astype(np.int64) + 1).T
    tkey = ty * width + tx
    order = np.argsort(tkey, kind="stable")
    sorted_keys = tkey[order]
    px, py = (np.floor(points / radius).astype(np.int64) + 1).T
    # Each point's 9 cells, all looked up at once (per-call costs dominate at this size).
    key = ((py * width + px)[:, None] + _NEIGHBOURS).ravel()
    lo = np.searchsorted(sorted_keys, key, side="left")
    count = np.searchsorted(sorted_keys, key, side="right") - lo
    p = np.repeat(np.arange(len(key)) // 9, count)
    offset = np.arange(len(p)) - np.repeat(np.cumsum(count) - count, count)
    t = order[np.repeat(lo, count) + offset]
    d2 = ((points[p] - targets[t]) ** 2).sum(axis=1)
    keep = d2 < radius * radius
    p, t, d2 = p[keep], t[keep], d2[keep]
    by = np.lexsort((t, d2, p))  # per point, nearest first
    p, t = p[by], t[by]
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]]) if len(p) else empty
    rank = np.arange(len(p)) - np.repeat(starts, np.diff(np.r_[starts, len(p)]))
    return p[rank < k], t[rank < k]


def _fit(cv2, pa: np.ndarray, pb: np.ndarray, *, tries: int = 2000):
    """A similarity from a's points to b's by RANSAC: (matrix, inlier mask), or (None, None)."""
    if len(pa) < 2:
        return None, None
    matrix, mask = cv2.estimateAffinePartial2D(
        pa, pb, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS, maxIters=tries, confidence=0.999
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
    >>> from dupfinder.partial_features import image_features
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
    matrix, inliers = _fit(cv2, fa.points[ia].astype(np.float64), pb_all[ib], tries=HINT_TRIES)
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
    overall, detail = _correlation(fa, fb, matrix, mirrored=mirrored)
    if overall < MIN_CORRELATION or detail < MIN_DETAIL_CORRELATION:
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


def _correlation(fa: Features, fb: Features, matrix: np.ndarray, *, mirrored: bool) -> tuple[float, float]:
    """Correlations of a's and b's grey levels over the region both show: as they are, and of their detail.

    Computed on the thumbnails, a warped onto b. The detail is what is left
    after subtracting a blur of :data:`DETAIL_SIGMA` thumbnail pixels: two
    different pictures on flat canvases correlated at 0.85 through their
    dark blocks on bright margins alone, and at 0.3 in their detail.
    """
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
    size = (tb.shape[1], tb.shape[0])
    warped = cv2.warpAffine(ta, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    inside = cv2.warpAffine(np.ones_like(ta), m, size, flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    # Shrink the overlap by two pixels: its edge mixes in the border value.
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0.5
    if inside.sum() < 64:
        return 0.0, 0.0
    weight = inside.astype(np.float32)
    spread = np.maximum(cv2.GaussianBlur(weight, (0, 0), DETAIL_SIGMA), 1e-3)
    detail_a = warped - cv2.GaussianBlur(warped * weight, (0, 0), DETAIL_SIGMA) / spread
    detail_b = tb - cv2.GaussianBlur(tb * weight, (0, 0), DETAIL_SIGMA) / spread
    return _pearson(warped[inside], tb[inside]), _pearson(detail_a[inside], detail_b[inside])


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / denominator if denominator else 0.0


def best_matches(candidates, found) -> list[PartialMatch]:
    """Of the verified candidates (most votes first), each pair of files' first match, sorted by (a, b).

    A symmetric picture can verify both as is and mirrored: the way with
    more votes (descriptors that agree) is the way it was copied. Not the
    one with more inliers: the search around a fitted model finds more
    points on the wrong side of a symmetric picture too (bench seed 1: a
    frame with 55 votes as is and 4 mirrored had 55 and 68 inliers).
    (partial_relations keeps the first verified, most votes first: the same.)

    >>> m = PartialMatch(0, 1, "crop", (0, 0, 9, 9), 30, False)
    >>> best_matches([(0, 1, True, [1] * 9, []), (0, 1, False, [1] * 5, [])], [m, None]) == [m]
    True
    """
    best: dict = {}
    for (_, _, _, ki, _), match in zip(candidates, found):
        if match is not None and ((match.a, match.b) not in best or len(ki) > best[match.a, match.b][0]):
            best[match.a, match.b] = (len(ki), match)
    return [best[k][1] for k in sorted(best)]
