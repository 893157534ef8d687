"""Defects found in review, each pinned by a test."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from dupfinder import hashing, scan
from dupfinder.cache import Cache
from dupfinder.cli import ExitStatus, main
from dupfinder.executor import ProcessExecutor
from dupfinder.reference import load_reference
from dupfinder.report import read_csv, write_report

from .conftest import open_rgb
from .test_transforms import centre_crop

_original_batch = hashing._hash_batch


_VICTIM = "p0005"


def _crash_on_victim(paths, spec, features=False):
    # Module level, so that forked workers can unpickle it by name.
    if any(_VICTIM in p for p in paths):
        os._exit(3)
    return _original_batch(paths, spec, features)


def test_a_folder_given_as_cache_is_refused_and_left_alone(tmp_path, photos, capsys):
    folder = tmp_path / "not-a-cache"
    folder.mkdir()
    (folder / "notes.txt").write_text("important")
    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    code = main(["scan", str(tmp_path / "a.jpg"), "--cache", str(folder), "-q", "-j", "0"])
    assert code == ExitStatus.ERROR
    assert "not a file" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "important"
    assert not list(tmp_path.glob("not-a-cache.broken-*"))


def test_a_crashing_file_fails_alone(tmp_path, photos, monkeypatch):
    for src in photos[:12]:
        shutil.copyfile(src, tmp_path / src.name)
    assert any(p.stem == _VICTIM for p in photos[:12])
    monkeypatch.setattr(hashing, "_hash_batch", _crash_on_victim)
    pool = ProcessExecutor(2)
    try:
        result = scan([tmp_path], executor=pool)
    finally:
        pool.close()
    assert [Path(e.path).stem for e in result.errors] == [_VICTIM]
    assert "crashed" in result.errors[0].message
    assert result.counts["hashed"] == 11


def test_ignoring_one_pair_keeps_a_crop_pair_of_the_same_group(tmp_path, photos):
    tree = tmp_path / "t"
    tree.mkdir()
    im = open_rgb(photos[12])
    im.save(tree / "a.png")
    centre_crop(im, 0.2).save(tree / "b_crop.jpg", quality=90)
    im.resize((im.width // 2, im.height // 2)).save(tree / "c_small.jpg", quality=90)
    db = tmp_path / "c.sqlite"
    with Cache(db) as cache:
        (g,) = scan([tree], workers=0, cache=cache).groups
        assert len(g) == 3
    assert main(["ignore", "add", str(tree / "a.png"), str(tree / "c_small.jpg"), "--cache", str(db)]) == 0
    with Cache(db) as cache:
        groups = scan([tree], workers=0, cache=cache).groups
    # The crop still pairs with the original (before the fix the whole group
    # vanished); the small copy may stay through the crop, never directly.
    assert any({"a.png", "b_crop.jpg"} <= {Path(m.path).name for m in g.members} for g in groups)


def test_one_file_under_two_spellings_is_not_its_own_duplicate(tmp_path, photos, monkeypatch):
    (tmp_path / "d").mkdir()
    shutil.copyfile(photos[0], tmp_path / "d" / "x.jpg")
    monkeypatch.chdir(tmp_path)
    result = scan(["d", str(tmp_path / "d" / "x.jpg")], workers=0)
    assert result.groups == () and result.counts["hashed"] == 1


def test_reports_get_the_usual_file_mode(tmp_path, photos):
    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    result = scan([tmp_path / "a.jpg"], workers=0)
    old = os.umask(0o022)
    try:
        write_report(result, output=tmp_path / "new.csv")
        existing = tmp_path / "old.csv"
        existing.write_text("x")
        os.chmod(existing, 0o664)
        write_report(result, output=existing)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE(existing.stat().st_mode) == 0o664


def test_hash_list_header_after_comments_and_blank_lines(tmp_path):
    p = tmp_path / "list.csv"
    p.write_text("# my originals\n\nhash,label\neae3a19c9c983b23,first\n")
    assert load_reference(p).labels == ("first",)


def test_first_new_since_run_marks_everything_new(tmp_path, photos):
    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    shutil.copyfile(photos[0], tmp_path / "b.jpg")
    out = tmp_path / "r.csv"
    main(["scan", str(tmp_path), "--new-since", "last", "--cache", str(tmp_path / "c.sqlite"),
          "-q", "-j", "0", "-o", str(out)])
    assert [r["new"] for r in read_csv(out)] == ["yes", "yes"]
