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
    compat = spec.compat == "imagehash"
    decoded = load_image(
        path, min_size=spec.min_size, orient=spec.orient, grey=True, raw=compat, data=data
    )
    if isinstance(decoded, ScanError):
        return decoded
    try:
        variants, quality = _variants(decoded.image, spec)
    except (ValueError, MemoryError) as exc:
        return ScanError(path, "hash", str(exc) or type(exc).__name__)
    text = "".join(hashes.to_hex(v) for v in variants)
    extras = ""
    if spec.algorithm == "phash" and not compat:
        extras = "".join(hashes.to_hex(v) for v in extra_hashes(decoded.image, hash_size=spec.hash_size))
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


@lru_cache(maxsize=512)
def _dct_basis(n: int, k: int) -> np.ndarray:
    # The first k DCT-II basis functions sampled at n points: the low
    # frequencies of an n-pixel line, without resizing it to 32 pixels first.
    x = (2 * np.arange(n) + 1) * np.pi / (2 * n)
    return np.cos(np.outer(np.arange(k), x))


def _low_dct(pixels: np.ndarray, k: int) -> np.ndarray:
    h, w = pixels.shape
    return _dct_basis(h, k) @ pixels @ _dct_basis(w, k).T


def extra_hashes(image, *, hash_size: int = 8) -> np.ndarray:
    """pHash-like hashes of centred crops, small turns and regions of an image.

    Rows: one per scale of ``CROP_SCALES``, one per angle of ``SMALL_TURNS``,
    one per box of ``REGIONS``. Each takes the low ``hash_size`` x
    ``hash_size`` DCT frequencies of that part of a copy of the image at most
    ``WORK_SIDE`` pixels long, straight from matrix products, and sets the
    bits above their median, as pHash does: they are compared with other
    files' pHashes. Measured: 0.4 ms a file where resizing every part to
    32x32 through Pillow took 9 (camera JPEGs: 17). Crops are hashed in one
    orientation only: a centred crop of a flipped picture is the flipped
    crop, so matching them against the other file's 8 orientations covers both.

    >>> from PIL import Image
    >>> extra_hashes(Image.effect_mandelbrot((160, 120), (-2, -1.5, 1, 1.5), 100)).shape
    (24, 1)
    """
    grey = image if image.mode == "L" else image.convert("L")
    if max(grey.size) > WORK_SIDE:
        k = WORK_SIDE / max(grey.size)
        size = (max(1, round(grey.width * k)), max(1, round(grey.height * k)))
        grey = grey.resize(size, Image.Resampling.BOX)
    w, h = grey.size
    pixels = np.asarray(grey, dtype=np.float64)

    def part(arr, left, top, right, bottom):
        height, width = arr.shape
        y0, y1 = round(top * height), max(round(bottom * height), round(top * height) + 1)
        x0, x1 = round(left * width), max(round(right * width), round(left * width) + 1)
        return _low_dct(arr[y0:y1, x0:x1], hash_size)

    blocks = [part(pixels, (1 - s) / 2, (1 - s) / 2, (1 + s) / 2, (1 + s) / 2) for s in CROP_SCALES]
    for degrees in SMALL_TURNS:
        s = _inner_scale(w, h, degrees)
        turned = np.asarray(grey.rotate(degrees, resample=Image.Resampling.BILINEAR), dtype=np.float64)
        blocks.append(part(turned, (1 - s) / 2, (1 - s) / 2, (1 + s) / 2, (1 + s) / 2))
    blocks.extend(part(pixels, *box) for box in REGIONS)
    flat = np.stack(blocks).reshape(len(blocks), -1)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    out = np.packbits(bits, axis=1).view(">u8").astype(np.uint64)
    # A flat region (sky, a wall) hashes to noise that matches other flat
    # regions; such a region is marked 0, which no pHash can be (half its
    # bits are set), and never votes.
    first_region = len(CROP_SCALES) + len(SMALL_TURNS)
    for r, box in enumerate(REGIONS):
        y0, y1 = round(box[1] * h), max(round(box[3] * h), round(box[1] * h) + 1)
        x0, x1 = round(box[0] * w), max(round(box[2] * w), round(box[0] * w) + 1)
        if float(pixels[y0:y1, x0:x1].std()) < FLAT_REGION_STD:
            out[first_region + r] = 0
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
        words, _ = hashes.phash_dihedral(image, hash_size=spec.hash_size)
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
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None, ScanError(path, "open", "not a regular file")
        with open(path, "rb") as f:
            if st.st_size <= _READ_WHOLE:
                data = f.read()
                digest = hashlib.sha256(data).digest()[:16]
            else:
                data = None
                digest = _digest_stream(f)
    except FileNotFoundError:
        return None, ScanError(path, "open", "file vanished before it could be read")
    except OSError as exc:
        return None, ScanError(path, "open", exc.strerror or str(exc))
    return digest, fingerprint_file(path, spec, data=data)
