"""Detection quality: flipped and turned copies, blank images, byte-identical copies, PDQ."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from dupfinder import scan

from .conftest import open_rgb

T = Image.Transpose
# (file name suffix, how the copy is made, what the report must call it)
TURNS = [
    ("mirror", T.FLIP_LEFT_RIGHT, "mirror"),
    ("flip", T.FLIP_TOP_BOTTOM, "flip"),
    ("rot90", T.ROTATE_90, "rot90"),
    ("rot180", T.ROTATE_180, "rot180"),
    ("rot270", T.ROTATE_270, "rot270"),
    ("transpose", T.TRANSPOSE, "transpose"),
    ("transverse", T.TRANSVERSE, "transverse"),
]


def members_by_name(group):
    return {Path(m.path).name: m for m in group.members}


@pytest.fixture
def originals(tmp_path, photos):
    """Eight real photos, kept at a larger size so each is its group's kept file."""
    folder = tmp_path / "tree"
    folder.mkdir()
    chosen = [photos[i] for i in (0, 4, 9, 14, 19, 24, 29, 33)]
    for src in chosen:
        im = open_rgb(src)
        im.resize((im.width * 2, im.height * 2), Image.Resampling.LANCZOS).save(
            folder / f"{src.stem}.png", compress_level=1
        )
    return folder, chosen


@pytest.mark.parametrize("name, transpose, expected", TURNS, ids=[t[0] for t in TURNS])
def test_flipped_and_turned_copies_are_found_and_named(originals, name, transpose, expected):
    folder, chosen = originals
    for src in chosen:
        open_rgb(src).transpose(transpose).save(folder / f"{src.stem}_{name}.jpg", quality=85)
    result = scan([folder], workers=0)
    assert len(result.groups) == len(chosen)
    for g in result.groups:
        by_name = members_by_name(g)
        keep = g.keep
        assert not Path(keep.path).stem.endswith(name)
        copy = by_name[f"{Path(keep.path).stem}_{name}.jpg"]
        assert copy.transform == expected
        assert copy.distance <= 5


def test_without_transforms_turned_copies_are_not_found(originals):
    folder, chosen = originals
    for src in chosen:
        open_rgb(src).transpose(T.FLIP_LEFT_RIGHT).save(folder / f"{src.stem}_m.jpg", quality=85)
    assert scan([folder], workers=0, transforms=False).groups == ()


def test_exif_rotated_copies_are_found_as_is(originals):
    folder, chosen = originals
    for orientation, stored in ((6, T.ROTATE_90), (8, T.ROTATE_270), (3, T.ROTATE_180)):
        for src in chosen[:3]:
            exif = Image.Exif()
            exif[0x0112] = orientation
            open_rgb(src).transpose(stored).save(folder / f"{src.stem}_exif{orientation}.jpg", exif=exif)
    result = scan([folder], workers=0)
    assert len(result.groups) == 3
    for g in result.groups:
        assert len(g) == 4
        # A viewer shows them upright, so they are the same picture as is.
        assert all(m.transform == "" for m in g.members)


