"""Local features for partial copies: ORB keypoints per file, as compact arrays.

The first step of :mod:`dupfinder.partial`, run in the worker processes:
decode a file, scale it to :data:`FEATURE_SIDE` pixels on its long side,
find up to :data:`N_FEATURES` ORB keypoints spread over the frame, and keep
their 256-bit descriptors, the descriptors of the mirrored image at the
mirrored points, and a small grey thumbnail (about 50 KB a file).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

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
    "features_batch",
    "features_for",
    "features_key",
    "or_empty",
    "partial_error",
]

INSTALL_HINT = "partial matching needs OpenCV: pip install 'dupfinder[partial]'"

# Features are computed on the image scaled to this long side. 512 keeps a
# quarter of a 2x2 collage at 256 px, where ORB still finds ~100 keypoints.
FEATURE_SIDE = 512
N_FEATURES = 500
# ORB ranks keypoints by corner strength over the whole image, so the text
# of a screenshot or the busiest photo of a collage takes them all (a
# picture in a collage kept 8-40 of 500). We ask ORB for OVERSAMPLE times
# more and pick N_FEATURES of them in two halves (:func:`_spread`):
#
# * BASE_SHARE of them from the pool ORB would keep if asked for BASE_POOL
#   (the strongest of each pyramid level, its quota by area), the best of
#   each GRID_CELL cell in turn: the picture's own strong corners, at every
#   scale;
# * the rest from all candidates, the best of each FINE_CELL cell in turn:
#   a quiet quarter of a collage (a 256 px tile at 512 px) gets its share.
#
# Each half alone falls short on the bench (seed 1, 599 files): the first
# alone (the former rule: 1500 asked, 64 px cells) found 86-90% of the
# collages directly; the second alone 90-92%, but took the strong corners
# of the originals away (canvases 0.98 -> 0.92); both: collages 94-96%,
# the other kinds 94-98%, for ~1 ms more per image.
OVERSAMPLE = 10
BASE_POOL = 1500
BASE_SHARE = 0.5
GRID_CELL = 64  # feature pixels
FINE_CELL = 32
# FAST's corner threshold (OpenCV's default is 20). Below it dark and hazy
# pictures lose their keypoints: with corners ranked by FAST's score (see
# image_features), 15 found what 10 did on the bench (seeds 1-3: direct
# misses 17/11/5 against 17/9/5) for 0.45 ms less per image; 20 missed
# 17/17/8.
FAST_THRESHOLD = 15
# ORB's pyramid: 8 levels 1.2 apart match scales up to 3.6 times apart.
LEVELS = 8
LEVEL_SCALE = 1.2
THUMB_SIDE = 128
# Bump when the features a file gets change in a way the settings in
# features_key do not name, so that cached ones stop matching.
FEATURES_VERSION = 1


def require_opencv():
    """Import OpenCV, or raise UsageError saying how to install it.

    >>> require_opencv().__name__
    'cv2'
    """
    try:
        import cv2
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    if cv2.getNumThreads() != 1:
        # One OpenCV thread per process: the worker pool already keeps every
        # core busy (OpenCV's threads on top made the features 2x slower
        # here), and a process forked while OpenCV's thread pool is up
        # deadlocks in its first OpenCV call. Set in the calling process
        # before any worker is forked, it is inherited, never reset.
        cv2.setNumThreads(1)
    return cv2


def features_key(*, orient: bool = True) -> str:
    """What cached features are stored under: every setting that changes them, and OpenCV's version.

    >>> features_key().startswith("orb:v")
    True
    """
    cv2 = require_opencv()
    return (f"orb:v{FEATURES_VERSION}:side{FEATURE_SIDE}:n{N_FEATURES}x{OVERSAMPLE}:pool{BASE_POOL}/{BASE_SHARE}:"
            f"cells{GRID_CELL}/{FINE_CELL}:fast{FAST_THRESHOLD}:levels{LEVELS}/{LEVEL_SCALE}:thumb{THUMB_SIDE}:"
            f"{'oriented' if orient else 'as-stored'}:opencv{cv2.__version__}")


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

    def to_bytes(self) -> bytes:
        """The features without the path, as the cache stores them (about 50 KB).

        >>> from PIL import Image
        >>> f = image_features(Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100))
        >>> g = Features.from_bytes("a.png", f.to_bytes())
        >>> np.array_equal(g.descriptors, f.descriptors), g.thumb.shape == f.thumb.shape, g.path
        (True, True, 'a.png')
        """
        head = _HEAD.pack(_MAGIC, self.width, self.height, self.scale, len(self.points), *self.thumb.shape)
        arrays = (
            np.ascontiguousarray(self.points, np.float32), np.ascontiguousarray(self.descriptors, np.uint8),
            np.ascontiguousarray(self.mirrored, np.uint8), np.ascontiguousarray(self.thumb, np.uint8),
        )
        return head + b"".join(a.tobytes() for a in arrays)

    @classmethod
    def from_bytes(cls, path: str, data: bytes) -> Features:
        """Features stored by :meth:`to_bytes`; ValueError if ``data`` is not such a record."""
        if len(data) < _HEAD.size:
            raise ValueError("not a stored Features record (too short)")
        magic, width, height, scale, n, th, tw = _HEAD.unpack_from(data)
        sizes = (8 * n, 32 * n, 32 * n, th * tw)
        if magic != _MAGIC or len(data) != _HEAD.size + sum(sizes):
            raise ValueError("not a stored Features record (bad header or length)")
        buf = memoryview(data)[_HEAD.size:]
        points, descriptors, mirrored, thumb = (
            np.frombuffer(buf[start : start + size], dtype)
            for start, size, dtype in zip(np.cumsum((0, *sizes[:-1])).tolist(), sizes,
                                          (np.float32, np.uint8, np.uint8, np.uint8))
        )
        return cls(path, width, height, scale, points.reshape(n, 2), descriptors.reshape(n, 32),
                   mirrored.reshape(n, 32), thumb.reshape(th, tw))

    @property
    def size(self) -> tuple[float, float]:
        """The feature image's width and height."""
        return self.width * self.scale, self.height * self.scale


