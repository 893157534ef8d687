"""``dupfinder match``: copies of protected originals, found in other trees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageEnhance

from dupfinder.cli import ExitStatus, main
from dupfinder.match import build_reference, match
from dupfinder.reference import IndexFormatError, load_reference, save_reference
from dupfinder.report import read_csv

from .conftest import open_rgb

T = Image.Transpose


def watermark(im: Image.Image) -> Image.Image:
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = im.size
    draw.rectangle((int(w * 0.55), int(h * 0.7), int(w * 0.95), int(h * 0.95)), fill=(255, 255, 255, 110))
    return Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")


def exif_sideways(im: Image.Image, path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    im.transpose(T.ROTATE_90).save(path, exif=exif, quality=90)


# name -> (how the copy is made, the transform the report must name)
COPIES = {
    "resized": (lambda im: im.resize((im.width // 2, im.height // 2)), ""),
    "q30": (lambda im: im, ""),
    "mirror": (lambda im: im.transpose(T.FLIP_LEFT_RIGHT), "mirror"),
    "rot90": (lambda im: im.transpose(T.ROTATE_90), "rot90"),
    "rot180": (lambda im: im.transpose(T.ROTATE_180), "rot180"),
    "rot270": (lambda im: im.transpose(T.ROTATE_270), "rot270"),
    "brighter": (lambda im: ImageEnhance.Brightness(im).enhance(1.2), ""),
    "grey": (lambda im: im.convert("L"), ""),
}


@pytest.fixture
def world(tmp_path, photos):
    """References (10 photos), targets (copies of 5 of them, plus 10 unrelated photos)."""
    refs = tmp_path / "refs"
    targets = tmp_path / "targets"
    refs.mkdir()
    targets.mkdir()
    protected = photos[:10]
    for src in protected:
        shutil.copyfile(src, refs / src.name)
    for src in photos[10:20]:
        shutil.copyfile(src, targets / src.name)
    for src in protected[:5]:
        im = open_rgb(src)
        for name, (make, _) in COPIES.items():
            make(im).save(targets / f"{src.stem}_{name}.jpg", quality=30 if name == "q30" else 85)
        exif_sideways(im, targets / f"{src.stem}_exif.jpg")
    return refs, targets, protected


def by_name(result):
    return {Path(m.path).name: m for m in result.matches}


def test_every_transform_kind_is_found_and_named(world):
    refs, targets, protected = world
    index, errors = build_reference([refs], workers=0)
    assert errors == () and len(index) == 10
    result = match([targets], index, workers=0)
    found = by_name(result)
    for src in protected[:5]:
        for name, (_, transform) in COPIES.items():
            m = found[f"{src.stem}_{name}.jpg"]
            assert Path(m.best.reference).name == src.name, name
            assert m.best.transform == transform, name
        assert found[f"{src.stem}_exif.jpg"].best.transform == ""
    # The unrelated photos match nothing.
    assert len(found) == 5 * (len(COPIES) + 1)
    assert result.counts["targets"] == 10 + 5 * (len(COPIES) + 1)


def test_no_reference_reference_pair_is_reported(world, tmp_path):
    refs, targets, protected = world
    # Two references that are near-duplicates of each other.
    open_rgb(protected[0]).resize((200, 150)).save(refs / "small_dup_of_first.jpg")
    result = match([targets], build_reference([refs], workers=0)[0], workers=0)
    for m in result.matches:
        assert Path(m.path).parent == targets
        assert all(Path(h.reference).parent == refs for h in m.hits)


def test_closest_reference_first_and_all_in_json(world, tmp_path):
    refs, targets, protected = world
    im = open_rgb(protected[0])
    ImageEnhance.Contrast(im).enhance(1.3).save(refs / "contrast_version.jpg", quality=90)
    result = match([targets], build_reference([refs], workers=0)[0], workers=0)
    m = by_name(result)[f"{protected[0].stem}_q30.jpg"]
    assert len(m.hits) >= 1
    assert [h.distance for h in m.hits] == sorted(h.distance for h in m.hits)
    out = tmp_path / "r.json"
    code = main(["match", "-r", str(refs), str(targets), "-f", "json", "-o", str(out), "-q", "-j", "0"])
    assert code == ExitStatus.DUPLICATES_FOUND
    doc = json.loads(out.read_text())
    entry = next(e for e in doc["matches"] if e["path"].endswith(f"{protected[0].stem}_q30.jpg"))
    assert [r["distance"] for r in entry["references"]] == sorted(r["distance"] for r in entry["references"])


def test_csv_columns_and_one_row_per_target(world, tmp_path):
    refs, targets, _ = world
    out = tmp_path / "r.csv"
    assert main(["match", "--reference", str(refs), str(targets), "-o", str(out), "-q", "-j", "0"]) == 1
    header = out.read_text().splitlines()[0].split(",")
    assert header[:5] == ["path", "reference", "distance", "transform", "algorithm"]
    rows = read_csv(out) if "group" in header else None
    assert rows is None  # a match report is not a scan report
    lines = out.read_text().splitlines()[1:]
    assert len(lines) == len({line.split(",")[0] for line in lines}) == 5 * (len(COPIES) + 1)


def test_hash_list_gives_the_same_matches_as_the_folder(world, tmp_path, capsys):
    refs, targets, _ = world
    capsys.readouterr()
    assert main(["hash", *sorted(str(p) for p in refs.iterdir())]) == 0
    (tmp_path / "hashes.txt").write_text(capsys.readouterr().out)
    folder = match([targets], build_reference([refs], workers=0)[0], workers=0)
    listed = match([targets], load_reference(tmp_path / "hashes.txt"), workers=0)
    assert [(m.path, m.best.reference, m.best.distance, m.best.transform) for m in listed.matches] == [
        (m.path, m.best.reference, m.best.distance, m.best.transform) for m in folder.matches
    ]


def test_csv_hash_list_with_labels_and_header(world, tmp_path):
    refs, targets, protected = world
    index, _ = build_reference([refs], workers=0)
    lines = ["hash,label"] + [f"{h[0]:016x},\"Photo {i}\"" for i, h in enumerate(index.hashes)]
    (tmp_path / "shared.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.csv"
    assert main(["match", "-r", str(tmp_path / "shared.csv"), str(targets), "-o", str(out), "-q", "-j", "0"]) == 1
    assert any(",Photo 0," in line for line in out.read_text().splitlines())


def test_index_build_then_match(world, tmp_path):
    refs, targets, _ = world
    idx = tmp_path / "refs.dfi"
    assert main(["index", "build", str(refs), "-o", str(idx), "-q", "-j", "0"]) == 0
    loaded = load_reference(idx)
    direct, _ = build_reference([refs], workers=0)
    assert loaded.labels == direct.labels and (loaded.hashes == direct.hashes).all()
    a = match([targets], loaded, workers=0)
    b = match([targets], direct, workers=0)
    assert a.matches == b.matches


@pytest.mark.parametrize("damage", ["truncated", "garbage-zip", "text-garbage", "empty"])
def test_corrupt_index_is_a_clear_error(world, tmp_path, capsys, damage):
    refs, targets, _ = world
    idx = tmp_path / "refs.dfi"
    save_reference(build_reference([refs], workers=0)[0], idx)
    data = idx.read_bytes()
    if damage == "truncated":
        idx.write_bytes(data[: len(data) // 2])
    elif damage == "garbage-zip":
        idx.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    elif damage == "text-garbage":
        idx.write_text("this is not a list of hashes\nnor this\n")
    else:
        idx.write_bytes(b"")
    with pytest.raises(IndexFormatError):
        load_reference(idx)
    capsys.readouterr()
    code = main(["match", "-r", str(idx), str(targets), "-q", "-j", "0"])
    err = capsys.readouterr().err
    assert code == ExitStatus.ERROR
    assert "Traceback" not in err and str(idx) in err


def test_streaming_in_small_chunks_gives_the_same_answer(world):
    refs, targets, _ = world
    index, _ = build_reference([refs], workers=0)
    assert match([targets], index, workers=0, chunk=3).matches == match([targets], index, workers=0).matches


def test_blank_targets_do_not_match_blank_references_unless_identical(tmp_path):
    refs, targets = tmp_path / "r", tmp_path / "t"
    refs.mkdir()
    targets.mkdir()
    Image.new("RGB", (400, 300), "white").save(refs / "white.png")
    Image.new("RGB", (800, 600), "white").save(targets / "other_white.png")
    shutil.copyfile(refs / "white.png", targets / "exact.png")
    result = match([targets], build_reference([refs], workers=0)[0], workers=0)
    assert [(Path(m.path).name, m.best.transform) for m in result.matches] == [("exact.png", "identical")]


def test_references_must_agree_on_the_hash(world, tmp_path, capsys):
    refs, targets, _ = world
    (tmp_path / "pdq.txt").write_text("0" * 64 + ",x\n")
    code = main(["match", "-r", str(refs), "-r", str(tmp_path / "pdq.txt"), str(targets), "-q", "-j", "0"])
    assert code == ExitStatus.ERROR
    assert "cannot be compared" in capsys.readouterr().err


def test_crops_turns_and_watermarks_are_found_through_an_index(world, tmp_path):
    from .test_transforms import badge, centre_crop, small_turn

    refs, targets, protected = world
    edits = {"crop20": lambda im: centre_crop(im, 0.2), "turn4": lambda im: small_turn(im, 4),
             "badge": badge, "crop20m": lambda im: centre_crop(im, 0.2).transpose(T.FLIP_LEFT_RIGHT)}
    for src in protected[:6]:
        for name, make in edits.items():
            make(open_rgb(src)).save(targets / f"{src.stem}_{name}.jpg", quality=88)
    idx = tmp_path / "refs.dfi"
    save_reference(build_reference([refs], workers=0)[0], idx)
    loaded = load_reference(idx)
    assert loaded.extras is not None and loaded.variants is not None
    found = by_name(match([targets], loaded, workers=0))
    for name in edits:
        hits = [found.get(f"{src.stem}_{name}.jpg") for src in protected[:6]]
        assert sum(h is not None for h in hits) >= 5, name
        for src, h in zip(protected[:6], hits):
            if h is not None:
                assert Path(h.best.reference).name == src.name
                assert h.best.transform in ("", "crop", "rotate", "edited", "crop+mirror", "rotate+mirror")


def test_a_mistyped_first_hash_is_an_error_not_a_header(world, tmp_path, capsys):
    # A rights holder must not lose a reference silently: only a first line
    # that is not hex at all ("hash,label") is a header.
    refs, targets, _ = world
    index, _ = build_reference([refs], workers=0)
    rows = [f"{h[0]:016x}  {label}" for h, label in zip(index.hashes, index.labels)]
    (tmp_path / "typo.txt").write_text("\n".join([rows[0][1:], *rows[1:]]) + "\n")  # 15 digits first
    assert main(["match", "-r", str(tmp_path / "typo.txt"), str(targets), "-q", "-j", "0"]) == ExitStatus.ERROR
    assert "typo.txt:1:" in capsys.readouterr().err


def test_options_that_cannot_fit_the_reference_are_refused(world, tmp_path, capsys):
    refs, targets, _ = world
    index, _ = build_reference([refs], workers=0)
    (tmp_path / "p64.txt").write_text("".join(f"{h[0]:016x}  {label}\n" for h, label in zip(index.hashes, index.labels)))
    # PDQ is 256 bits: a 64-bit list against it matched every target to every reference.
    assert main(["match", "-r", str(tmp_path / "p64.txt"), str(targets), "-a", "pdq", "-q", "-j", "0"]) == 2
    assert "64-bit hashes, and pdq gives 256-bit ones" in capsys.readouterr().err
    (tmp_path / "p256.txt").write_text("".join(f"{'ab' * 32}  x{i}\n" for i in range(3)))
    assert main(["match", "-r", str(tmp_path / "p256.txt"), str(targets), "-a", "phash", "--hash-size", "8",
                 "-q", "-j", "0"]) == 2
    assert "256-bit hashes, and phash at hash size 8 gives 64-bit ones" in capsys.readouterr().err
    assert main(["index", "build", str(refs), "-o", str(tmp_path / "refs.dfi"), "-q", "-j", "0"]) == 0
    assert main(["match", "-r", str(tmp_path / "refs.dfi"), str(targets), "-a", "dhash", "-q", "-j", "0"]) == 2
    assert "holds phash hashes" in capsys.readouterr().err


def test_one_image_file_is_a_reference(world, tmp_path, capsys):
    refs, targets, protected = world
    one = refs / protected[0].name
    result_code = main(["match", "-r", str(one), str(targets), "--no-cache", "-q", "-j", "0", "-f", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert result_code == ExitStatus.DUPLICATES_FOUND
    assert {Path(r["reference"]).name for m in doc["matches"] for r in m["references"]} == {one.name}
    assert len(doc["matches"]) >= len(COPIES)


def test_options_that_agree_with_an_index_are_accepted(world, tmp_path, capsys):
    refs, targets, _ = world
    for argv in (["-a", "phash", "--hash-size", "16"], ["-a", "pdq"]):
        idx = tmp_path / f"{argv[1]}.dfi"
        assert main(["index", "build", str(refs), "-o", str(idx), "-q", "-j", "0", "--no-cache", *argv]) == 0
        for given in (argv, argv[:2]):  # all of them, or only the algorithm
            code = main(["match", "-r", str(idx), str(targets), "-q", "-j", "0", "--no-cache", *given])
            assert code == ExitStatus.DUPLICATES_FOUND, (given, capsys.readouterr().err)
    assert main(["match", "-r", str(tmp_path / "phash.dfi"), str(targets), "-q", "--no-cache", "--hash-size", "8"]) == 2


def test_a_first_field_of_a_hashs_length_is_a_mistyped_hash_not_a_header(world, tmp_path, capsys):
    refs, targets, _ = world
    (tmp_path / "typo.csv").write_text("deadbeefdeadbeeg,one\n0123456789abcdef,two\n")
    assert main(["match", "-r", str(tmp_path / "typo.csv"), str(targets), "-q", "-j", "0"]) == ExitStatus.ERROR
    assert "typo.csv:1:" in capsys.readouterr().err
