"""Decode one file once and compute every fingerprint asked of it.

This is the work a worker process does per file. It is kept apart from the
pipeline so that it can be pickled by name under the ``spawn`` start method
and called directly by ``dupfinder hash``.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from . import hashes
from .imaging import load_image
from .models import ScanError

__all__ = [
    "ALGORITHMS",
    "extra_hashes",
    "TRANSFORMS",
    "HashSpec",
    "Fingerprint",
    "fingerprint_file",
    "fingerprint_and_digest",
    "fingerprint_digest_and_features",
    "file_digest",
    "COMPAT_MODES",
]

# Files up to this size are read into memory once, digested and decoded from
# there; larger ones are digested in a stream and decoded from the file.
_READ_WHOLE = 64 * 1024 * 1024
_CHUNK = 1024 * 1024

COMPAT_MODES = ("imagehash",)
ALGORITHMS = (*hashes.ALGORITHMS, "pdq")
# The eight flips and turns, in the order of every ``*_dihedral`` function.
# "rot90" is a quarter turn counter-clockwise, as in Pillow.
TRANSFORMS = tuple(hashes.DIHEDRAL_TRANSPOSE)


@dataclass(frozen=True, slots=True)
class HashSpec:
    """What to compute for each file: algorithm, hash size and decode mode.

    Every field changes the answer, so a cache keys on all of them.

    >>> HashSpec().bits, HashSpec(hash_size=16).bits
    (64, 256)
    """

    algorithm: str = "phash"
    hash_size: int = 8
    compat: str | None = None
    orient: bool = True

    @property
    def bits(self) -> int:
        return 256 if self.algorithm == "pdq" else self.hash_size * self.hash_size

    @property
    def decode_mode(self) -> str:
        """How files are decoded, as the cache key names it."""
        if self.compat:
            return f"compat-{self.compat}"
        return "orient" if self.orient else "no-orient"

    @property
    def min_size(self) -> int:
        """Smallest decoded edge the hash needs: twice its resampling grid."""
        grid = {
            "ahash": self.hash_size,
            "dhash": self.hash_size + 1,
            "phash": self.hash_size * 4,
            "whash": self.hash_size * 8,
        }.get(self.algorithm, 64)
        # PDQ blurs with windows of side/128 before it decimates to 64x64:
        # 256 px keeps that blur meaningful.
        return 256 if self.algorithm == "pdq" else 2 * grid


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A hashed file: its fingerprint, its 8 flipped and turned variants, and its quality.

    ``variants`` is the hex of the hashes of the image under each of
    :data:`TRANSFORMS`, concatenated (the first is ``hash``). ``quality`` is
    PDQ's 0-100 detail score: blank and flat images score near 0. ``extras``
    holds the hex of the pHash of crops, small turns and regions (see
    :func:`extra_hashes`), for pHash only.
    """

    path: str
    hash: str
    width: int
    height: int
    variants: str = ""
    quality: int = 100
    extras: str = ""


def fingerprint_file(path: str, spec: HashSpec, *, data: bytes | None = None) -> Fingerprint | ScanError:
    """Decode ``path`` once and hash it; a bad file gives a ScanError.

    >>> import tempfile
    >>> from PIL import Image
    >>> p = tempfile.mktemp(suffix=".png")
    >>> Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 100).save(p)
    >>> fingerprint_file(p, HashSpec()).hash
    'c4001b0065008c00'
    >>> fingerprint_file(p + "x", HashSpec()).stage
    'open'
    """
    # --compat imagehash hashes exactly `imagehash.<algo>(Image.open(path))`:
    # no orientation, no draft, no mode handling, so hashes that ImageHash
    # users keep in a database stay comparable.
    decoded = load_image(
        path, min_size=spec.min_size, orient=spec.orient, grey=True, raw=spec.compat == "imagehash", data=data
    )
    return decoded if isinstance(decoded, ScanError) else fingerprint_decoded(path, spec, decoded)