def test_recompressed_and_resized_still_as_is(originals):
    folder, chosen = originals
    for src in chosen:
        im = open_rgb(src)
        im.resize((im.width // 2, im.height // 2)).save(folder / f"{src.stem}_small.jpg", quality=40)
    result = scan([folder], workers=0)
    assert len(result.groups) == len(chosen)
    assert all(m.transform == "" for g in result.groups for m in g.members)


def test_unrelated_photos_do_not_pair_through_a_transform(photos, tmp_path):
    for src in photos:
        shutil.copyfile(src, tmp_path / src.name)
    result = scan([tmp_path], workers=0)
    assert result.groups == ()


@pytest.mark.parametrize("colour", [255, 0, 128])
def test_blank_images_do_not_form_groups(tmp_path, photos, colour):
    for i, size in enumerate([(640, 480), (800, 600), (320, 240), (1024, 768)]):
        Image.new("RGB", size, (colour, colour, colour)).save(tmp_path / f"blank{i}.png")
    Image.new("RGB", (500, 400), (colour, colour, colour)).save(tmp_path / "blank.jpg", quality=70)
    # A nearly flat image with a faint speck is still low information.
    speck = Image.new("L", (640, 480), colour)
    speck.putpixel((10, 10), (colour + 40) % 256)
    speck.save(tmp_path / "speck.png")
    shutil.copyfile(photos[0], tmp_path / "photo.jpg")
    result = scan([tmp_path], workers=0, threshold=10)
    assert result.groups == ()
    assert result.counts["low_information"] == 6


def test_byte_identical_files_group_whatever_the_threshold(tmp_path, photos):
    Image.new("RGB", (640, 480), "white").save(tmp_path / "white.png")
    shutil.copyfile(tmp_path / "white.png", tmp_path / "white copy.png")
    shutil.copyfile(photos[3], tmp_path / "a.jpg")
    shutil.copyfile(photos[3], tmp_path / "b.jpg")
    result = scan([tmp_path], workers=0, threshold=0)
    groups = sorted(sorted(Path(m.path).name for m in g.members) for g in result.groups)
    assert groups == [["a.jpg", "b.jpg"], ["white copy.png", "white.png"]]
    for g in result.groups:
        assert [m.transform for m in g.members] == ["", "identical"]


def test_tiny_images_are_low_information(tmp_path, photos):
    for i in range(3):
        open_rgb(photos[i]).resize((12, 9)).save(tmp_path / f"tiny{i}.png")
    result = scan([tmp_path], workers=0, threshold=12)
    assert result.groups == () and result.counts["low_information"] == 3


def test_pdq_pipeline_finds_turned_copies(originals):
    folder, chosen = originals
    for src in chosen[:4]:
        open_rgb(src).transpose(T.ROTATE_90).save(folder / f"{src.stem}_r.jpg", quality=80)
        im = open_rgb(src)
        im.resize((im.width // 2, im.height // 2)).save(folder / f"{src.stem}_s.jpg", quality=60)
    result = scan([folder], workers=0, algorithm="pdq")
    assert result.settings.threshold == 31
    assert len(result.groups) == 4
    for g in result.groups:
        by_name = members_by_name(g)
        stem = Path(g.keep.path).stem
        assert by_name[f"{stem}_r.jpg"].transform == "rot90"
        assert by_name[f"{stem}_s.jpg"].transform == ""
        assert len(g.keep.hash) == 64


def centre_crop(im: Image.Image, area_removed: float) -> Image.Image:
    keep = (1 - area_removed) ** 0.5
    w, h = im.size
    cw, ch = round(w * keep), round(h * keep)
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def small_turn(im: Image.Image, degrees: float) -> Image.Image:
    import math

    turned = im.rotate(degrees, resample=Image.Resampling.BICUBIC)
    a = math.radians(abs(degrees))
    s = 1 / (math.cos(a) + max(im.width / im.height, im.height / im.width) * math.sin(a))
    return centre_crop(turned, 1 - s * s)


def badge(im: Image.Image) -> Image.Image:
    """A translucent white 3:1 badge over about 15% of the frame, as stock sites stamp."""
    from PIL import ImageDraw

    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    w, h = im.size
    bw, bh = int(w * 0.67), int(h * 0.22)
    left, top = (w - bw) // 3, int(h * 0.6)
    ImageDraw.Draw(layer).rounded_rectangle((left, top, left + bw, top + bh), radius=bh // 5, fill=(255, 255, 255, 128))
    return Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")


EDITS = [
    ("crop10", lambda im: centre_crop(im, 0.10), "crop"),
    ("crop20", lambda im: centre_crop(im, 0.20), "crop"),
    ("turn4", lambda im: small_turn(im, 4), "rotate"),
    ("turn-3", lambda im: small_turn(im, -3), "rotate"),
    ("crop20_mirror", lambda im: centre_crop(im, 0.20).transpose(T.FLIP_LEFT_RIGHT), "crop+mirror"),
    ("badge", badge, "edited"),
]


@pytest.mark.parametrize("name, make, expected", EDITS, ids=[e[0] for e in EDITS])
def test_crops_small_turns_and_watermarks_are_found(originals, name, make, expected):
    folder, chosen = originals
    for src in chosen:
        make(open_rgb(src)).save(folder / f"{src.stem}_{name}.jpg", quality=88)
    result = scan([folder], workers=0)
    found = {Path(m.path).name: m for g in result.groups for m in g.members if not m.keep}
    hits = [found.get(f"{src.stem}_{name}.jpg") for src in chosen]
    # Copies join their original's group. bench/accuracy.py measures these
    # on 2130 files (crops and turns 100%, watermarks 97%); here the
    # originals are 2x upscales and the copies JPEGs, a harder pairing, so
    # one of the eight may be missed.
    missed = [src.name for src, h in zip(chosen, hits) if h is None]
    assert len(missed) <= 1, missed
    # A mild edit may leave the whole-image hash within the threshold (then
    # no transform is named), and a crop may also pass as a local edit.
    names = [h.transform for h in hits if h]
    assert set(names) <= {expected, "", "crop", "rotate", "edited"}, names
    assert sum(n in (expected, "") for n in names) >= len(names) // 2, names
    for g in result.groups:
        assert {Path(m.path).stem.split("_")[0] for m in g.members} == {Path(g.keep.path).stem.split("_")[0]}


def test_a_larger_threshold_does_not_widen_the_extra_hashes():
    """Crop, turn and region hashes compare parts of pictures and are capped at 6 bits.

    Without the cap the accuracy bench paired different photos from threshold 8 on.
    """
    import numpy as np

    from dupfinder.fingerprint import N_EXTRAS
    from dupfinder.robust import extra_pairs, relation

    rng = np.random.default_rng(7)
    words = rng.integers(0, 2**63, size=(2, N_EXTRAS + 8), dtype=np.uint64)
    extras = words[:, :N_EXTRAS].reshape(2, N_EXTRAS, 1).copy()
    variants = words[:, N_EXTRAS:].reshape(2, 8, 1).copy()
    # Make b's whole hash 8 bits from a's first crop hash, and keep the
    # regions and whole images far apart.
    variants[1, 0, 0] = extras[0, 0, 0] ^ np.uint64(0xFF)
    identity = variants[:, 0, :]
    assert relation(extras[0], variants[0], extras[1], variants[1], 10) is None
    assert len(extra_pairs(extras, identity, variants, 10)[0]) == 0
    variants[1, 0, 0] = extras[0, 0, 0] ^ np.uint64(0xF)  # 4 bits: within the cap
    identity = variants[:, 0, :]
    assert relation(extras[0], variants[0], extras[1], variants[1], 10) == (4, "crop")
    assert len(extra_pairs(extras, identity, variants, 10)[0]) == 1
