"""Reports: awkward file names round-trip, formulas stay text, writes are atomic."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dupfinder import read_csv, scan, write_report
from dupfinder.report import atomic_writer, escape_cell, unescape_cell

AWKWARD = [
    "comma, in name.jpg",
    'double "quoted".jpg',
    "new\nline.jpg",
    "=HYPERLINK(\"x\").jpg",
    "+plus.jpg",
    "-minus.jpg",
    "@at.jpg",
    "'quote.jpg",
    "tab\tname.jpg",
    "ünïcödé 写真.jpg",
]
if sys.platform.startswith("linux"):
    AWKWARD.append(os.fsdecode(b"latin1-\xe9t\xe9.jpg"))  # not UTF-8 at all
    AWKWARD += ["carriage\rreturn.jpg", "crlf\r\nname.jpg"]  # csv quotes only its own line end by itself


@pytest.fixture
def awkward_tree(tmp_path, photos):
    folder = tmp_path / "awkward"
    folder.mkdir()
    for name in AWKWARD:
        shutil.copyfile(photos[0], os.path.join(os.fsencode(folder), os.fsencode(name)))
    return folder


def test_awkward_names_round_trip_through_csv(awkward_tree, tmp_path):
    result = scan([awkward_tree], workers=0)
    (group,) = result.groups
    out = tmp_path / "report.csv"
    write_report(result, format="csv", output=out)
    rows = read_csv(out)
    assert sorted(r["path"] for r in rows) == sorted(str(awkward_tree / n) for n in AWKWARD)
    for r in rows:
        assert os.path.exists(os.fsencode(r["path"])), r["path"]


def test_awkward_names_round_trip_through_json(awkward_tree, tmp_path):
    result = scan([awkward_tree], workers=0)
    out = tmp_path / "report.json"
    write_report(result, format="json", output=out)
    raw = out.read_bytes()
    raw.decode("ascii")  # every byte of the document is plain ASCII JSON
    doc = json.loads(raw)
    paths = [m["path"] for g in doc["groups"] for m in g["members"]]
    assert sorted(paths) == sorted(str(awkward_tree / n) for n in AWKWARD)
    for p in paths:
        assert os.path.exists(os.fsencode(p))


def test_formula_cells_are_text_in_the_raw_csv(awkward_tree, tmp_path):
    result = scan([awkward_tree], workers=0)
    out = tmp_path / "report.csv"
    write_report(result, format="csv", output=out)
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as f:
        raw_paths = [row[1] for row in csv.reader(f)][1:]
    for p in raw_paths:
        # A path cell never starts with a formula character as stored.
        assert not p.startswith(("=", "+", "-", "@", "\t", "\r")), p


@given(st.text())
def test_escape_round_trips(value):
    assert unescape_cell(escape_cell(value)) == value
    assert not escape_cell(value).startswith(("=", "+", "-", "@", "\t", "\r"))


def test_bare_formula_names_are_escaped(tmp_path, photos, monkeypatch):
    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("=1+1.jpg", "-2.jpg"):
        shutil.copyfile(photos[1], folder / name)
    monkeypatch.chdir(folder)
    result = scan(["=1+1.jpg", "-2.jpg"], workers=0)
    out = tmp_path / "r.csv"
    write_report(result, output=out)
    text = out.read_text()
    assert "\n1,'=1+1.jpg," in text or "\n1,'-2.jpg," in text
    assert sorted(r["path"] for r in read_csv(out)) == ["-2.jpg", "=1+1.jpg"]


def test_json_document_has_settings_counts_groups_errors(tmp_path, photos):
    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    shutil.copyfile(photos[0], tmp_path / "b.jpg")
    (tmp_path / "bad.png").write_text("no")
    result = scan([tmp_path], workers=0, threshold=3)
    out = tmp_path / "r.json"
    write_report(result, format="json", output=out)
    doc = json.loads(out.read_text())
    assert doc["report_version"] == 1
    assert doc["settings"]["threshold"] == 3 and doc["settings"]["algorithm"] == "phash"
    assert doc["counts"]["groups"] == 1 and doc["counts"]["errors"] == 1
    assert [m["keep"] for m in doc["groups"][0]["members"]] == [True, False]
    assert doc["errors"] == [{"path": str(tmp_path / "bad.png"), "stage": "open",
                              "message": "not an image file, or a format Pillow cannot read"}]


def test_atomic_writer_keeps_the_old_report_on_failure(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("last night's report")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as f:
            f.write("half a rep")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "last night's report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_csv_columns(tmp_path, photos):
    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    shutil.copyfile(photos[0], tmp_path / "b.jpg")
    out = tmp_path / "r.csv"
    write_report(scan([tmp_path], workers=0), output=out)
    header = out.read_text().splitlines()[0].split(",")
    for col in ("group", "path", "keep", "distance", "width", "height", "bytes", "modified", "hash"):
        assert col in header
    rows = read_csv(out)
    assert [r["keep"] for r in rows] == ["yes", "no"]
    assert rows[0]["bytes"] == str(photos[0].stat().st_size)


def test_json_reports_are_what_json_dump_writes(tmp_path, photos):
    # The writer goes item by item through json's C encoder for speed; the
    # text must stay exactly json.dump's.
    import io

    from dupfinder.report import _json_document, render_json

    for src in photos[:4]:
        shutil.copyfile(src, tmp_path / src.name)
    shutil.copyfile(photos[0], tmp_path / "caf\u00e9 \"copy\".jpg")  # quotes and non-ASCII in a path
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = scan([tmp_path], workers=0)
    assert result.groups and result.errors
    ours, theirs = io.StringIO(), io.StringIO()
    render_json(result, ours)
    json.dump(_json_document(result), theirs, ensure_ascii=True)
    assert ours.getvalue() == theirs.getvalue() + "\n"