def fingerprint_decoded(path: str, spec: HashSpec, decoded) -> Fingerprint | ScanError:
    """:func:`fingerprint_file`'s work after decoding: the hashes of a decoded image."""
    compat = spec.compat == "imagehash"
    image = decoded.image
    try:
        if spec.algorithm != "pdq" and image.mode != "L":
            # Every hash but PDQ starts with convert("L"): do it once, not
            # once per hash (the result is the same image).
            image = image.convert("L")
        variants, quality = _variants(image, spec)
    except (ValueError, MemoryError) as exc:
        return ScanError(path, "hash", str(exc) or type(exc).__name__)
    text = hashes.to_hex(variants)  # row after row, as to_hex of each joined
    extras = ""
    if spec.algorithm == "phash" and not compat:
        extras = hashes.to_hex(extra_hashes(image, hash_size=spec.hash_size))
    return Fingerprint(path, text[: len(text) // 8], decoded.width, decoded.height, text, quality, extras)


# Extra pHashes that make crops, small turns and local edits findable with the
# same threshold. Measured with bench/accuracy.py on ../shared/photos (142
# real photos, 2130 files, seed 1) at the default threshold: recall of 20%
# crops 0.44 -> 1.00, 4-degree turns 0.38 -> 1.00, watermarks 0.27 -> 0.97,
# pairwise F1 0.875 -> 0.999, with no false pair (precision 1.000).
CROP_SCALES = (0.95, 0.9, 0.85, 0.8, 0.75)  # centred crops, each side kept
SMALL_TURNS = (-4.0, -2.0, 2.0, 4.0)  # degrees, then cropped to drop the corners
# Halves (top, bottom, left, right), the centre, the four quarters, and
# thirds across and down: a watermark or a caption spoils a few of them, the
# others still match. (Adding two-thirds bands changed nothing measurable.)
REGIONS = (
    (0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0), (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0),
    (0.25, 0.25, 0.75, 0.75),
    (0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0),
    (0.0, 0.0, 1.0, 1 / 3), (0.0, 1 / 3, 1.0, 2 / 3), (0.0, 2 / 3, 1.0, 1.0),
    (0.0, 0.0, 1 / 3, 1.0), (1 / 3, 0.0, 2 / 3, 1.0), (2 / 3, 0.0, 1.0, 1.0),
)
N_CROPS = len(CROP_SCALES)
# Grey-level spread under which a region is too flat to vote.
FLAT_REGION_STD = 6.0
N_TURNS = len(SMALL_TURNS)
N_EXTRAS = N_CROPS + N_TURNS + len(REGIONS)


def _inner_scale(width: int, height: int, degrees: float) -> float:
    # The largest centred rectangle of the same shape inside the turned frame.
    a = math.radians(abs(degrees))
    return 1.0 / (math.cos(a) + max(width / height, height / width) * math.sin(a))


# The extra hashes are taken from a small copy of the image, at most this many
# pixels on its long side: every crop, turn and region is then a slice of it.
WORK_SIDE = 128


def _low_dct(pixels: np.ndarray, k: int) -> np.ndarray:
    h, w = pixels.shape
    return hashes._dct_basis(h, k) @ pixels @ hashes._dct_basis(w, k).T


def _span(lo: float, hi: float, n: int) -> tuple[int, int]:
    # The pixels [a, b) of an n-pixel side that a fraction lo..hi covers (at least one).
    a = round(lo * n)
    return a, max(round(hi * n), a + 1)


def _padded_bases(boxes, h: int, w: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    # For each box, the DCT basis of its rows (and columns), zero outside it:
    # V[p] @ pixels @ U[p] (U returned transposed) is the low DCT of box p,
    # so every box of one image takes two batched products in all.
    rows = np.zeros((len(boxes), k, h))
    cols = np.zeros((len(boxes), k, w))
    for p, (left, top, right, bottom) in enumerate(boxes):
        y0, y1 = _span(top, bottom, h)
        x0, x1 = _span(left, right, w)
        rows[p, :, y0:y1] = hashes._dct_basis(y1 - y0, k)
        cols[p, :, x0:x1] = hashes._dct_basis(x1 - x0, k)
    return rows, cols.transpose(0, 2, 1).copy()


@lru_cache(maxsize=16)
def _turn_operator(h: int, w: int):
    """The centred crops of an h x w image turned by each of SMALL_TURNS, as a gather.

    Output pixel r (the crops one after the other, row-major) is
    ``(pixels.flat[index[:, r]] * weights[:, r]).sum()``: its four bilinear
    neighbours and their weights, the same sampling as ``Image.rotate(degrees,
    resample=BILINEAR)`` cropped to the inner rectangle, without the rounding
    to 8 bits.

    Plain numpy, not a scipy.sparse matrix: the product takes 0.12 ms a file
    instead of 0.07 (a 128x96 copy), but importing scipy cost every process
    0.1 s. A first scan of 10^5 files pays 2.5 s more on 2 workers; every
    nightly re-scan that hashes a few hundred new files, and every small
    scan, 0.1 s less. (Turning a half-size copy instead took it to 0.05 ms
    but found fewer 3-4 degree turns: on bench/accuracy.py seed 2 the direct
    recall of rot4 fell from 0.972 to 0.930, of rot3 from 0.986 to 0.958.)
    """
    index, fx, fy, shapes = [], [], [], []
    for degrees in SMALL_TURNS:
        s = _inner_scale(w, h, degrees)
        y0, y1 = _span((1 - s) / 2, (1 + s) / 2, h)
        x0, x1 = _span((1 - s) / 2, (1 + s) / 2, w)
        # Pillow's rotate maps output pixel centres back into the input
        # about the image centre; bilinear weights from pixel centres.
        a = -math.radians(degrees)
        cos, sin = math.cos(a), math.sin(a)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dx, dy = xx + 0.5 - w / 2, yy + 0.5 - h / 2
        x = cos * dx + sin * dy + w / 2 - 0.5
        y = -sin * dx + cos * dy + h / 2 - 0.5
        ix = np.clip(np.floor(x).astype(np.intp), 0, w - 2)
        iy = np.clip(np.floor(y).astype(np.intp), 0, h - 2)
        index.append((iy * w + ix).ravel())
        fx.append(np.clip(x - ix, 0.0, 1.0).ravel())
        fy.append(np.clip(y - iy, 0.0, 1.0).ravel())
        shapes.append((y1 - y0, x1 - x0))
    index, fx, fy = np.concatenate(index), np.concatenate(fx), np.concatenate(fy)
    # (4, n), not (n, 4): summing four rows is fast, four columns is not.
    index = np.stack([index, index + 1, index + w, index + w + 1])
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    # Not marked read-only: np.take was 15x slower with a read-only index
    # (numpy 2.4, measured).
    return index, weights, tuple(shapes)


def _turned(pixels: np.ndarray) -> np.ndarray:
    """The inner crops of every small turn of ``pixels``, one after the other (flat)."""
    index, weights, _ = _turn_operator(*pixels.shape)
    taken = np.take(pixels.ravel(), index)
    taken *= weights
    return taken.sum(axis=0)


@lru_cache(maxsize=32)
def _extra_bases(h: int, w: int, k: int):
    """Cached per working size: the padded bases of the crops and regions.

    The column bases come once per distinct column span (12 for 20 boxes),
    with the index of each box's span: ``pixels @ span_cols`` is then the
    smaller of the two products.
    """
    centred = [((1 - s) / 2, (1 - s) / 2, (1 + s) / 2, (1 + s) / 2) for s in CROP_SCALES]
    rows, cols = _padded_bases(centred + list(REGIONS), h, w, k)
    span_cols, span_of = np.unique(cols.reshape(len(cols), -1), axis=0, return_inverse=True)
    span_cols = span_cols.reshape(-1, w, k)
    span_of = span_of.ravel()
    # Pixels per region, to tell flat regions from their sums (row 0 of every
    # basis is all ones, so the DC coefficient of a box is its pixel sum).
    counts = np.array(
        [np.ptp(_span(b[1], b[3], h)) * np.ptp(_span(b[0], b[2], w)) for b in REGIONS], dtype=np.float64
    )
    out = (rows, cols, span_cols, span_of, counts)
    for a in out:
        a.flags.writeable = False
    return out


def _turn_dcts(grey, pixels: np.ndarray, k: int) -> list[np.ndarray]:
    # The low DCT of the inner crop of each small turn of the working copy.
    h, w = pixels.shape
    if h < 2 or w < 2:  # no bilinear neighbours: let Pillow turn it
        crops = []
        for degrees in SMALL_TURNS:
            s = _inner_scale(w, h, degrees)
            turned = np.asarray(grey.rotate(degrees, resample=Image.Resampling.BILINEAR), dtype=np.float64)
            (y0, y1), (x0, x1) = _span((1 - s) / 2, (1 + s) / 2, h), _span((1 - s) / 2, (1 + s) / 2, w)
            crops.append(turned[y0:y1, x0:x1])
    else:
        flat = _turned(pixels)
        crops, start = [], 0
        for ch, cw in _turn_operator(h, w)[2]:
            crops.append(flat[start : start + ch * cw].reshape(ch, cw))
            start += ch * cw
    return [_low_dct(c, k) for c in crops]


def extra_hashes(image, *, hash_size: int = 8) -> np.ndarray:
    """pHash-like hashes of centred crops, small turns and regions of an image.

    Rows: one per scale of ``CROP_SCALES``, one per angle of ``SMALL_TURNS``,
    one per box of ``REGIONS``. Each takes the low ``hash_size`` x
    ``hash_size`` DCT frequencies of that part of a copy of the image at most
    ``WORK_SIDE`` pixels long, straight from matrix products, and sets the
    bits above their median, as pHash does: they are compared with other
    files' pHashes. Measured: 0.3 ms a file where resizing every part to
    32x32 through Pillow took 9 (camera JPEGs: 17). The crops and regions
    share two batched products (see :func:`_extra_bases`); the turns are one
    bilinear gather (see :func:`_turn_operator`). Crops are hashed in one
    orientation only: a centred crop of a flipped picture is the flipped crop,
    so matching them against the other file's 8 orientations covers both.

    >>> from PIL import Image
    >>> extra_hashes(Image.effect_mandelbrot((160, 120), (-2, -1.5, 1, 1.5), 100)).shape
    (24, 1)
    """
    k = hash_size
    grey = image if image.mode == "L" else image.convert("L")
    if max(grey.size) > WORK_SIDE:
        scale = WORK_SIDE / max(grey.size)
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.BOX)
    w, h = grey.size
    rows, cols, span_cols, span_of, counts = _extra_bases(h, w, k)
    pixels = np.asarray(grey, dtype=np.float64)
    # Crops and regions: all from the one copy, in two batched products. Each
    # product in a batch is small, which keeps OpenBLAS on one thread: one
    # (h, w) @ (w, 12 * k) product is big enough for it to start its threads,
    # and that cost 10x more than the arithmetic on a loaded machine.
    still = np.matmul(rows, np.matmul(pixels, span_cols)[span_of])
    turns = np.stack(_turn_dcts(grey, pixels, k))
    blocks = np.concatenate((still[:N_CROPS], turns, still[N_CROPS:]))
    out = hashes._above_row_medians(blocks.reshape(len(blocks), -1))
    # A flat region (sky, a wall) hashes to noise that matches other flat
    # regions; such a region is marked 0, which no pHash can be (half its
    # bits are set), and never votes. Its spread comes from the sums of its
    # pixels (the DC coefficient) and of their squares.
    region_rows = rows[N_CROPS:, 0]
    sums = still[N_CROPS:, 0, 0]
    squares = ((region_rows @ (pixels * pixels)) * cols[N_CROPS:, :, 0]).sum(axis=1)
    variance = squares / counts - (sums / counts) ** 2
    out[N_CROPS + N_TURNS :][variance < FLAT_REGION_STD**2] = 0
    return out


def _variants(image, spec: HashSpec) -> tuple[np.ndarray, int]:
    """The hash of the image under each of the 8 flips and turns, and its quality."""
    from .pdq import gradient_quality, pdq_dihedral

    if spec.algorithm == "pdq":
        words, quality, _ = pdq_dihedral(image)
        return words, quality
    if spec.algorithm == "phash":
        # A flip or a quarter turn only changes signs or transposes the DCT:
        # the eight variants cost one DCT.
        # --compat imagehash promises ImageHash's bits even on tied images.
        words, _ = hashes.phash_dihedral(image, hash_size=spec.hash_size, exact=spec.compat == "imagehash")
    else:
        identity = hashes.compute(image, spec.algorithm, hash_size=spec.hash_size)
        words = np.stack(
            [identity]
            + [
                hashes.compute(image.transpose(t), spec.algorithm, hash_size=spec.hash_size)
                for t in list(hashes.DIHEDRAL_TRANSPOSE.values())[1:]
            ]
        )
    return words, gradient_quality(image)



def _digest_stream(f) -> bytes:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.digest()[:16]


def file_digest(path: str) -> bytes | ScanError:
    """The first 16 bytes of the SHA-256 of a file's content (1 GB/s here).

    >>> import tempfile
    >>> p = tempfile.mktemp()
    >>> _ = open(p, "wb").write(b"abc")
    >>> file_digest(p).hex()
    'ba7816bf8f01cfea414140de5dae2223'
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return ScanError(path, "open", "not a regular file")
        with open(path, "rb") as f:
            return _digest_stream(f)
    except FileNotFoundError:
        return ScanError(path, "open", "file vanished before it could be read")
    except OSError as exc:
        return ScanError(path, "open", exc.strerror or str(exc))


def fingerprint_and_digest(path: str, spec: HashSpec) -> tuple[bytes | None, Fingerprint | ScanError]:
    """Read a file once: its content digest and its fingerprint (or error).

    The digest is None only when the bytes could not be read at all; a file
    that reads but does not decode has a digest, so its failure can be cached.
    """
    digest, data, failed = _read(path)
    return digest, failed or fingerprint_file(path, spec, data=data)


def fingerprint_digest_and_features(path: str, spec: HashSpec) -> tuple:
    """:func:`fingerprint_and_digest`, and the file's local features (``--partial``) when one decode serves both.

    Returns ``(digest, outcome, features)``. A JPEG of 2048 px or more on its
    short side drafts to 1/8 for the hashes and for the features alike, and a
    PNG is decoded whole for both: the features then come from that decode,
    the very ones :func:`dupfinder.partial_features.file_features` gives
    (camera photos: one decode of ~9 ms saved a file). Otherwise, or if they
    fail, ``features`` is None and the features pass computes them.
    """
    from .partial_features import FEATURE_SIDE, image_features, require_opencv

    digest, data, failed = _read(path)
    if failed:
        return digest, failed, None
    decoded = load_image(path, min_size=spec.min_size, orient=spec.orient, grey=True, data=data,
                         also=FEATURE_SIDE // 2)
    if isinstance(decoded, ScanError):
        return digest, decoded, None
    outcome = fingerprint_decoded(path, spec, decoded)
    features = None
    if decoded.also is not None:
        try:
            features = image_features(decoded.also, path=path, width=decoded.width, height=decoded.height)
        except (ValueError, MemoryError, require_opencv().error):
            features = None  # the features pass tries again, and reports it
    return digest, outcome, features


def _read(path: str) -> tuple[bytes | None, bytes | None, ScanError | None]:
    """``(digest, data, error)``: the bytes (None past _READ_WHOLE, streamed) and their digest."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None, None, ScanError(path, "open", "not a regular file")
        with open(path, "rb") as f:
            if st.st_size <= _READ_WHOLE:
                data = f.read()
                digest = hashlib.sha256(data).digest()[:16]
            else:
                data = None
                digest = _digest_stream(f)
    except FileNotFoundError:
        return None, None, ScanError(path, "open", "file vanished before it could be read")
    except OSError as exc:
        return None, None, ScanError(path, "open", exc.strerror or str(exc))
    return digest, data, None
