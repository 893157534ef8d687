"""Decoding: bad files become errors, unusual modes are hashed as a person sees them."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dupfinder.fingerprint import HashSpec, fingerprint_file
from dupfinder.hashes import from_hex, hamming, phash
from dupfinder.imaging import DecodedImage, load_image
from dupfinder.models import ScanError

from .conftest import open_rgb


def fp(path):
    return fingerprint_file(str(path), HashSpec())


def dist(a, b) -> int:
    return hamming(from_hex(a.hash), from_hex(b.hash))


@pytest.fixture
def photo(photos):
    return photos[0]


def write_bomb_png(path: Path, side: int = 20000) -> None:
    """A valid single-colour PNG of side x side pixels, written without holding it in memory."""
    row = b"\x00" + b"\x00" * (side // 8)  # filter byte + one bit per pixel
    comp = zlib.compressobj(9)
    chunks = [comp.compress(row * 500) for _ in range(side // 500)]
    data = b"".join(chunks) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    err = fp(p)
    assert isinstance(err, ScanError) and (err.stage, err.message) == ("open", "empty file (0 bytes)")


def test_text_file_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("these are not pixels\n")
    err = fp(p)
    assert isinstance(err, ScanError) and err.stage == "open"
    assert "not an image" in err.message


def test_truncated_jpeg(tmp_path, photo):
    data = (photo.with_suffix(".jpg") if photo.suffix == ".jpg" else photo).read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    err = fp(p)
    assert isinstance(err, ScanError) and err.stage == "decode"
    assert "truncated" in err.message


def test_decompression_bomb_is_an_error_not_a_crash(tmp_path):
    p = tmp_path / "bomb.png"
    write_bomb_png(p)
    err = fp(p)
    assert isinstance(err, ScanError)
    assert "decompression bomb" in err.message


def test_sixteen_bit_greyscale_png_is_not_white(tmp_path, photo):
    grey8 = open_rgb(photo).convert("L")
    arr16 = (np.asarray(grey8).astype(np.uint32) * 257).astype(np.uint16)
    p16 = tmp_path / "deep.png"
    Image.fromarray(arr16).save(p16)
    with Image.open(p16) as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    p8 = tmp_path / "flat.png"
    grey8.save(p8)
    a, b = fp(p16), fp(p8)
    assert a.hash == b.hash
    # What every Pillow-based tool does today: convert("L") clips to white.
    with Image.open(p16) as im:
        assert phash(im.convert("L")).tolist() != from_hex(b.hash).tolist()


def test_cmyk_jpeg_hashes_like_its_rgb(tmp_path, photo):
    rgb = open_rgb(photo)
    pc = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(pc, quality=95)
    with Image.open(pc) as im:
        assert im.mode == "CMYK"
    pr = tmp_path / "rgb.jpg"
    rgb.save(pr, quality=95)
    assert dist(fp(pc), fp(pr)) <= 4


def test_animated_gif_uses_first_frame(tmp_path, photos):
    first, second = open_rgb(photos[1]), open_rgb(photos[2]).resize(open_rgb(photos[1]).size)
    p = tmp_path / "anim.gif"
    first.save(p, save_all=True, append_images=[second], duration=100, loop=0)
    alone = tmp_path / "first.png"
    first.save(alone)
    other = tmp_path / "second.png"
    second.save(other)
    anim = fp(p)
    assert dist(anim, fp(alone)) <= 6
    assert dist(anim, fp(other)) > 12


def test_rgba_transparency_is_shown_over_white(tmp_path, photo):
    rgb = open_rgb(photo)
    rgba = rgb.convert("RGBA")
    alpha = Image.new("L", rgb.size, 255)
    alpha.paste(0, (0, 0, rgb.width // 2, rgb.height))  # left half transparent
    # The hidden pixels under the transparent half are black, as editors
    # often leave them; a viewer shows white there.
    black_left = rgba.copy()
    black_left.paste((0, 0, 0, 0), (0, 0, rgb.width // 2, rgb.height))
    black_left.putalpha(alpha)
    p = tmp_path / "alpha.png"
    black_left.save(p)
    seen = rgb.copy()
    seen.paste((255, 255, 255), (0, 0, rgb.width // 2, rgb.height))
    q = tmp_path / "seen.png"
    seen.save(q)
    assert fp(p).hash == fp(q).hash


def test_palette_image(tmp_path, photo):
    rgb = open_rgb(photo)
    p = tmp_path / "pal.png"
    rgb.quantize(256).save(p)
    q = tmp_path / "rgb.png"
    rgb.save(q)
    assert dist(fp(p), fp(q)) <= 6


def test_exif_orientation_is_applied(tmp_path, photo):
    rgb = open_rgb(photo)
    upright = tmp_path / "upright.jpg"
    rgb.save(upright, quality=92)
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # display needs a 90-degree clockwise turn
    rgb.transpose(Image.Transpose.ROTATE_90).save(sideways, quality=92, exif=exif)
    a, b = fp(upright), fp(sideways)
    assert (b.width, b.height) == (rgb.width, rgb.height)
    assert dist(a, b) <= 4
    raw = fingerprint_file(str(sideways), HashSpec(orient=False))
    assert dist(a, raw) > 16


def test_draft_decoding_shrinks_big_jpegs(tmp_path, photo):
    big = open_rgb(photo).resize((2400, 1800))
    p = tmp_path / "big.jpg"
    big.save(p, quality=90)
    decoded = load_image(str(p), min_size=64)
    assert isinstance(decoded, DecodedImage)
    assert (decoded.width, decoded.height) == (2400, 1800)
    assert decoded.image.size == (300, 225)  # 1/8 scale straight from the DCT
    full = load_image(str(p))
    assert full.image.size == (2400, 1800)
    assert hamming(phash(decoded.image), phash(full.image)) <= 4


def test_vanished_file(tmp_path):
    err = load_image(str(tmp_path / "gone.jpg"))
    assert isinstance(err, ScanError) and "vanished" in err.message


def test_heic_opens_through_pillow_heif(tmp_path, photo):
    pillow_heif = pytest.importorskip("pillow_heif")
    rgb = open_rgb(photo)
    p = tmp_path / "phone.heic"
    try:
        pillow_heif.from_pillow(rgb).save(str(p), quality=90)
    except (RuntimeError, ValueError, OSError) as exc:  # an encoder-less libheif build
        pytest.skip(f"this pillow-heif cannot encode HEIC: {exc}")
    q = tmp_path / "same.png"
    rgb.save(q)
    assert dist(fp(p), fp(q)) <= 6


# --- The fast paths of the worker (issue 5) give the same fingerprints ----------


@pytest.mark.parametrize("hash_size", [8, 16])
def test_fast_dihedral_is_phash_dihedral_bit_for_bit(photos, hash_size):
    # phash_dihedral thresholds its eight rows from one partition; each row
    # must be exactly what np.median and pack_bits give, as pHash does.
    from dupfinder import hashes

    for path in photos[:12]:
        decoded = load_image(str(path), min_size=HashSpec(hash_size=hash_size).min_size, grey=True)
        for image in (decoded.image, decoded.image.convert("RGB"), decoded.image.convert("L")):
            block = hashes._dct_low(image, hash_size, 4)
            sign = (-1.0) ** np.arange(hash_size)
            upright = (block, block * sign, block * sign[:, None], block * sign * sign[:, None])
            reference = np.stack([hashes.pack_bits(b > np.median(b)) for b in upright + tuple(b.T for b in upright)])
            words, _ = hashes.phash_dihedral(image, hash_size=hash_size)
            assert np.array_equal(words, reference)
        f = fingerprint_file(str(path), HashSpec(hash_size=hash_size))
        words, _ = hashes.phash_dihedral(decoded.image, hash_size=hash_size)
        assert f.variants == "".join(hashes.to_hex(w) for w in words)


def test_fingerprint_row0_is_phash_of_the_decoded_image(photos):
    from dupfinder.hashes import to_hex

    spec = HashSpec()
    for path in photos[:12]:
        decoded = load_image(str(path), min_size=spec.min_size, grey=True)
        f = fingerprint_file(str(path), spec)
        assert f.hash == to_hex(phash(decoded.image))


def test_compat_imagehash_takes_scipys_dct_for_every_orientation(tmp_path):
    # A diagonal ramp ties DCT coefficients with the median in its mirrored
    # and turned hashes: the scan's own (numpy) DCT sets some of those bits
    # otherwise; --compat imagehash must give ImageHash's (scipy's) bits.
    from dupfinder import hashes

    y, x = np.mgrid[0:64, 0:64]
    p = tmp_path / "ramp.png"
    Image.fromarray(((x + y) * 255 // 126).astype(np.uint8)).save(p)
    with Image.open(p) as image:
        exact, _ = hashes.phash_dihedral(image, hash_size=16, exact=True)
        fast, _ = hashes.phash_dihedral(image, hash_size=16)
    assert not np.array_equal(exact, fast)  # else this test proves nothing
    f = fingerprint_file(str(p), HashSpec(hash_size=16, compat="imagehash"))
    assert f.variants == "".join(hashes.to_hex(w) for w in exact)


def test_turn_operator_samples_like_pillow_rotate(photos):
    from dupfinder.fingerprint import (
        SMALL_TURNS,
        _inner_scale,
        _span,
        _turn_operator,
        _turned,
    )

    grey = open_rgb(photos[0]).convert("L").resize((128, 96), Image.Resampling.BOX)
    pixels = np.asarray(grey, dtype=np.float64)
    shapes = _turn_operator(96, 128)[2]
    flat = _turned(pixels)
    start = 0
    for degrees, (ch, cw) in zip(SMALL_TURNS, shapes):
        s = _inner_scale(128, 96, degrees)
        (y0, y1), (x0, x1) = _span((1 - s) / 2, (1 + s) / 2, 96), _span((1 - s) / 2, (1 + s) / 2, 128)
        pil = np.asarray(grey.rotate(degrees, resample=Image.Resampling.BILINEAR), dtype=np.float64)
        ours = flat[start : start + ch * cw].reshape(ch, cw)
        start += ch * cw
        # Pillow rounds to 8 bits; the operator does not.
        assert np.abs(ours - pil[y0:y1, x0:x1]).max() < 1.0


@pytest.mark.parametrize("size", [(1, 40), (40, 1), (2, 2), (3, 200), (128, 128), (300, 200)])
def test_extra_hashes_any_size(size):
    from dupfinder.fingerprint import N_EXTRAS, extra_hashes

    image = Image.effect_mandelbrot(size, (-2, -1.5, 1, 1.5), 100)
    assert extra_hashes(image).shape == (N_EXTRAS, 1)
    assert extra_hashes(image, hash_size=16).shape == (N_EXTRAS, 4)


def test_extra_hashes_flat_regions_do_not_vote():
    from dupfinder.fingerprint import N_CROPS, N_TURNS, REGIONS, extra_hashes

    # Top half flat grey, bottom half detailed: the top region (box 0) is 0.
    image = Image.new("L", (160, 120), 128)
    image.paste(Image.effect_mandelbrot((160, 60), (-2, -1.5, 1, 1.5), 100), (0, 60))
    out = extra_hashes(image)
    regions = out[N_CROPS + N_TURNS :, 0]
    assert len(regions) == len(REGIONS)
    assert regions[0] == 0 and regions[1] != 0
