"""dupfinder.hashes against ImageHash 4.3.2, bit for bit, plus the packed format.

ImageHash (and pywt, which its whash uses) are test-only dependencies: the
library re-implements every hash in numpy, so these tests are what proves the
hex it prints can be mixed with hashes ImageHash users have already stored.
"""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dupfinder import hashes

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
SAMPLE_FILES = sorted(p for p in SAMPLES.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
SAMPLE_IDS = [p.relative_to(SAMPLES).as_posix() for p in SAMPLE_FILES]

REFERENCE = {
    "ahash": imagehash.average_hash,
    "dhash": imagehash.dhash,
    "phash": imagehash.phash,
    "whash": imagehash.whash,
}
# No example database: failing examples are not saved into the checkout.
PROPERTY = settings(max_examples=200, database=None, deadline=None)


def assert_same_as_imagehash(image, algorithm, hash_size):
    expected = str(REFERENCE[algorithm](image, hash_size=hash_size))
    words = getattr(hashes, algorithm)(image, hash_size=hash_size)
    assert words.dtype == np.uint64 and words.shape == (hash_size * hash_size // 64,)
    assert hashes.to_hex(words) == expected


def test_sample_images_are_there():
    assert len(SAMPLE_FILES) >= 40, f"expected the repository's photos under {SAMPLES}"


@pytest.mark.parametrize("hash_size", [8, 16])
@pytest.mark.parametrize("algorithm", hashes.ALGORITHMS)
@pytest.mark.parametrize("as_rgb", [False, True], ids=["as-opened", "rgb"])
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=SAMPLE_IDS)
def test_photos_match_imagehash(path, as_rgb, algorithm, hash_size):
    with Image.open(path) as image:
        assert_same_as_imagehash(image.convert("RGB") if as_rgb else image, algorithm, hash_size)


# Images built to tie: flat areas make many coefficients equal, so the result
# hangs on the last bit of the arithmetic wherever a value meets the median.
def _synthetic(kind, width, height):
    y, x = np.mgrid[0:height, 0:width]
    if kind.startswith("flat"):
        return Image.new("L", (width, height), int(kind[4:]))
    pixels = {
        "halves_lr": np.where(x >= width // 2, 255, 0),
        "halves_tb": np.where(y >= height // 2, 200, 30),
        "gradient_x": x * 255 // max(width - 1, 1),
        "gradient_y": y * 255 // max(height - 1, 1),
        "gradient_diag": (x + y) * 255 // max(width + height - 2, 1),
        "checker_1": (x + y) % 2 * 255,
        "checker_4": (x // 4 + y // 4) % 2 * 255,
        "saturated_white": np.where((x < width // 3) & (y % 7 == 0), 90, 255),
        "saturated_corners": np.where((x < width // 5) | (y > height * 4 // 5), 0, 255),
        "three_levels": np.random.default_rng(width * height).integers(0, 3, (height, width)) * 120,
    }[kind]
    return Image.fromarray(pixels.astype(np.uint8))


SYNTHETIC_KINDS = ["flat0", "flat128", "flat255", "halves_lr", "halves_tb", "gradient_x",
                   "gradient_y", "gradient_diag", "checker_1", "checker_4", "saturated_white",
                   "saturated_corners", "three_levels"]  # fmt: skip
SYNTHETIC_SIZES = [(8, 8), (9, 9), (33, 17), (17, 33), (1, 1), (3, 5), (64, 64), (100, 60), (513, 300)]


@pytest.mark.parametrize("hash_size", [8, 16])
@pytest.mark.parametrize("algorithm", hashes.ALGORITHMS)
@pytest.mark.parametrize("size", SYNTHETIC_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_tied_images_match_imagehash(kind, size, algorithm, hash_size):
    assert_same_as_imagehash(_synthetic(kind, *size), algorithm, hash_size)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "1", "I;16", "F"])
def test_other_modes_match_imagehash(mode):
    rgb = _synthetic("three_levels", 40, 30).convert("RGB")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(rgb)[..., 0] * 200).astype("<u2"))
    else:
        image = rgb.convert(mode)
    for algorithm in hashes.ALGORITHMS:
        assert_same_as_imagehash(image, algorithm, 8)


@pytest.mark.parametrize("image_scale", [8, 16, 32, 64, 256, 1024])
def test_whash_image_scale_matches_imagehash(image_scale):
    image = _synthetic("saturated_corners", 100, 60)
    expected = str(imagehash.whash(image, hash_size=8, image_scale=image_scale))
    assert hashes.to_hex(hashes.whash(image, hash_size=8, image_scale=image_scale)) == expected


@settings(max_examples=150, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 90),
    height=st.integers(1, 90),
    block=st.integers(1, 24),
    levels=st.integers(2, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_blocky_images_match_imagehash(width, height, block, levels, seed):
    # Few grey levels in large blocks: the hardest case for ties at the median.
    cells = np.random.default_rng(seed).integers(0, levels, (height // block + 1, width // block + 1))
    pixels = np.kron(cells * (255 // (levels - 1)), np.ones((block, block), dtype=np.int64))
    image = Image.fromarray(pixels[:height, :width].astype(np.uint8))
    for algorithm in hashes.ALGORITHMS:
        assert_same_as_imagehash(image, algorithm, 8)


# ---- packed representation -------------------------------------------------


def bits_of(n):
    # Drawn as one integer: much faster than a list of booleans, and it
    # reaches the all-zero and all-one hashes.
    return st.integers(0, 2**n - 1).map(lambda v: [c == "1" for c in format(v, f"0{n}b")])


bit_arrays = st.sampled_from([64, 256]).flatmap(bits_of)


@PROPERTY
@given(bits=bit_arrays)
def test_pack_unpack_round_trip(bits):
    words = hashes.pack_bits(np.array(bits))
    assert words.dtype == np.uint64 and words.shape == (len(bits) // 64,)
    assert hashes.unpack_bits(words, len(bits)).tolist() == bits


@PROPERTY
@given(bits=bit_arrays)
def test_hex_round_trip_and_imagehash_text(bits):
    words = hashes.pack_bits(np.array(bits))
    text = hashes.to_hex(words)
    assert text == str(imagehash.ImageHash(np.array(bits).reshape(-1, 8)))
    assert text == text.lower() and len(text) == len(bits) // 4
    assert int(text, 16) == int("".join("1" if b else "0" for b in bits), 2)
    np.testing.assert_array_equal(hashes.from_hex(text), words)
    np.testing.assert_array_equal(hashes.from_hex(text.upper()), words)


@PROPERTY
@given(data=st.data(), n=st.sampled_from([64, 256]))
def test_hamming_counts_differing_bits(data, n):
    a, b = np.array(data.draw(bits_of(n))), np.array(data.draw(bits_of(n)))
    distance = hashes.hamming(hashes.pack_bits(a), hashes.pack_bits(b))
    assert distance == int(np.count_nonzero(a != b))
    assert distance == imagehash.ImageHash(a) - imagehash.ImageHash(b)
    # Independent hashes sit near n/2 apart; near-duplicates are what matter.
    flips = sorted(data.draw(st.sets(st.integers(0, n - 1), max_size=12)))
    near = a.copy()
    near[flips] ^= True
    assert hashes.hamming(hashes.pack_bits(a), hashes.pack_bits(near)) == len(flips)


def test_first_bit_is_most_significant_bit_of_word_zero():
    bits = np.zeros((16, 16), dtype=bool)
    bits[0, 0] = bits[3, 15] = True  # bit 0 of word 0, and bit 63 (the last) of word 0
    words = hashes.pack_bits(bits)
    assert words.tolist() == [2**63 + 1, 0, 0, 0]
    assert hashes.to_hex(words) == "8000000000000001" + "0" * 48
    assert int(hashes.to_hex(words[:1]), 16) == int(words[0])


@pytest.mark.parametrize("bad", ["", "abc", "0" * 15, "0" * 17, "g" * 16, "0x" + "0" * 14,
                                 " " + "0" * 16, "0" * 16 + "\n", "00 11 22 33 44 55 66 77", None, 123,
                                 b"0000000000000000"])  # fmt: skip
def test_from_hex_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        hashes.from_hex(bad)


def test_pack_and_unpack_reject_bad_lengths():
    with pytest.raises(ValueError):
        hashes.pack_bits(np.ones(63, dtype=bool))
    with pytest.raises(ValueError):
        hashes.unpack_bits(np.zeros(1, dtype=np.uint64), 65)
    with pytest.raises(ValueError):
        hashes.hamming(np.zeros(1, dtype=np.uint64), np.zeros(4, dtype=np.uint64))


# ---- options and dispatch --------------------------------------------------


@pytest.mark.parametrize("algorithm", hashes.ALGORITHMS)
@pytest.mark.parametrize("hash_size", [0, 2, 4, 7, 12, -8, 8.0, True, "8"])
def test_hash_size_must_be_a_multiple_of_8(algorithm, hash_size):
    with pytest.raises(ValueError, match="hash_size"):
        hashes.compute(Image.new("L", (32, 32)), algorithm, hash_size=hash_size)


def test_whash_needs_a_power_of_two():
    image = Image.new("L", (64, 64))
    assert hashes.ahash(image, hash_size=24).shape == (9,)
    with pytest.raises(ValueError, match="power of 2"):
        hashes.whash(image, hash_size=24)
    for image_scale in (4, 48, 0):
        with pytest.raises(ValueError, match="image_scale"):
            hashes.whash(image, image_scale=image_scale)


@pytest.mark.parametrize("algorithm", hashes.ALGORITHMS)
def test_compute_dispatches_by_name(algorithm):
    image = _synthetic("gradient_diag", 50, 40)
    expected = getattr(hashes, algorithm)(image, hash_size=16)
    np.testing.assert_array_equal(hashes.compute(image, algorithm, hash_size=16), expected)


@pytest.mark.parametrize("name", ["md5", "PHASH", "", None, ["phash"]])
def test_compute_rejects_unknown_algorithm(name):
    with pytest.raises(ValueError, match="algorithm"):
        hashes.compute(Image.new("L", (8, 8)), name)


# ---- dihedral variants of pHash --------------------------------------------

DIHEDRAL_NAMES = ("identity", "mirror", "flip", "rot180", "transpose", "rot90", "rot270", "transverse")
# Observed on the sample photos (Pillow 13): mirror, flip and rot180 agree
# exactly; the variants that swap axes differ by at most 2 bits of 64 and 4 of
# 256, because Pillow resizes rows first and rounds to 8 bits in between.
DIHEDRAL_TOLERANCE = {8: 4, 16: 10}


@pytest.mark.parametrize("hash_size", [8, 16])
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=SAMPLE_IDS)
def test_phash_dihedral_matches_transformed_images(path, hash_size):
    with Image.open(path) as image:
        image.load()
        words, names = hashes.phash_dihedral(image, hash_size=hash_size)
        assert names == DIHEDRAL_NAMES == tuple(hashes.DIHEDRAL_TRANSPOSE)
        assert words.dtype == np.uint64 and words.shape == (8, hash_size * hash_size // 64)
        assert hashes.to_hex(words[0]) == str(imagehash.phash(image, hash_size=hash_size))
        distances = {}
        for row, name in zip(words, names):
            method = hashes.DIHEDRAL_TRANSPOSE[name]
            moved = image if method is None else image.transpose(method)
            distances[name] = hashes.hamming(row, hashes.phash(moved, hash_size=hash_size))
    assert max(distances.values()) <= DIHEDRAL_TOLERANCE[hash_size], distances
    assert distances["mirror"] == distances["flip"] == distances["rot180"] == 0, distances


def test_phash_dihedral_variants_are_distinct():
    # Guards the row order: a swapped pair (say rot90/rot270) would still pass
    # a loose tolerance on a symmetric image, so use one with no symmetry.
    image = Image.effect_mandelbrot((96, 80), (-2, -1, 0.6, 1.3), 100)
    words, names = hashes.phash_dihedral(image)
    for i in range(8):
        for j in range(i + 1, 8):
            assert hashes.hamming(words[i], words[j]) >= 8, (names[i], names[j])
        method = hashes.DIHEDRAL_TRANSPOSE[names[i]]
        expected = hashes.phash(image if method is None else image.transpose(method))
        assert hashes.hamming(words[i], expected) <= DIHEDRAL_TOLERANCE[8], names[i]


# ---- the scan's DCT (numpy) against scipy's ---------------------------------


@pytest.mark.parametrize("hash_size", [8, 16])
def test_numpy_dct_gives_the_exact_bits_on_photos(hash_size):
    # The scan takes phash_dihedral's default (numpy) DCT; on photographs no
    # coefficient ties the median, so every orientation's bits are scipy's.
    for path in SAMPLE_FILES:
        with Image.open(path) as image:
            image.load()
            fast, _ = hashes.phash_dihedral(image, hash_size=hash_size)
            exact, _ = hashes.phash_dihedral(image, hash_size=hash_size, exact=True)
            assert np.array_equal(fast, exact), path.name
            assert hashes.to_hex(fast[0]) == str(imagehash.phash(image, hash_size=hash_size))


@pytest.mark.parametrize("level", [0, 1, 128, 255])
@pytest.mark.parametrize("size", [(1, 1), (32, 32), (640, 480)])
def test_numpy_dct_hashes_flat_images_as_imagehash(level, size):
    # A blank page: every AC coefficient is zero for scipy, and must be for
    # the numpy DCT too, or blank pages would hash to noise.
    image = Image.new("L", size, level)
    fast, _ = hashes.phash_dihedral(image)
    assert hashes.to_hex(fast[0]) == str(imagehash.phash(image))


@pytest.mark.parametrize("size", SYNTHETIC_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", SYNTHETIC_KINDS + ["mandelbrot"])
def test_numpy_dct_gives_scipys_zeros_on_symmetric_pictures(kind, size):
    # Symmetry cancels coefficients: scipy gives exact zeros, and so must the
    # numpy DCT, or the bits there are rounding noise and a resized copy of a
    # symmetric logo stops matching. (The Mandelbrot set is symmetric top to
    # bottom.)
    if kind == "mandelbrot":
        image = Image.effect_mandelbrot(size, (-2, -1.5, 1, 1.5), 100)
    else:
        image = _synthetic(kind, *size)
    fast, _ = hashes.phash_dihedral(image)
    exact, _ = hashes.phash_dihedral(image, exact=True)
    assert np.array_equal(fast, exact)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), width=st.integers(8, 120), height=st.integers(8, 120))
def test_numpy_dct_matches_scipy_on_noise(seed, width, height):
    # (A picture one pixel wide is built to tie: its 32 columns are equal,
    # so most coefficients are zero and the bits are the rounding's.)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    image = Image.fromarray(pixels)
    fast, _ = hashes.phash_dihedral(image)
    exact, _ = hashes.phash_dihedral(image, exact=True)
    assert np.array_equal(fast, exact)