# The record to_bytes writes: magic, width, height, scale, keypoints, thumb height and width.
_MAGIC = b"DFF1"
_HEAD = struct.Struct("<4sIIdIII")


def or_empty(features: Sequence[Features | None]) -> list[Features]:
    """The features, with a keypoint-less stand-in for each file that has none (None).

    >>> [len(f) for f in or_empty([None])]
    [0]
    """
    empty = Features("", 1, 1, 1.0, np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8),
                     np.zeros((0, 32), np.uint8), np.zeros((1, 1), np.uint8))
    return [f if f is not None else empty for f in features]


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
    # Ranked by FAST's corner score, not Harris's: measured with bench/partial.py
    # (seeds 1-3, 599 files each), direct misses 20/18/22 -> 17/9/5 with no
    # false pair, and 0.3 ms less per image (no Harris response to compute).
    orb = cv2.ORB_create(nfeatures=int(N_FEATURES * OVERSAMPLE), fastThreshold=FAST_THRESHOLD, nlevels=LEVELS,
                         scaleFactor=LEVEL_SCALE, scoreType=cv2.ORB_FAST_SCORE)
    # Detect all, describe only the chosen: 5000 candidates cost no descriptors.
    keypoints = orb.detect(pixels, None)
    if len(keypoints) > N_FEATURES:
        keypoints = [keypoints[i] for i in _spread(keypoints, N_FEATURES)]
    descriptors = None
    if keypoints:
        keypoints, descriptors = orb.compute(pixels, keypoints)
    if descriptors is None or not keypoints:
        empty = np.zeros((0, 32), np.uint8)
        return Features(path, width, height, grey.width / width, np.zeros((0, 2), np.float32),
                        empty, empty, thumb)
    # Mirrored descriptors at the mirrored points and angles: FAST, Harris and
    # the intensity centroid are symmetric, so these are the keypoints ORB
    # would find on the mirrored image (the same descriptors, measured), for
    # 1.7 ms instead of 2.7 ms.
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
    """Indices of ``n`` keypoints spread over the frame: half from ORB's usual pool, half finer (see OVERSAMPLE)."""
    cv2 = require_opencv()
    count = len(keypoints)
    pts = cv2.KeyPoint_convert(keypoints).astype(np.float64).reshape(-1, 2)
    # map + fromiter: a quarter of the time of a list of (response, octave) tuples.
    response = np.fromiter(map(_RESPONSE, keypoints), np.float64, count)
    octave = np.fromiter(map(_OCTAVE, keypoints), np.int64, count)
    # Every sort below is by an integer key whose low part is this rank:
    # strongest first, ties by index. (The lexsorts this replaced broke the
    # last sort's ties by cell first: with FAST's integer scores, 1-2 of 500
    # picks differ on a quarter of the images; bench figures are this code's.)
    strength = np.empty(count, np.int64)
    strength[np.argsort(-response, kind="stable")] = np.arange(count)
    # The pool ORB keeps when asked for BASE_POOL keypoints: the strongest of each level, its share by area.
    f = 1.0 / LEVEL_SCALE
    quota = BASE_POOL * (1 - f) / (1 - f**LEVELS) * f ** np.arange(LEVELS)
    level = np.clip(octave, 0, LEVELS - 1)
    rank = _rank_within(level, strength, count)
    base = np.flatnonzero(rank < np.round(quota)[level])
    first = base[_round_robin(pts[base], strength[base], count, GRID_CELL, int(n * BASE_SHARE))]
    taken = np.zeros(count, bool)
    taken[first] = True
    rest = np.flatnonzero(~taken)
    more = rest[_round_robin(pts[rest], strength[rest], count, FINE_CELL, n - len(first))]
    return np.sort(np.r_[first, more])


