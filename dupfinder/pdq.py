"""PDQ, Facebook's 256-bit perceptual hash with its quality score, in numpy.

This is the published algorithm (ThreatExchange ``hashing/pdq``; the paper
"The TMK+PDQF and PDQ hashing algorithms"): float luminance
0.299 R + 0.587 G + 0.114 B; two X-then-Y passes of Jarosz box filters (a
tent filter) with windows of ``ceil(side / 128)``; decimation to 64x64; the
16x16 block of DCT frequencies 1..16 (no DC) from the reference's DCT matrix;
one bit per coefficient, set when it is strictly greater than the Torben
median (the 128th smallest of the 256). The quality is the reference's
gradient heuristic on the 64x64 image, an integer 0-100.

The blur and the decimation are linear: per axis they make one banded
64 x side matrix, applied by gathering its band, and the DCT is two small
matrix products. Like the reference Python hasher, images larger than 512 px
on a side are first shrunk to fit 512x512 (bicubic, as ``Image.thumbnail``);
the reference C++ tool squashes them to 512x512 and ``pdqhash`` hashes at
full size (``max_side=None`` here). We shrink the float luminance rather
than the RGB image: faster (640x480: 1.0 ms against 2.8 ms) and no rounding
to 8 bits. Sides under 5 px hash to zeros with quality 0, as in the
reference. EXIF orientation is the caller's business (see ``imaging``).

Bit order: the reference sets bit ``k = 16 * i + j`` for coefficient (row
frequency i, column frequency j) in ``uint16`` word ``k // 16`` and prints
the words from 15 down to 0, so its hex is the number ``sum(bit_k << k)``.
Our flat bit ``m`` (the project's packed layout: most significant bit of
word 0 first) is the reference's bit ``255 - m``, which is also the order of
``pdqhash.compute``'s vector. So our hex *is* PDQ's canonical hex, and
``to_pdq_hex`` / ``from_pdq_hex`` only print and parse it.

>>> words, quality = pdq(Image.effect_mandelbrot((256, 256), (-1.8, -0.3, 0.6, 1.2), 100))
>>> to_pdq_hex(words)[:16], hamming(words, np.zeros(4, np.uint64)), quality
('1ce11ca117c30b44', 128, 100)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from .hashes import DIHEDRAL_TRANSPOSE, from_hex, hamming, to_hex  # noqa: F401 (hamming: doctests)
from .models import UsageError

__all__ = [
    "DIHEDRAL_NAMES",
    "pdq",
    "pdq_float",
    "pdq_dihedral",
    "to_pdq_hex",
    "from_pdq_hex",
    "gradient_quality",
]

# Row k of pdq_dihedral is the hash of image.transpose(DIHEDRAL_TRANSPOSE[name]):
# identity, mirror, flip, rot180, transpose, rot90 (counter-clockwise), rot270,
# transverse; the same order as hashes.phash_dihedral.
DIHEDRAL_NAMES = tuple(DIHEDRAL_TRANSPOSE)

_MAX_SIDE = 512  # the reference Python hasher's thumbnail size
_MIN_SIDE = 5  # the reference's MIN_HASHABLE_DIM


@lru_cache(maxsize=1024)
def _blur_decimate(side: int) -> tuple[np.ndarray, np.ndarray]:
    """The two box passes (a tent) and the decimation of one axis, as a band.

    Returned as (columns, weights), each 64 x (2 * window - 1): output r is
    ``sum(weights[r] * input[columns[r]])``. Gathering the band costs about
    one copy of the image; a dense 64 x side product was 4x slower on one
    thread, and 20x slower once OpenBLAS threads compete with other processes.
    """
    window = (side + 127) // 128
    half = (window + 2) // 2

    def span(i):
        # The reference's running-sum filter averages in[i - (window - half)]
        # .. in[i + half - 1], clipped to the vector, over the samples kept.
        # For an even window that is off centre: see pdq_dihedral.
        return np.maximum(i - (window - half), 0), np.minimum(i + half - 1, side - 1)

    # Sample int((r + 0.5) * side / 64) is kept, as in the reference's decimateFloat.
    kept = ((2 * np.arange(64) + 1) * side) // 128
    lo, hi = span(kept)
    # The second pass averages the first pass's outputs lo .. hi; each of
    # those averages the input over its own span, all inside one band.
    inner = lo[:, None] + np.arange(window)
    used = inner <= hi[:, None]
    lo2, hi2 = span(np.minimum(inner, side - 1))
    columns = lo2[:, :1] + np.arange(2 * window - 1)
    inside = (columns[:, None] >= lo2[..., None]) & (columns[:, None] <= hi2[..., None])
    weights = ((inside & used[..., None]) / (hi2 - lo2 + 1)[..., None]).sum(axis=1)
    weights /= (hi - lo + 1)[:, None]
    return np.minimum(columns, side - 1), weights.astype(np.float32)


@lru_cache(maxsize=1024)
def _blur_decimate_both_ways(side: int) -> tuple[np.ndarray, np.ndarray]:
    """_blur_decimate(side) over its copy for the reversed axis: 128 rows."""
    columns, weights = _blur_decimate(side)
    return np.concatenate([columns, side - 1 - columns]), np.concatenate([weights, weights])


def _shrink(luma: np.ndarray, rows, cols) -> np.ndarray:
    """Apply banded row and column operators: the luma blurred and decimated."""
    along_rows = np.einsum("rs,rsw->rw", rows[1], luma[rows[0]])
    return np.einsum("rcs,cs->rc", along_rows[:, cols[0]], cols[1])


def _dct_matrix() -> np.ndarray:
    # The reference's 16x64 matrix, scale and all: rows are frequencies 1..16.
    freq = np.arange(1, 17)[:, None]
    j = np.arange(64)[None, :]
    return (np.sqrt(2.0 / 64.0) * np.cos(np.pi / 128.0 * freq * (2 * j + 1))).astype(np.float32)


_DCT = _dct_matrix()


def _luma(image: Image.Image, max_side: int | None) -> np.ndarray:
    """Float32 luminance, shrunk to fit max_side x max_side if larger."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    # Pillow's RGB -> F conversion is the reference's float formula: measured
    # bit-identical to pdqhash's luma on every sample photo.
    luma = image.convert("F")
    width, height = luma.size
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        luma = luma.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(luma, dtype=np.float32)


