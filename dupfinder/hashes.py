"""Perceptual fingerprints of images, bit-identical to ImageHash 4.3.2.

Every hash comes back *packed*: ImageHash's boolean matrix flattened in
row-major order into a 1-D ``uint64`` array, the first bit being the most
significant bit of word 0, so :func:`to_hex` prints exactly what
``str(imagehash.<algorithm>(image))`` prints.

Only numpy and Pillow are imported up front; scipy's DCT is imported on first
use of :func:`phash` because start-up time matters for the CLI (importing it
costs 0.1 s, more than hashing 50 images), and a scan does not import it at
all (see :func:`phash_dihedral`). The Haar transform behind whash is
re-implemented here rather than taken from pywt: it repeats pywt's order of
floating-point operations, since the median threshold of whash turns on the
last bit whenever several coefficients tie.

>>> from PIL import Image
>>> img = Image.effect_mandelbrot((64, 64), (-2, -1, 0.6, 1.3), 100)
>>> to_hex(phash(img))
'89e9969562724f4e'
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from PIL import Image

from .models import UsageError

__all__ = [
    "ALGORITHMS",
    "DIHEDRAL_TRANSPOSE",
    "ahash",
    "dhash",
    "phash",
    "whash",
    "compute",
    "phash_dihedral",
    "pack_bits",
    "unpack_bits",
    "to_hex",
    "from_hex",
    "hamming",
]

ALGORITHMS = ("ahash", "dhash", "phash", "whash")

# Row k of phash_dihedral(image) is the pHash of image.transpose(T_k).
# ROTATE_90 turns counter-clockwise, as everywhere in Pillow.
DIHEDRAL_TRANSPOSE = {
    "identity": None,
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
    "flip": Image.Transpose.FLIP_TOP_BOTTOM,
    "rot180": Image.Transpose.ROTATE_180,
    "transpose": Image.Transpose.TRANSPOSE,
    "rot90": Image.Transpose.ROTATE_90,
    "rot270": Image.Transpose.ROTATE_270,
    "transverse": Image.Transpose.TRANSVERSE,
}

_LANCZOS = Image.Resampling.LANCZOS
# pywt's Haar filter tap, written out so no rounding of sqrt(0.5) can differ.
_HAAR = 0.7071067811865476
_HEX = re.compile(r"[0-9a-fA-F]+")


def _is_int(value):
    # bool is an int subclass, but hash_size=True is a mistake, not 1.
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_size(hash_size):
    if not _is_int(hash_size) or hash_size < 8 or hash_size % 8:
        raise UsageError(
            f"hash_size must be a positive multiple of 8 (8, 16, 24, ...) so the "
            f"hash packs into whole 64-bit words; got {hash_size!r}"
        )
    return int(hash_size)


def _gray(image, width, height):
    return np.asarray(image.convert("L").resize((width, height), _LANCZOS))


def _above_median(block):
    return pack_bits(block > np.median(block))


def ahash(image, *, hash_size=8):
    """Average hash: which pixels of a small grey thumbnail are above its mean.

    >>> img = Image.effect_mandelbrot((64, 64), (-2, -1, 0.6, 1.3), 100)
    >>> to_hex(ahash(img))
    '0e3b71c1713b0e04'
    """
    n = _check_size(hash_size)
    pixels = _gray(image, n, n)
    return pack_bits(pixels > np.mean(pixels))


def dhash(image, *, hash_size=8):
    """Difference hash: whether each thumbnail pixel is darker than its right neighbour.

    >>> img = Image.effect_mandelbrot((64, 64), (-2, -1, 0.6, 1.3), 100)
    >>> to_hex(dhash(img))
    '3cf2c393e3f23cdc'
    """
    n = _check_size(hash_size)
    pixels = _gray(image, n + 1, n)
    return pack_bits(pixels[:, 1:] > pixels[:, :-1])


def _dct_low(image, hash_size, highfreq_factor):
    if not _is_int(highfreq_factor) or highfreq_factor < 1:
        raise UsageError(f"highfreq_factor must be a positive integer; got {highfreq_factor!r}")
    import scipy.fftpack  # lazily: importing scipy costs more than hashing one image

    size = hash_size * int(highfreq_factor)
    pixels = _gray(image, size, size)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    return dct[:hash_size, :hash_size]


_DCT_ZERO = 1e-9  # a coefficient this small a pixel is a cancellation, not a signal


@lru_cache(maxsize=512)
def _dct_basis(n, k):
    # The first k DCT-II basis functions sampled at n points: the low
    # frequencies of an n-pixel line (scipy's unnormalised DCT is twice this).
    x = (2 * np.arange(n) + 1) * np.pi / (2 * n)
    basis = np.cos(np.outer(np.arange(k), x))
    basis.flags.writeable = False
    return basis


def _dct_low_numpy(image, hash_size):
    # The same low block as _dct_low from two small matrix products: no scipy
    # import, and only the k x k corner is computed. The DC is 4 x the pixel
    # sum, as scipy's; the AC are taken from the pixels less their mean.
    n = hash_size * 4
    pixels = _gray(image, n, n).astype(np.float64)
    basis = _dct_basis(n, hash_size)
    block = 4 * (basis @ (pixels - pixels.mean()) @ basis.T)
    # Where a picture's symmetry cancels a coefficient (a blank page, a
    # mirror-symmetric logo, a two-tone banner) scipy's FFT gives an exact
    # zero and the products leave rounding (1e-10); left so, the bits there
    # would be noise, and a resized copy of the logo would not match. Such a
    # value, a billionth of a grey level a pixel, is the zero it stands for.
    block[np.abs(block) < _DCT_ZERO * n * n] = 0.0
    block[0, 0] = 4 * pixels.sum()
    return block


def phash(image, *, hash_size=8, highfreq_factor=4):
    """Perceptual hash: low DCT frequencies of the thumbnail against their median.

    >>> img = Image.effect_mandelbrot((64, 64), (-2, -1, 0.6, 1.3), 100)
    >>> to_hex(phash(img))
    '89e9969562724f4e'
    """
    return _above_median(_dct_low(image, _check_size(hash_size), highfreq_factor))


def _haar_analysis(x):
    # pywt.dwtn filters axis 0, then axis 1. Each output of its convolution is
    # 0 + f[0]*x[2i+1] + f[1]*x[2i], every product rounded on its own; with
    # dec_lo = (c, c) and dec_hi = (-c, c) that is exactly odd+even / even-odd.
    even, odd = _HAAR * x[0::2], _HAAR * x[1::2]
    bands = []
    for y in (odd + even, even - odd):
        even, odd = _HAAR * y[:, 0::2], _HAAR * y[:, 1::2]
        bands += [odd + even, even - odd]
    return bands  # [aa, ad, da, dd] in pywt's key names


def _haar_synthesis(aa, ad, da, dd):
    # pywt.idwtn undoes axis 1 first, then axis 0; each output sample is
    # 0 + c*a, then + (+-c)*d: the products are rounded before the one addition.
    def up(lo, hi, axis):
        lo, hi = _HAAR * lo, _HAAR * hi
        pair = np.stack((lo + hi, lo - hi), axis=axis + 1)
        shape = list(lo.shape)
        shape[axis] *= 2
        return pair.reshape(shape)

    return up(up(aa, ad, 1), up(da, dd, 1), 0)


def whash(image, *, hash_size=8, image_scale=None):
    """Wavelet hash (Haar, max-level LL removed), as ImageHash's whash defaults.

    >>> img = Image.effect_mandelbrot((64, 64), (-2, -1, 0.6, 1.3), 100)
    >>> to_hex(whash(img))
    '1f3b71c1713b1f04'
    """
    n = _check_size(hash_size)
    if n & (n - 1):
        raise UsageError(f"whash needs hash_size to be a power of 2 (8, 16, 32, ...); got {n}")
    if image_scale is None:
        image_scale = max(2 ** int(np.log2(min(image.size))), n)
    elif not _is_int(image_scale) or image_scale < n or image_scale & (image_scale - 1):
        raise UsageError(
            f"image_scale must be a power of 2 no smaller than hash_size ({n}); got {image_scale!r}"
        )
    image_scale = int(image_scale)
    pixels = _gray(image, image_scale, image_scale) / 255.0

    # Decompose fully, zero the single LL coefficient, rebuild: this removes
    # the mean, but the result must carry pywt's rounding, not the exact mean.
    details = []
    for _ in range(image_scale.bit_length() - 1):
        pixels, *bands = _haar_analysis(pixels)
        details.append(bands)
    pixels = pixels * 0  # as ImageHash's coeffs[0] *= 0
    for bands in reversed(details):
        pixels = _haar_synthesis(pixels, *bands)

    # Only the approximation of the second decomposition is used, so skip
    # the detail bands; the LL arithmetic is the same as in _haar_analysis.
    for _ in range(image_scale.bit_length() - n.bit_length()):
        y = _HAAR * pixels[1::2] + _HAAR * pixels[0::2]
        pixels = _HAAR * y[:, 1::2] + _HAAR * y[:, 0::2]
    return _above_median(pixels)


_FUNCTIONS = {"ahash": ahash, "dhash": dhash, "phash": phash, "whash": whash}


def compute(image, algorithm, *, hash_size=8):
    """Hash ``image`` with the algorithm named ``algorithm`` (one of ALGORITHMS).

    >>> img = Image.effect_mandelbrot((64, 64), (-2, -1, 0.6, 1.3), 100)
    >>> to_hex(compute(img, "whash")) == to_hex(whash(img))
    True
    """
    try:
        function = _FUNCTIONS[algorithm]
    except (KeyError, TypeError):
        choices = ", ".join(ALGORITHMS)
        raise UsageError(f"unknown hash algorithm {algorithm!r}; choose one of {choices}") from None
    return function(image, hash_size=hash_size)


def phash_dihedral(image, *, hash_size=8, exact=False):
    """pHash of the image under each of the 8 rotations and reflections, from one decode.

    Row k approximates ``phash(image.transpose(DIHEDRAL_TRANSPOSE[names[k]]))``
    and row 0 is ``phash(image)``. A mirror negates the odd DCT columns, a
    top-bottom flip the odd rows, and a transpose transposes the block, so the
    DCT is taken once; each variant is thresholded at its own median. The four
    variants that swap axes can differ from hashing the transformed image by a
    few bits: Pillow resizes horizontally first and rounds to 8 bits before the
    vertical pass, so swapping axes changes that rounding.

    The DCT is two small matrix products, not scipy's (whose import is 0.1 s
    of a scan's start). Its coefficients agree with scipy's to about 1e-13
    and it gives exact zeros where scipy does (symmetric and flat pictures),
    so a bit can differ only where a coefficient meets the median to its last
    bits: of the tests' 117 pictures built to tie, none at hash size 8 and 2
    at 16 (a diagonal ramp, two-tone corners); of 6016 hashes of photos (both
    sizes, every orientation) none; the closest coefficient of a photo was
    3e-8 of the largest away from its median.
    ``exact=True`` takes scipy's DCT, so row 0 is bit for bit ``phash(image)``
    on any picture.

    >>> img = Image.effect_mandelbrot((64, 64), (-2, -1, 0.6, 1.3), 100)
    >>> words, names = phash_dihedral(img)
    >>> words.shape, names[5]
    ((8, 1), 'rot90')
    >>> to_hex(words[5]) == to_hex(phash(img.transpose(Image.Transpose.ROTATE_90)))
    True
    """
    hash_size = _check_size(hash_size)
    block = _dct_low(image, hash_size, 4) if exact else _dct_low_numpy(image, hash_size)
    sign = (-1.0) ** np.arange(block.shape[0])
    mirror, flip = block * sign, block * sign[:, None]
    upright = (block, mirror, flip, mirror * sign[:, None])
    variants = upright + tuple(b.T for b in upright)
    flat = np.stack(variants).reshape(len(variants), -1)
    return _above_row_medians(flat), tuple(DIHEDRAL_TRANSPOSE)


def _above_row_medians(flat):
    # Each row's bits above its median, packed like pack_bits: the same value
    # np.median takes (the mean of the two middle values of an even count),
    # from one partition of all rows instead of one np.median a row (0.1 ms a
    # file for the eight orientations).
    m = flat.shape[1]
    middle = np.partition(flat, (m // 2 - 1, m // 2), axis=1)
    median = (middle[:, m // 2 - 1 : m // 2] + middle[:, m // 2 : m // 2 + 1]) / 2
    return np.packbits(flat > median, axis=1).view(">u8").astype(np.uint64)


def pack_bits(bits):
    """Pack booleans (any shape, row-major) into uint64 words, first bit most significant.

    >>> pack_bits([True] + [False] * 62 + [True])
    array([9223372036854775809], dtype=uint64)
    """
    flat = np.asarray(bits, dtype=bool).ravel()
    if flat.size == 0 or flat.size % 64:
        raise ValueError(f"can only pack a whole number of 64-bit words; got {flat.size} bits")
    return np.packbits(flat).view(">u8").astype(np.uint64)


def unpack_bits(words, nbits):
    """Inverse of pack_bits: the first ``nbits`` bits of ``words`` as a flat bool array.

    >>> unpack_bits(pack_bits([True, False] * 32), 64)[:4]
    array([ True, False,  True, False])
    """
    raw = np.unpackbits(np.asarray(words, dtype=np.uint64).ravel().astype(">u8").view(np.uint8))
    if not 0 <= nbits <= raw.size:
        raise ValueError(f"cannot take {nbits} bits from {raw.size // 64} word(s)")
    return raw[:nbits].astype(bool)


def to_hex(words):
    """Lowercase hex of packed words, 16 digits each: the text ImageHash prints.

    >>> to_hex(np.array([0xFF, 1], dtype=np.uint64))
    '00000000000000ff0000000000000001'
    """
    return np.asarray(words, dtype=np.uint64).ravel().astype(">u8").tobytes().hex()


def from_hex(text):
    """Inverse of to_hex; accepts upper case, rejects anything but whole 16-digit words.

    >>> from_hex("00000000000000FF")
    array([255], dtype=uint64)
    """
    if not isinstance(text, str) or not _HEX.fullmatch(text) or len(text) % 16:
        raise ValueError(f"not a packed hash (hex digits, a multiple of 16 of them): {text!r:.80}")
    return np.frombuffer(bytes.fromhex(text), dtype=">u8").astype(np.uint64)


def hamming(a, b):
    """Number of bits that differ between two packed hashes of the same length.

    >>> hamming(from_hex("00000000000000ff"), from_hex("000000000000000f"))
    4
    """
    a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    if a.shape != b.shape:
        raise ValueError(f"hashes differ in length: {a.size} and {b.size} words")
    x = np.bitwise_xor(a, b)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return int(np.bitwise_count(x).sum())
    return int(np.unpackbits(x.ravel().view(np.uint8)).sum())