_RESPONSE = attrgetter("response")
_OCTAVE = attrgetter("octave")


def _rank_within(group: np.ndarray, strength: np.ndarray, count: int) -> np.ndarray:
    """Each point's place among the points of its group, strongest first (0 for the strongest)."""
    order = np.argsort(group * count + strength)
    sorted_groups = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return rank


def _round_robin(pts: np.ndarray, strength: np.ndarray, count: int, side: int, n: int) -> np.ndarray:
    """Indices of ``n`` points: the strongest of each grid cell, then the second, and so on.

    ``strength`` ranks the points (0 the strongest) among ``count`` in all.
    """
    cell = (pts[:, 1] // side).astype(np.int64) * 4096 + (pts[:, 0] // side).astype(np.int64)
    rank = _rank_within(cell, strength, count)
    return np.argsort(rank * count + strength)[:max(n, 0)]


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
    cv2 = require_opencv()
    try:
        return image_features(decoded.image, path=path, width=decoded.width, height=decoded.height)
    except (ValueError, MemoryError, cv2.error) as exc:
        return ScanError(path, "hash", str(exc) or type(exc).__name__)


def features_batch(paths: Sequence[str], orient: bool = True) -> list:
    """:func:`file_features` of each path: the work one worker does per batch."""
    return [file_features(p, orient=orient) for p in paths]


def features_for(paths: Sequence[str], *, executor, workers: int = 1, orient: bool = True,
                 progress=None) -> list[Features | ScanError | None]:
    """Features of each path, computed through an executor; a ScanError (stage ``partial``) where they cannot be.

    The files were hashed a moment ago, so an error here is news: the file
    vanished or changed since, or its worker process died (with others in
    flight, each is tried again alone). Such a file is not partially matched.

    >>> from dupfinder.executor import InlineExecutor
    >>> features_for(["/no/such.jpg"], executor=InlineExecutor())[0].message
    'local features (--partial): file vanished before it could be read'
    """
    from functools import partial as bind

    from .executor import WorkerCrashed, map_retrying
    from .hashing import in_batches
    from .models import Progress

    require_opencv()
    unique = list(dict.fromkeys(paths))  # a path listed twice is read once, and answers at both places
    found: dict[str, Features | ScanError] = {}
    done = 0
    for batch, result in map_retrying(executor, bind(features_batch, orient=orient), in_batches(unique, workers)):
        if isinstance(result, WorkerCrashed):
            found[batch[0]] = ScanError(batch[0], "partial", CRASHED)
        else:
            for path, f in zip(batch, result):
                found[path] = f if isinstance(f, Features) else partial_error(f)
        done += len(batch)
        if progress is not None:
            progress(Progress("features", done, len(unique)))
    return [found.get(p) for p in paths]


CRASHED = "the worker process died on this file's local features (--partial): it is not partially matched"


def partial_error(error: ScanError) -> ScanError:
    """The error of a file that could not be read for its local features, at stage ``partial``.

    >>> partial_error(ScanError("a.jpg", "decode", "broken data")).message
    'local features (--partial): broken data'
    """
    return ScanError(error.path, "partial", f"local features (--partial): {error.message}")
