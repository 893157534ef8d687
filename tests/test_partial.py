"""``--partial``: crops at any offset, square cuts, pictures inside screenshots and collages."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

pytest.importorskip("cv2")

import dupfinder  # noqa: E402
from dupfinder.cli import ExitStatus, main  # noqa: E402
from dupfinder.match import build_reference, match  # noqa: E402
from dupfinder.models import UsageError  # noqa: E402
from dupfinder.partial import (  # noqa: E402
    Features,
    PartialMatch,
    find_partial,
    image_features,
    partial_relations,
    relations,
)

from .conftest import ORIGINALS, open_rgb  # noqa: E402

MIRROR = Image.Transpose.FLIP_LEFT_RIGHT
# Pairs of sample photos that look alike: two snowy mountain ranges, two
# pagodas, two couples, two portraits of a woman, two facades with rows of
# windows, two dark blue scenes.
LOOKALIKES = [("p0001", "p0009"), ("p0013", "p0033"), ("p0019", "p0030"), ("p0010", "p0023"),
              ("p0017", "p0037"), ("p0016", "p0022")]


def photo(stem: str) -> Image.Image:
    return open_rgb(next(ORIGINALS.glob(f"{stem}.*")))


def crop(im: Image.Image, box, scale: float = 1.0) -> Image.Image:
    part = im.crop(box)
    return part.resize((round(part.width * scale), round(part.height * scale)), Image.Resampling.LANCZOS)


def on_canvas(im: Image.Image, size, at, *, textured: bool = False) -> Image.Image:
    canvas = Image.new("RGB", size, (40, 90, 160))
    if textured:  # a page: bands of colour and lines of text around the picture
        draw = ImageDraw.Draw(canvas)
        for y in range(0, size[1], 14):
            draw.rectangle((0, y, size[0], y + 6), fill=(230, 230 - y % 50, 200))
            draw.text((4, y), "Lorem ipsum dolor sit amet consectetur " * 3, fill=(20, 20, 20))
    canvas.paste(im, at)
    return canvas


def collage(im: Image.Image, others, where: int) -> tuple[Image.Image, tuple]:
    w, h = im.size
    sheet = Image.new("RGB", (2 * w + 12, 2 * h + 12), "white")
    tiles = iter(o.resize((w, h)) for o in others)
    box = None
    for slot in range(4):
        x, y = 4 + (slot % 2) * (w + 4), 4 + (slot // 2) * (h + 4)
        if slot == where:
            sheet.paste(im, (x, y))
            box = (x, y, x + w, y + h)
        else:
            sheet.paste(next(tiles), (x, y))
    return sheet, box


def relation(original: Image.Image, copy: Image.Image) -> PartialMatch:
    found = find_partial([image_features(original), image_features(copy)])
    assert len(found) == 1, found
    return found[0]


def close(box, truth, tolerance: int = 4) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(box, truth))


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("stem, box, scale", [
    ("p0005", (70, 10, 320, 215), 1.0),  # ~67% of the area, off centre, touching an edge
    ("p0028", (0, 40, 270, 240), 0.8),  # ~70%, a corner, resized
    ("p0013", (180, 0, 607, 427), 0.75),  # a square cut at the right, resized
])
def test_a_crop_at_any_offset_is_found_with_its_box(stem, box, scale, mirrored):
    original = photo(stem)
    copy = crop(original, box, scale)
    if mirrored:
        copy = copy.transpose(MIRROR)
    m = relation(original, copy)
    assert (m.a, m.b, m.kind, m.mirrored) == (0, 1, "crop", mirrored)
    assert close(m.box, box), (m.box, box)
    assert m.transform == ("crop+mirror" if mirrored else "crop")


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("stem, size, at, textured", [
    ("p0020", (700, 520), (330, 40), False),  # the picture is 21% of a uniform canvas
    ("p0034", (460, 420), (20, 150), True),  # 40% of a page with text around it
])
def test_a_picture_inside_a_larger_frame_is_contained(stem, size, at, textured, mirrored):
    original = photo(stem)
    copy = on_canvas(original, size, at, textured=textured)
    truth = (at[0], at[1], at[0] + original.width, at[1] + original.height)
    if mirrored:
        copy = copy.transpose(MIRROR)
        truth = (size[0] - truth[2], truth[1], size[0] - truth[0], truth[3])
    m = relation(original, copy)
    assert (m.kind, m.mirrored) == ("contained", mirrored)
    # The canvas is scaled to 512 px for its features: a few pixels of it are more.
    assert close(m.box, truth, tolerance=6), (m.box, truth)


@pytest.mark.parametrize("where", [0, 3])
def test_a_picture_in_a_two_by_two_collage_is_found(where):
    original = photo("p0035")
    sheet, truth = collage(original, [photo(s) for s in ("p0006", "p0018", "p0027")], where)
    m = relation(original, sheet)
    assert m.kind == "contained"
    assert close(m.box, truth, tolerance=6), (m.box, truth)


def test_photos_that_look_alike_are_not_partial_copies(photos):
    # Every pair of the 36 sample photos, the look-alikes among them, and
    # crops of each look-alike against the other: no partial match at all.
    features = [image_features(open_rgb(p)) for p in photos]
    assert find_partial(features) == []
    for x, y in LOOKALIKES:
        a, b = photo(x), photo(y)
        w, h = b.size
        parts = [crop(b, (0, 0, int(w * 0.8), int(h * 0.8))), crop(b, (int(w * 0.25), 0, w, h))]
        sheet = on_canvas(b, (b.width + 200, b.height + 150), (100, 75))
        assert find_partial([image_features(a)], queries=[image_features(p) for p in [*parts, sheet]]) == [], (x, y)


def test_relations_name_both_directions():
    rel = relations([PartialMatch(3, 7, "contained", (10, 20, 110, 95), 40, False)])
    assert rel[3, 7] == ("contained", (10, 20, 110, 95))
    assert rel[7, 3] == ("crop", (10, 20, 110, 95))


def test_a_file_without_keypoints_is_just_not_matched():
    flat = image_features(Image.new("L", (320, 240), 128))
    assert len(flat) == 0
    assert find_partial([flat, image_features(photo("p0005")), None]) == []


@pytest.fixture
def partial_tree(tmp_path):
    """Three photos, a crop of one, a mirrored screenshot of another, and an unrelated photo."""
    folder = tmp_path / "tree"
    folder.mkdir()
    for stem in ("p0005", "p0020", "p0031"):
        shutil.copyfile(ORIGINALS / f"{stem}.jpg", folder / f"{stem}.jpg")
    crop(photo("p0005"), (70, 10, 320, 215)).save(folder / "cropped.jpg", quality=90)
    on_canvas(photo("p0020"), (600, 480), (200, 100), textured=True).transpose(MIRROR).save(
        folder / "screenshot.jpg", quality=90)
    return folder


def test_scan_groups_partial_copies_only_in_partial_mode(partial_tree):
    plain = dupfinder.scan([partial_tree], workers=0)
    assert plain.groups == ()
    result = dupfinder.scan([partial_tree], workers=0, partial=True)
    groups = {tuple(sorted(Path(m.path).name for m in g.members)): g for g in result.groups}
    assert set(groups) == {("cropped.jpg", "p0005.jpg"), ("p0020.jpg", "screenshot.jpg")}
    crop_group = groups["cropped.jpg", "p0005.jpg"]
    assert crop_group.keep.path.endswith("p0005.jpg")  # more pixels
    member = crop_group.members[1]
    assert (member.transform, close(member.box, (70, 10, 320, 215))) == ("crop", True)
    shot = groups["p0020.jpg", "screenshot.jpg"]
    assert shot.keep.path.endswith("screenshot.jpg")
    # The kept screenshot holds p0020 (mirrored) at x 600-520..600-200: p0020 is a part of it.
    assert shot.members[1].transform == "crop+mirror"
    assert close(shot.members[1].box, (80, 100, 400, 340), tolerance=6), shot.members[1].box


def test_cli_scan_partial_writes_the_box(partial_tree, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["scan", "--partial", "--no-cache", "--workers", "0", "-q", "-f", "json", "-o", str(out),
                 str(partial_tree)])
    assert code == ExitStatus.DUPLICATES_FOUND
    doc = json.loads(out.read_text())
    assert doc["settings"]["partial"] is True
    boxes = {Path(m["path"]).name: (m["transform"], m.get("box")) for g in doc["groups"] for m in g["members"]}
    assert boxes["cropped.jpg"][0] == "crop" and close(boxes["cropped.jpg"][1], (70, 10, 320, 215))
    assert boxes["p0005.jpg"] == ("", None)  # the kept file has no box
    # Without --partial the report has neither the setting nor boxes.
    code = main(["scan", "--no-cache", "--workers", "0", "-q", "-f", "json", "-o", str(out), str(partial_tree)])
    doc = json.loads(out.read_text())
    assert code == ExitStatus.NO_DUPLICATES and "partial" not in doc["settings"]


def test_match_partial_finds_targets_that_copy_part_of_a_reference(partial_tree, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for stem in ("p0005", "p0020"):
        shutil.copyfile(ORIGINALS / f"{stem}.jpg", refs / f"{stem}.jpg")
    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("cropped.jpg", "screenshot.jpg", "p0031.jpg"):
        shutil.copyfile(partial_tree / name, targets / name)
    index, _ = build_reference([refs], workers=0)
    assert match([targets], index, workers=0).matches == ()
    result = match([targets], index, workers=0, partial=True)
    assert match([targets], index, workers=2, partial=True).matches == result.matches  # the same in a pool
    got = {Path(m.path).name: (Path(m.best.reference).name, m.best.transform) for m in result.matches}
    assert got == {"cropped.jpg": ("p0005.jpg", "crop"), "screenshot.jpg": ("p0020.jpg", "contained+mirror")}
    shot = next(m for m in result.matches if m.path.endswith("screenshot.jpg"))
    assert close(shot.best.box, (80, 100, 400, 340), tolerance=6), shot.best.box

    out = tmp_path / "copies.json"
    code = main(["match", "--partial", "--no-cache", "--workers", "0", "-q", "-r", str(refs), "-f", "json",
                 "-o", str(out), str(targets)])
    assert code == ExitStatus.DUPLICATES_FOUND
    doc = json.loads(out.read_text())
    hits = {Path(m["path"]).name: m["references"][0] for m in doc["matches"]}
    assert hits["cropped.jpg"]["transform"] == "crop" and len(hits["cropped.jpg"]["box"]) == 4


def test_partial_without_opencv_says_how_to_install_it(partial_tree, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", None)  # "import cv2" now raises ImportError
    with pytest.raises(UsageError, match="pip install 'dupfinder\\[partial\\]'"):
        dupfinder.scan([partial_tree], workers=0, partial=True)
    code = main(["scan", "--partial", "--no-cache", "--workers", "0", str(partial_tree)])
    err = capsys.readouterr().err
    assert code == ExitStatus.ERROR
    assert "pip install 'dupfinder[partial]'" in err and "Traceback" not in err
    code = main(["match", "--partial", "--no-cache", "--workers", "0", "-r", str(partial_tree), str(partial_tree)])
    assert code == ExitStatus.ERROR
    assert "pip install 'dupfinder[partial]'" in capsys.readouterr().err
    # Without --partial nothing needs OpenCV.
    assert main(["scan", "--no-cache", "--workers", "0", "-q", str(partial_tree)]) == ExitStatus.NO_DUPLICATES


def test_the_default_scan_imports_neither_opencv_nor_the_partial_module(partial_tree):
    code = (
        "import sys, dupfinder; dupfinder.scan([sys.argv[1]], workers=0); "
        "print('cv2' in sys.modules, 'dupfinder.partial' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(partial_tree)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["False", "False"]


def _counting_features(monkeypatch) -> list:
    # Every file whose local features are computed (in process: workers=0).
    import dupfinder.partial_features as pf
    import dupfinder.partial_refs as pr

    seen: list[str] = []
    real = pf.file_features

    def counting(path, **kw):
        seen.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(pf, "file_features", counting)
    monkeypatch.setattr(pr, "file_features", counting)  # match --partial's workers
    return seen


def test_a_cached_rescan_computes_no_features_and_gives_the_same_groups(partial_tree, tmp_path, monkeypatch):
    from dupfinder.cache import Cache

    computed = _counting_features(monkeypatch)
    with Cache(str(tmp_path / "cache.sqlite")) as cache:
        first = dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        assert sorted(computed) == sorted(p.name for p in partial_tree.iterdir())
        computed.clear()
        again = dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
    assert computed == []
    assert again.counts["cached"] == len(again.files)
    assert first.groups == again.groups
    assert first.groups == dupfinder.scan([partial_tree], workers=0, partial=True).groups


def _refs_and_targets(partial_tree, tmp_path) -> tuple[Path, Path]:
    refs, targets = tmp_path / "refs", tmp_path / "targets"
    refs.mkdir()
    targets.mkdir()
    for stem in ("p0005", "p0020"):
        shutil.copyfile(ORIGINALS / f"{stem}.jpg", refs / f"{stem}.jpg")
    for name in ("cropped.jpg", "screenshot.jpg", "p0031.jpg"):
        shutil.copyfile(partial_tree / name, targets / name)
    return refs, targets


def test_a_nightly_match_partial_computes_only_the_new_targets_features(partial_tree, tmp_path, monkeypatch):
    # match --partial keeps the targets' features in the cache, as scan
    # does: the second night decodes only what is new.
    from dupfinder.cache import Cache

    refs, targets = _refs_and_targets(partial_tree, tmp_path)
    computed = _counting_features(monkeypatch)
    with Cache(str(tmp_path / "cache.sqlite")) as cache:
        index, _ = build_reference([refs], workers=0, cache=cache)  # as match --reference FOLDER does
        first = match([targets], index, workers=0, partial=True, cache=cache)
        assert sorted(computed) == ["cropped.jpg", "p0005.jpg", "p0020.jpg", "p0031.jpg", "screenshot.jpg"]
        computed.clear()
        index, _ = build_reference([refs], workers=0, cache=cache)
        again = match([targets], index, workers=0, partial=True, cache=cache)
        assert computed == []
        assert again.matches == first.matches
        crop(photo("p0005"), (40, 30, 300, 230)).save(targets / "new.jpg", quality=85)
        # New originals: p0031's bytes are a target's, whose features are cached.
        for stem in ("p0028", "p0031"):
            shutil.copyfile(ORIGINALS / f"{stem}.jpg", refs / f"{stem}.jpg")
        computed.clear()
        index, _ = build_reference([refs], workers=0, cache=cache)
        third = match([targets], index, workers=0, partial=True, cache=cache)
        assert sorted(computed) == ["new.jpg", "p0028.jpg"]
        # An original touched since its index was built: its cached features
        # are not taken on trust, it is read again.
        os.utime(refs / "p0005.jpg", ns=(1, 10**18))
        computed.clear()
        match([targets], index, workers=0, partial=True, cache=cache)
        assert computed == ["p0005.jpg"]
    got = {Path(m.path).name: (Path(m.best.reference).name, m.best.transform) for m in third.matches}
    assert got == {"cropped.jpg": ("p0005.jpg", "crop"), "screenshot.jpg": ("p0020.jpg", "contained+mirror"),
                   "new.jpg": ("p0005.jpg", "crop"), "p0031.jpg": ("p0031.jpg", "identical")}
    # The same answers as a run with no cache at all.
    assert third.matches == match([targets], index, workers=0, partial=True).matches


def test_match_partial_with_a_cache_it_cannot_write_still_answers(partial_tree, tmp_path):
    # A cache on a read-only mount (or another user's) serves what it holds;
    # features are just not kept, as hashes are not.
    import sqlite3

    from dupfinder.cache import Cache

    class ReadOnly(Cache):
        def _connect(self):
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)

    refs, targets = _refs_and_targets(partial_tree, tmp_path)
    path = tmp_path / "cache.sqlite"
    with Cache(str(path)) as cache:
        index, _ = build_reference([refs], workers=0, cache=cache)
        match([targets], index, workers=0, partial=True, cache=cache)
        crop(photo("p0005"), (40, 30, 300, 230)).save(targets / "new.jpg", quality=85)
        match([targets], index, workers=0, cache=cache)  # its hashes are cached, its features not
    with ReadOnly(str(path)) as cache:
        index, _ = build_reference([refs], workers=0, cache=cache)
        result = match([targets], index, workers=0, partial=True, cache=cache)
    assert result.matches == match([targets], index, workers=0, partial=True).matches
    assert {Path(m.path).name for m in result.matches} == {"cropped.jpg", "screenshot.jpg", "new.jpg"}


def test_features_of_both_orientation_settings_are_kept(partial_tree, tmp_path, monkeypatch):
    # A nightly scan and a match with --no-orient share a cache: neither may
    # drop the other's features (only older versions' are dropped).
    from dupfinder.cache import Cache

    computed = _counting_features(monkeypatch)
    with Cache(str(tmp_path / "cache.sqlite")) as cache:
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache, orient=False)
        computed.clear()
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache, orient=False)
        assert computed == []
        cache.db.execute("UPDATE features SET spec = 'orb:v0:an old version' WHERE rowid = 1")
        cache.commit()
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        assert cache.db.execute("SELECT count(*) FROM features WHERE spec LIKE 'orb:v0:%'").fetchone() == (0,)


def test_a_reference_listed_twice_matches_the_same_with_and_without_a_cache(partial_tree, tmp_path):
    from dupfinder.cache import Cache
    from dupfinder.reference import merge

    refs, targets = _refs_and_targets(partial_tree, tmp_path)
    with Cache(str(tmp_path / "cache.sqlite")) as cache:
        index = merge([build_reference([refs], workers=0, cache=cache)[0]] * 2)
        cold = match([targets], index, workers=0, partial=True, cache=cache)
        warm = match([targets], index, workers=0, partial=True, cache=cache)
    plain = match([targets], index, workers=0, partial=True)
    assert cold.matches == warm.matches == plain.matches
    cropped = next(m for m in plain.matches if m.path.endswith("cropped.jpg"))
    assert sorted(h.index for h in cropped.hits) == [0, 2]  # p0005 at both places


def test_match_progress_never_runs_backwards(partial_tree, tmp_path):
    refs, targets = _refs_and_targets(partial_tree, tmp_path)
    for k in range(3):  # byte-for-byte copies: a search for copies in each chunk
        shutil.copyfile(targets / "cropped.jpg", targets / f"again{k}.jpg")
    index, _ = build_reference([refs], workers=0)
    seen = []
    match([targets], index, workers=0, partial=True, progress=seen.append, chunk=2)
    bar = [p.done for p in seen if p.stage == "hash"]
    assert bar == sorted(bar) and bar[-1] == 6
    features = [(p.done, p.total) for p in seen if p.stage == "features"]  # the references'
    assert features[-1] == (2, 2)


def test_match_partial_takes_a_big_targets_features_from_its_hashing_decode(partial_tree, tmp_path, monkeypatch):
    # A camera-size JPEG drafts to 1/8 for the hashes and for the features
    # alike: it is decoded once, and matched as if its features were read apart.
    refs, targets = tmp_path / "refs", tmp_path / "targets"
    refs.mkdir()
    targets.mkdir()
    shutil.copyfile(ORIGINALS / "p0005.jpg", refs / "p0005.jpg")
    part = crop(photo("p0005"), (70, 10, 320, 215))
    part.resize((part.width * 11, part.height * 11), Image.Resampling.BICUBIC).save(targets / "big.jpg", quality=90)
    index, _ = build_reference([refs], workers=0)
    computed = _counting_features(monkeypatch)
    result = match([targets], index, workers=0, partial=True)
    assert computed == ["p0005.jpg"]  # the reference's only
    assert [(Path(m.path).name, m.best.transform) for m in result.matches] == [("big.jpg", "crop")]
    assert close(result.matches[0].best.box, (70, 10, 320, 215)), result.matches[0].best.box


def test_only_a_changed_file_gets_new_features(partial_tree, tmp_path, monkeypatch):
    from dupfinder.cache import Cache

    computed = _counting_features(monkeypatch)
    with Cache(str(tmp_path / "cache.sqlite")) as cache:
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        # cropped.jpg now shows another part of p0005: its box must move.
        crop(photo("p0005"), (0, 30, 250, 235)).save(partial_tree / "cropped.jpg", quality=90)
        os.utime(partial_tree / "cropped.jpg", ns=(1, 10**18))
        computed.clear()
        again = dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
    assert computed == ["cropped.jpg"]
    member = next(m for g in again.groups for m in g.members if m.path.endswith("cropped.jpg"))
    assert member.transform == "crop" and close(member.box, (0, 30, 250, 235)), member
    assert again.groups == dupfinder.scan([partial_tree], workers=0, partial=True).groups


def test_byte_for_byte_copies_are_matched_once_and_answer_as_their_first_file(partial_tree, monkeypatch):
    shutil.copyfile(partial_tree / "cropped.jpg", partial_tree / "cropped_copy.jpg")
    shutil.copyfile(partial_tree / "p0020.jpg", partial_tree / "p0020_copy.jpg")
    computed = _counting_features(monkeypatch)
    result = dupfinder.scan([partial_tree], workers=0, partial=True)
    assert sorted(computed) == ["cropped.jpg", "p0005.jpg", "p0020.jpg", "p0031.jpg", "screenshot.jpg"]
    groups = {tuple(sorted(Path(m.path).name for m in g.members)): g for g in result.groups}
    assert set(groups) == {("cropped.jpg", "cropped_copy.jpg", "p0005.jpg"),
                           ("p0020.jpg", "p0020_copy.jpg", "screenshot.jpg")}
    crops = [m for m in groups["cropped.jpg", "cropped_copy.jpg", "p0005.jpg"].members if not m.keep]
    assert [(m.transform, close(m.box, (70, 10, 320, 215))) for m in crops] == [("crop", True)] * 2
    shot = groups["p0020.jpg", "p0020_copy.jpg", "screenshot.jpg"]
    assert shot.keep.path.endswith("screenshot.jpg")
    inside = [m for m in shot.members if not m.keep]
    assert [(m.transform, close(m.box, (80, 100, 400, 340), tolerance=6)) for m in inside] == [("crop+mirror", True)] * 2


def test_when_the_first_of_two_copies_fails_the_next_stands_in(partial_tree, monkeypatch):
    # p0020.jpg vanishes (here: its features fail) after it was hashed: its
    # copy must still be matched with the screenshot that holds it.
    import dupfinder.partial_features as pf
    from dupfinder.models import ScanError

    shutil.copyfile(partial_tree / "p0020.jpg", partial_tree / "p0020_copy.jpg")
    real = pf.file_features

    def failing(path, **kw):
        if Path(path).name == "p0020.jpg":
            return ScanError(path, "open", "file vanished before it could be read")
        return real(path, **kw)

    monkeypatch.setattr(pf, "file_features", failing)
    seen = []
    result = dupfinder.scan([partial_tree], workers=0, partial=True, progress=seen.append)
    assert [(Path(e.path).name, e.stage) for e in result.errors] == [("p0020.jpg", "partial")]
    # The copy's round extends the one bar: it never runs backwards.
    bar = [(p.done, p.total) for p in seen if p.stage == "features"]
    assert bar == sorted(bar) and bar[-1] == (6, 6)  # five contents, then the copy
    shot = next(g for g in result.groups if g.keep.path.endswith("screenshot.jpg"))
    members = {Path(m.path).name: m.transform for m in shot.members if not m.keep}
    assert members["p0020_copy.jpg"] == "crop+mirror"


def test_damaged_cached_features_are_computed_again(partial_tree, tmp_path, monkeypatch):
    from dupfinder.cache import Cache

    computed = _counting_features(monkeypatch)
    path = str(tmp_path / "cache.sqlite")
    with Cache(path) as cache:
        first = dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        cache.db.execute("UPDATE features SET data = substr(data, 1, 100)")
        cache.commit()
        computed.clear()
        again = dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        assert sorted(computed) == sorted(p.name for p in partial_tree.iterdir())
        computed.clear()
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
    assert computed == []  # the damaged records were replaced
    assert again.groups == first.groups


def test_features_stored_under_other_settings_leave_the_cache(partial_tree, tmp_path):
    # An OpenCV upgrade or new settings change the key: the old rows would
    # never be read again, so a --partial scan drops them.
    from dupfinder.cache import Cache

    with Cache(str(tmp_path / "cache.sqlite")) as cache:
        cache.put_features(b"0" * 16, "orb:v0:opencv1.0", b"old")
        cache.commit()
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        specs = {s for (s,) in cache.db.execute("SELECT DISTINCT spec FROM features")}
    assert len(specs) == 1 and "orb:v0:opencv1.0" not in specs


def test_a_tree_too_big_for_partial_matching_is_refused_before_hashing(partial_tree, monkeypatch):
    import dupfinder.partial_votes as pv

    monkeypatch.setattr(pv, "MAX_FILES", 5)
    with pytest.raises(UsageError, match="up to 4 files"):
        dupfinder.scan([partial_tree], workers=0, partial=True)


def test_features_of_removed_files_leave_the_cache(partial_tree, tmp_path):
    from dupfinder.cache import Cache

    with Cache(str(tmp_path / "cache.sqlite")) as cache:
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        def count():
            return cache.db.execute("SELECT COUNT(*) FROM features").fetchone()[0]

        assert count() == 5 == cache.info().features  # what `dupfinder cache info` shows
        (partial_tree / "screenshot.jpg").unlink()
        dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
        assert count() == 4


def test_a_cache_made_before_the_features_table_gains_it(partial_tree, tmp_path):
    # Caches written by earlier versions have the same schema less this
    # table: they are opened as they are (their hashes kept), not rebuilt.
    import sqlite3

    from dupfinder.cache import Cache

    path = str(tmp_path / "cache.sqlite")
    with Cache(path) as cache:
        dupfinder.scan([partial_tree], workers=0, cache=cache)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE features")
    with Cache(path) as cache:
        again = dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
    assert again.counts["cached"] == len(again.files) == 5
    assert not list(tmp_path.glob("cache.sqlite.broken-*"))


def test_stored_features_round_trip_and_bad_records_are_refused():
    f = image_features(photo("p0005"))
    g = Features.from_bytes("x.jpg", f.to_bytes())
    for name in ("points", "descriptors", "mirrored", "thumb"):
        assert np.array_equal(getattr(f, name), getattr(g, name)), name
    assert (g.path, g.width, g.height, g.scale) == ("x.jpg", f.width, f.height, f.scale)
    data = f.to_bytes()
    for bad in (b"", data[:10], data[:-1], data + b"\0", b"XXXX" + data[4:]):
        with pytest.raises(ValueError):
            Features.from_bytes("x.jpg", bad)


def test_an_ignored_pair_is_not_grouped_by_its_partial_match(partial_tree, tmp_path):
    from dupfinder.cache import Cache

    with Cache(str(tmp_path / "cache.sqlite")) as cache:
        from dupfinder.fingerprint import file_digest

        cache.ignore(file_digest(str(partial_tree / "cropped.jpg")), file_digest(str(partial_tree / "p0005.jpg")))
        cache.commit()
        result = dupfinder.scan([partial_tree], workers=0, partial=True, cache=cache)
    names = [sorted(Path(m.path).name for m in g.members) for g in result.groups]
    assert names == [["p0020.jpg", "screenshot.jpg"]]


def test_match_partial_needs_reference_images(partial_tree, tmp_path, capsys):
    hashes = tmp_path / "hashes.txt"
    assert main(["hash", str(partial_tree / "p0005.jpg")]) == ExitStatus.NO_DUPLICATES
    hashes.write_text(capsys.readouterr().out.split()[0] + ",logo\n")
    code = main(["match", "--partial", "--no-cache", "--workers", "0", "-r", str(hashes), str(partial_tree)])
    assert code == ExitStatus.ERROR
    assert "needs the reference images" in capsys.readouterr().err


def test_guided_neighbours_are_the_nearest_within_the_radius():
    # The grid lookup that replaced scipy's k-d tree in the guided search.
    import numpy as np

    from dupfinder.partial_verify import _near

    rng = np.random.default_rng(8)
    points, targets = rng.uniform(-20, 300, (400, 2)), rng.uniform(0, 280, (500, 2))
    p, t = _near(points, targets, 12.0, 4)
    d2 = ((points[:, None] - targets[None]) ** 2).sum(axis=2)
    want = set()
    for i, row in enumerate(d2):
        nearest = np.argsort(row, kind="stable")[:4]
        want |= {(i, int(j)) for j in nearest if row[j] < 144.0}
    assert set(zip(p.tolist(), t.tolist())) == want
    assert len(p) == len(want) > 100


@functools.cache
def originals_and_copies() -> tuple[list, list]:
    """Features of four sample photos (and a None), and of a crop, a canvas, a mirrored crop and a
    collage of them, an unrelated photo, and a page around the first photo."""
    originals = [photo(s) for s in ("p0005", "p0020", "p0028", "p0035")]
    copies = [crop(originals[0], (70, 10, 320, 215)), on_canvas(originals[1], (700, 520), (330, 40)),
              crop(originals[2], (0, 40, 270, 240), 0.8).transpose(MIRROR),
              collage(originals[3], [photo(s) for s in ("p0006", "p0018", "p0027")], 3)[0]]
    refs = [image_features(im) for im in originals] + [None]
    # A second copy of the first photo: it and the crop are joined through
    # the photo, so partial_relations sets their pair aside.
    page = on_canvas(originals[0], (560, 420), (150, 120), textured=True)
    targets = [image_features(im) for im in [*copies, photo("p0031"), page]]
    return refs, targets


@pytest.mark.parametrize("pool", [False, True])
def test_lazy_relations_answer_every_pair_as_find_partial_does(pool, monkeypatch):
    # partial_relations sets aside the pairs already joined and verifies them
    # when asked: asked for every pair, it must say what find_partial says,
    # in one process and in a pool (where what is set aside depends on timing).
    from dupfinder import partial_pool
    from dupfinder.executor import ProcessExecutor

    refs, targets = originals_and_copies()
    features = refs + targets
    expected = relations(find_partial(features))
    monkeypatch.setattr(partial_pool, "POOL_MIN_CANDIDATES", 1)
    monkeypatch.setattr(partial_pool, "POOL_MIN_KEYPOINTS", 1)
    monkeypatch.setattr(partial_pool, "VERIFY_BATCH", 1)
    executor = ProcessExecutor(2) if pool else None
    seen = []
    try:
        rel = partial_relations(features, executor=executor, progress=seen.append)
    finally:
        if executor is not None:
            executor.close()
    # Progress: the candidate search (no total yet), then candidates decided, up to all of them.
    assert {p.stage for p in seen} == {"partial"} and seen[0].total is None
    done = [p.done for p in seen[1:]]
    assert done == sorted(done) and done[-1] == seen[-1].total > 0
    set_aside = list(rel._deferred)
    asked = {(i, j): rel[i, j] for i in range(len(features)) for j in range(len(features)) if (i, j) in rel}
    assert asked == expected
    assert len(expected) >= 10
    if not pool:
        assert set_aside  # some pairs were set aside, then asked for


def test_candidates_verified_in_worker_processes_give_the_same_matches(monkeypatch):
    # Crops, canvases and a collage of sample photos among other photos: the
    # pool (features memory-mapped from a FeatureTable) must answer exactly
    # as this process does, for a scan's pairs and for targets against references.
    from dupfinder import partial_pool
    from dupfinder.executor import ProcessExecutor

    monkeypatch.setattr(partial_pool, "POOL_MIN_CANDIDATES", 1)
    monkeypatch.setattr(partial_pool, "VERIFY_BATCH", 3)  # several batches, out of order
    refs, targets = originals_and_copies()
    executor = ProcessExecutor(2)
    try:
        pooled = find_partial(refs + targets, executor=executor)
        pooled_queries = find_partial(refs, queries=targets, executor=executor)
    finally:
        executor.close()
    inline = find_partial(refs + targets)
    assert pooled == inline
    assert {(m.a, m.b) for m in inline} >= {(0, 5), (1, 6), (2, 7), (3, 8)}
    assert pooled_queries == find_partial(refs, queries=targets)
    assert {(m.a, m.b, m.kind) for m in pooled_queries} == {
        (0, 0, "crop"), (1, 1, "contained"), (2, 2, "crop"), (3, 3, "contained"), (0, 5, "contained")}


def test_a_feature_table_round_trips_through_its_folder(tmp_path):
    from dupfinder.partial_table import FeatureTable

    features = [image_features(photo("p0005")), None, image_features(Image.new("L", (64, 48), 9)),
                image_features(photo("p0020").transpose(MIRROR))]
    FeatureTable.pack(features).save(tmp_path)
    table = FeatureTable.load(tmp_path)
    assert len(table) == 4 and table[1] is None
    for f, g in zip(features, table):
        if f is None:
            continue
        assert (f.width, f.height, f.scale) == (g.width, g.height, g.scale)
        for name in ("points", "descriptors", "mirrored", "thumb"):
            assert np.array_equal(getattr(f, name), getattr(g, name)), name
    empty = tmp_path / "empty"
    empty.mkdir()
    FeatureTable.pack([None, None]).save(empty)
    assert list(FeatureTable.load(empty)) == [None, None]


_PARENT = os.getpid()
_REAL = {}


def _vote_or_die(position, *, folder, keep=True):
    # Kills its worker process on position 3 (the parent counts it again).
    if os.getpid() != _PARENT and position == 3:
        os._exit(1)
    return _REAL["vote"](position, folder=folder, keep=keep)


def _verify_or_die(batch, *, folder):
    # Kills its worker process on the batch holding candidate 2 (keys: a start, or indices and span).
    key = batch[0]
    if os.getpid() != _PARENT and (key == 2 if isinstance(key, int) else 2 in key[0]):
        os._exit(1)
    return _REAL["verify"](batch, folder=folder)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="the patch reaches forked workers only")
def test_a_worker_that_dies_changes_no_answer(monkeypatch):
    # A dead worker (the OS killed it, a library crashed) loses its batches:
    # their votes are counted again, their candidates verified when asked.
    from dupfinder import partial_pool
    from dupfinder.executor import ProcessExecutor

    refs, targets = originals_and_copies()
    features = refs + targets
    expected = relations(find_partial(features))
    for name, value in (("POOL_MIN_CANDIDATES", 1), ("POOL_MIN_KEYPOINTS", 1), ("VERIFY_BATCH", 1)):
        monkeypatch.setattr(partial_pool, name, value)
    _REAL.update(vote=partial_pool._vote_task, verify=partial_pool._verify_batch)
    monkeypatch.setattr(partial_pool, "_vote_task", _vote_or_die)
    monkeypatch.setattr(partial_pool, "_verify_batch", _verify_or_die)
    executor = ProcessExecutor(2, start_method="fork")
    try:
        rel = partial_relations(features, executor=executor)
        pooled = find_partial(features, executor=executor)
    finally:
        executor.close()
    asked = {(i, j): rel[i, j] for i in range(len(features)) for j in range(len(features)) if (i, j) in rel}
    assert asked == expected
    assert pooled == find_partial(features)


@pytest.mark.parametrize("pool", [False, True])
def test_targets_matched_in_the_workers_against_written_references_as_find_partial_does(pool, tmp_path,
                                                                                       monkeypatch):
    # match --partial: each worker computes a batch of targets' features and
    # looks them up in the references' presorted words; the answers must be
    # find_partial's, the references' words sorted once, not per batch.
    from dupfinder.executor import InlineExecutor, ProcessExecutor
    from dupfinder.partial import file_features
    from dupfinder.partial_refs import references

    refs, _ = originals_and_copies()
    originals = [photo(s) for s in ("p0005", "p0020", "p0028", "p0035")]
    images = [crop(originals[0], (70, 10, 320, 215)), on_canvas(originals[1], (700, 520), (330, 40)),
              crop(originals[2], (0, 40, 270, 240), 0.8).transpose(MIRROR), photo("p0031"),
              on_canvas(originals[0], (560, 420), (150, 120), textured=True)]
    paths = []
    for k, im in enumerate(images):
        paths.append(str(tmp_path / f"target{k}.png"))
        im.save(paths[-1])
    paths.append(str(tmp_path / "missing.png"))
    targets = [file_features(p) for p in paths]
    targets = [t if not isinstance(t, dupfinder.ScanError) else None for t in targets]
    expected = sorted((m.a, paths[m.b], m.kind, m.box, m.mirrored) for m in find_partial(refs, queries=targets))
    monkeypatch.setattr(dupfinder.hashing, "batch_size", lambda jobs, workers: 2)  # several batches
    executor = ProcessExecutor(2) if pool else InlineExecutor()
    # Every other target comes with its features (as from the cache); the
    # workers compute the rest and hand them back.
    given = {p: t for k, (p, t) in enumerate(zip(paths, targets)) if k % 2}
    computed = {}
    try:
        with references(refs, executor=executor) as written:
            answers = list(written.match(paths, workers=2, known=given.get, computed=computed.__setitem__))
    finally:
        executor.close()
    assert sorted(computed) == [p for p in paths if p not in given and not p.endswith("missing.png")]
    assert all(computed[p].descriptors.tobytes() == targets[paths.index(p)].descriptors.tobytes() for p in computed)
    assert len({path for path, _ in answers}) == len(answers)  # a target once
    # missing.png was "hashed" (by this test) but is not there: an error row, not silence.
    failed = {Path(path).name: found.stage for path, found in answers if isinstance(found, dupfinder.ScanError)}
    assert failed == {"missing.png": "partial"}
    answers = [(path, found) for path, found in answers if not isinstance(found, dupfinder.ScanError)]
    assert all(m.b == path for path, found in answers for m in found)
    got = sorted((m.a, path, m.kind, m.box, m.mirrored) for path, found in answers for m in found)
    assert got == expected
    assert {(a, Path(p).name, kind) for a, p, kind, _, _ in got} == {
        (0, "target0.png", "crop"), (1, "target1.png", "contained"), (2, "target2.png", "crop"),
        (0, "target4.png", "contained")}


def _match_or_die(targets, *, folder, orient, keep):
    # Kills its worker process on any batch holding target1.png.
    if os.getpid() != _PARENT and any(p.endswith("target1.png") for p, _ in targets):
        os._exit(1)
    return _REAL["match"](targets, folder=folder, orient=orient, keep=keep)


def _features_or_die(paths, orient=True):
    if os.getpid() != _PARENT and any(p.endswith("target1.png") for p in paths):
        os._exit(1)
    return _REAL["features"](paths, orient=orient)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="the patch reaches forked workers only")
def test_a_target_that_kills_its_worker_is_an_error_and_no_other_target_loses_its_matches(tmp_path, monkeypatch):
    from dupfinder import partial_features, partial_refs
    from dupfinder.executor import ProcessExecutor
    from dupfinder.partial import features_for
    from dupfinder.partial_refs import references

    refs, _ = originals_and_copies()
    originals = [photo(s) for s in ("p0005", "p0020", "p0028")]
    images = [crop(originals[0], (70, 10, 320, 215)), on_canvas(originals[1], (700, 520), (330, 40)),
              crop(originals[2], (0, 40, 270, 240), 0.8).transpose(MIRROR)]
    paths = []
    for k, im in enumerate(images):
        paths.append(str(tmp_path / f"target{k}.png"))
        im.save(paths[-1])
    _REAL.update(match=partial_refs._match_batch, features=partial_features.features_batch)
    monkeypatch.setattr(partial_refs, "_match_batch", _match_or_die)
    monkeypatch.setattr(partial_features, "features_batch", _features_or_die)
    monkeypatch.setattr(dupfinder.hashing, "batch_size", lambda jobs, workers: 1)  # one target a batch
    executor = ProcessExecutor(2, start_method="fork")
    try:
        with references(refs, executor=executor) as written:
            answers = dict(written.match(paths, workers=2))
        features = features_for(paths, executor=executor, workers=2)
    finally:
        executor.close()
    assert {Path(p).name: [m.a for m in found] for p, found in answers.items() if p != paths[1]} == {
        "target0.png": [0], "target2.png": [2]}
    assert answers[paths[1]].stage == "partial" and "worker process died" in answers[paths[1]].message
    assert [type(f).__name__ for f in features] == ["Features", "ScanError", "Features"]


def test_a_file_that_vanishes_after_hashing_is_an_error_row_of_the_partial_stage(partial_tree):
    # Hashed, then gone before its local features: the scan goes on, and says so.
    victim = partial_tree / "cropped.jpg"

    def progress(p):
        if p.stage == "hash" and p.total and p.done == p.total and victim.exists():
            victim.unlink()

    result = dupfinder.scan([partial_tree], workers=0, partial=True, progress=progress)
    errors = [(Path(e.path).name, e.stage, e.message) for e in result.errors]
    assert errors == [("cropped.jpg", "partial", "local features (--partial): file vanished before it could be read")]
    assert "cropped.jpg" in {Path(f.path).name for f in result.files}  # it was hashed
    grouped = {Path(m.path).name for g in result.groups for m in g.members}
    assert {"p0020.jpg", "screenshot.jpg"} <= grouped and "cropped.jpg" not in grouped


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 2**21 - 1), st.integers(0, 2**21 - 1), st.booleans(),
                                   st.integers(0, 1023), st.integers(0, 1023)), max_size=30), max_size=8))
def test_merged_votes_are_every_distinct_match_in_order(parts):
    # Each position's matches are packed in one word; merging keeps each
    # distinct match once, sorted by (i, j, mirrored, ki, kj) as the
    # grouping of candidate pairs expects.
    from dupfinder.partial_votes import merge_votes, packed

    def columns(rows):
        return tuple(np.array([r[c] for r in rows], dtype=bool if c == 2 else np.int64) for c in range(5))

    merged = merge_votes(packed(columns(rows)) for rows in parts)
    expected = sorted({r for rows in parts for r in rows})
    assert list(zip(*(a.tolist() for a in merged))) == expected


def test_votes_beyond_the_packed_range_are_a_clear_error():
    from dupfinder.partial_votes import MAX_FILES, packed

    one = np.array([0])
    with pytest.raises(UsageError, match="files of up to"):
        packed((np.array([MAX_FILES]), one, one.astype(bool), one, one))
    with pytest.raises(UsageError):
        packed((one, one, one.astype(bool), np.array([1024]), one))


@pytest.fixture
def large_files(tmp_path):
    """A 12 MP-class JPEG, the same stored sideways (EXIF 6), a PNG and a small JPEG of one photo."""
    folder = tmp_path / "large"
    folder.mkdir()
    big = photo("p0005").resize((2800, 2100), Image.Resampling.BICUBIC)
    big.save(folder / "big.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    big.transpose(Image.Transpose.ROTATE_90).save(folder / "sideways.jpg", quality=90, exif=exif)
    photo("p0020").save(folder / "page.png")
    photo("p0031").save(folder / "small.jpg", quality=90)
    return folder


def test_the_hashing_decode_gives_the_same_features_where_it_can(large_files):
    # A JPEG of 2048 px or more on its short side drafts to 1/8 for the
    # hashes and the features alike, a PNG is decoded whole for both: one
    # decode then serves both, and must give exactly file_features' answer.
    from dupfinder.fingerprint import (
        HashSpec,
        fingerprint_and_digest,
        fingerprint_digest_and_features,
    )
    from dupfinder.partial_features import file_features

    for name, served in (("big.jpg", True), ("sideways.jpg", True), ("page.png", True), ("small.jpg", False)):
        path = str(large_files / name)
        digest, outcome, features = fingerprint_digest_and_features(path, HashSpec())
        assert (digest, outcome) == fingerprint_and_digest(path, HashSpec()), name
        if not served:
            assert features is None, name
            continue
        alone = file_features(path)
        assert (features.width, features.height, features.scale) == (alone.width, alone.height, alone.scale)
        for field in ("points", "descriptors", "mirrored", "thumb"):
            assert np.array_equal(getattr(features, field), getattr(alone, field)), (name, field)


def test_a_partial_scan_decodes_large_photos_once(large_files, monkeypatch):
    crop(photo("p0005"), (70, 10, 320, 215)).save(large_files / "cropped.jpg", quality=90)
    computed = _counting_features(monkeypatch)
    result = dupfinder.scan([large_files], workers=0, partial=True)
    assert sorted(computed) == ["cropped.jpg", "small.jpg"]  # the others came with their hashes
    group = next(g for g in result.groups if any(m.path.endswith("cropped.jpg") for m in g.members))
    assert sorted(Path(m.path).name for m in group.members) == ["big.jpg", "cropped.jpg", "sideways.jpg"]
    cropped = next(m for m in group.members if m.path.endswith("cropped.jpg"))
    scale = 2800 / 320  # the box is in the kept file's pixels
    assert cropped.transform == "crop"
    assert close(cropped.box, tuple(round(v * scale) for v in (70, 10, 320, 215)), tolerance=40), cropped.box


def test_an_index_built_from_a_relative_folder_serves_match_partial_from_elsewhere(partial_tree, tmp_path,
                                                                                   monkeypatch):
    refs, targets = _refs_and_targets(partial_tree, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["index", "build", "refs", "-o", "refs.dfi", "--no-cache", "-q", "-j", "0"]) == ExitStatus.NO_DUPLICATES
    monkeypatch.chdir(targets)
    out = tmp_path / "copies.json"
    code = main(["match", "--partial", "-r", "../refs.dfi", ".", "--no-cache", "-q", "-j", "0", "-f", "json",
                 "-o", str(out)])
    assert code == ExitStatus.DUPLICATES_FOUND
    assert {m["references"][0]["reference"] for m in json.loads(out.read_text())["matches"]} == {
        str(refs / "p0005.jpg"), str(refs / "p0020.jpg")}