def gradient_quality(image: Image.Image) -> int:
    """PDQ's quality score (0 flat to 100 detailed) of any image, on a 64x64 box resize.

    The other hashes use it to spot low-information images (blank, one flat
    colour), whose hashes all look alike.

    >>> gradient_quality(Image.new("L", (500, 300), 255))
    0
    >>> gradient_quality(Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 100))
    83
    """
    grey = image if image.mode == "L" else image.convert("L")
    small = grey.resize((64, 64), Image.Resampling.BOX, reducing_gap=None)
    return _quality(np.asarray(small, dtype=np.float32))


def _quality(small: np.ndarray) -> int:
    # Neighbour differences in whole percent of 255, truncated toward zero
    # like the reference's int conversion, in the same float32 steps.
    def percent(diff):
        return np.abs(np.trunc(diff * np.float32(100) / np.float32(255))).sum(dtype=np.int64)

    total = int(percent(small[:-1] - small[1:]) + percent(small[:, :-1] - small[:, 1:]))
    return min(total // 90, 100)


def _threshold(coefficients: np.ndarray) -> np.ndarray:
    """Pack (..., 256) coefficients, in our bit order, into (..., 4) words at their medians."""
    median = np.partition(coefficients, 127, axis=-1)[..., 127:128]
    return np.packbits(coefficients > median, axis=-1).view(">u8").astype(np.uint64)


def _flat(blocks: np.ndarray) -> np.ndarray:
    # Reversed because our flat bit m is the reference's bit 255 - m.
    return blocks.reshape(*blocks.shape[:-2], 256)[..., ::-1]


def _hashable(image: Image.Image, max_side: int | None) -> np.ndarray | None:
    if max_side is not None and (isinstance(max_side, bool) or max_side < _MIN_SIDE):
        raise UsageError(f"max_side must be None or at least {_MIN_SIDE}; got {max_side!r}")
    luma = _luma(image, max_side)
    return None if min(luma.shape) < _MIN_SIDE else luma


def pdq_float(image: Image.Image, *, max_side: int | None = _MAX_SIDE) -> tuple[np.ndarray, int]:
    """Return the 256 DCT coefficients PDQ thresholds (in our bit order) and the quality.

    The order is that of ``pdqhash.compute_float``; ``pdq`` sets bit m where
    coefficient m is above the median. Too-small images give zeros.

    >>> coefficients, quality = pdq_float(Image.radial_gradient("L"))
    >>> coefficients.shape, coefficients.dtype, quality
    ((256,), dtype('float32'), 87)
    """
    luma = _hashable(image, max_side)
    if luma is None:
        return np.zeros(256, dtype=np.float32), 0
    rows, cols = luma.shape
    small = _shrink(luma, _blur_decimate(rows), _blur_decimate(cols))
    return _flat(_DCT @ small @ _DCT.T).copy(), _quality(small)


def pdq(image: Image.Image, *, max_side: int | None = _MAX_SIDE) -> tuple[np.ndarray, int]:
    """Return the PDQ hash of ``image`` as 4 uint64 words, and its quality 0-100.

    ``max_side=None`` hashes at full resolution, as ``pdqhash.compute`` does
    (bit-identical on the sample photos); the default shrinks first.

    >>> words, quality = pdq(Image.new("RGB", (64, 64), "white"))
    >>> words.dtype, words.shape, quality
    (dtype('uint64'), (4,), 0)
    """
    coefficients, quality = pdq_float(image, max_side=max_side)
    return _threshold(coefficients), quality  # zeros stay zeros: no bit is above


def pdq_dihedral(
    image: Image.Image, *, max_side: int | None = _MAX_SIDE, reference: bool = False
) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """Return (8, 4) words hashing the 8 flips and turns of ``image``, its quality, and names.

    Row k equals ``pdq(image.transpose(DIHEDRAL_TRANSPOSE[names[k]]))``. The
    reference (and ``pdqhash.compute_dihedral``) flips signs in one DCT
    instead, which ``reference=True`` reproduces bit for bit. But its box
    filter is off centre when the window is even (sides of 129-256 or
    385-512 px, so every image the default shrinks): a mirrored image is
    blurred differently, and such rows were up to 44 bits from the hash of
    the transformed sample photo. The default blurs both directions of each
    axis (twice the gathering, under 0.1 ms at 512x384), then transposes.

    >>> im = Image.effect_mandelbrot((300, 200), (-2, -0.4, 0.8, 1.3), 50)
    >>> words, quality, names = pdq_dihedral(im)
    >>> hamming(words[names.index("rot90")], pdq(im.transpose(Image.Transpose.ROTATE_90))[0])
    0
    """
    luma = _hashable(image, max_side)
    if luma is None:
        return np.zeros((8, 4), dtype=np.uint64), 0, DIHEDRAL_NAMES
    rows, cols = luma.shape
    if reference:
        small = _shrink(luma, _blur_decimate(rows), _blur_decimate(cols))
        block = _DCT @ small @ _DCT.T
        # A reversed axis multiplies its frequency f = index + 1 by (-1) ** f.
        sign = np.where(np.arange(16) % 2 == 1, 1, -1).astype(np.float32)
        upright = np.stack([block, block * sign, block * sign[:, None], block * np.outer(sign, sign)])
    else:
        both = _shrink(luma, _blur_decimate_both_ways(rows), _blur_decimate_both_ways(cols))
        small = both[:64, :64]
        # The corners are the image, its mirror, its flip and its half turn.
        corners = both.reshape(2, 64, 2, 64).transpose(0, 2, 1, 3).reshape(4, 64, 64)
        upright = _DCT @ corners @ _DCT.T
    # A transpose of the image transposes its DCT; rot90 = transpose(mirror) etc.
    blocks = np.concatenate([upright, upright.transpose(0, 2, 1)])
    return _threshold(_flat(blocks)), _quality(small), DIHEDRAL_NAMES


def to_pdq_hex(words: np.ndarray) -> str:
    """Return PDQ's canonical 64-digit hex of a packed hash (our bit order is PDQ's).

    >>> to_pdq_hex(np.array([1, 2, 3, 2**64 - 1], dtype=np.uint64))[-20:]
    '0003ffffffffffffffff'
    """
    words = np.asarray(words, dtype=np.uint64)
    if words.shape != (4,):
        raise ValueError(f"a PDQ hash is 4 uint64 words; got shape {words.shape}")
    return to_hex(words)


def from_pdq_hex(text: str) -> np.ndarray:
    """Parse PDQ's 64-digit hex (either case) into 4 packed uint64 words.

    >>> from_pdq_hex("F" * 16 + "0" * 48)[:2]
    array([18446744073709551615,                    0], dtype=uint64)
    """
    words = from_hex(text)
    if words.shape != (4,):
        raise ValueError(f"a PDQ hash is 64 hex digits; got {len(text)}")
    return words
