"""The command line, through ``main(argv) -> int``."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import imagehash
import pytest
from PIL import Image

import dupfinder
from dupfinder.cli import ExitStatus, build_parser, main
from dupfinder.report import read_csv

from .conftest import SAMPLES, open_rgb


@pytest.fixture
def dup_tree(tmp_path, photos):
    folder = tmp_path / "tree"
    folder.mkdir()
    for src in photos[:4]:
        shutil.copyfile(src, folder / src.name)
    open_rgb(photos[0]).resize((160, 120)).save(folder / "small_copy.jpg", quality=85)
    return folder


def test_scan_finds_duplicates_and_exits_1(dup_tree, tmp_path, capsys):
    out = tmp_path / "r.csv"
    code = main(["scan", str(dup_tree), "--threshold", "5", "--workers", "0", "--output", str(out)])
    assert code == ExitStatus.DUPLICATES_FOUND == 1
    rows = read_csv(out)
    assert {Path(r["path"]).name for r in rows} == {"p0001.jpg", "small_copy.jpg"}
    err = capsys.readouterr().err
    assert "5 files (0 answered by the cache): 5 images hashed, 0 unreadable; 1 group, 1 duplicate" in err


def test_scan_without_duplicates_exits_0(photos, tmp_path):
    for src in photos[:3]:
        shutil.copyfile(src, tmp_path / src.name)
    assert main(["scan", str(tmp_path), "-j", "0", "-o", str(tmp_path / "r.csv")]) == 0


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["scan"]) == ExitStatus.ERROR
    assert main(["scan", str(tmp_path), "--threshold", "-3"]) == ExitStatus.ERROR
    assert "threshold must be 0 or more" in capsys.readouterr().err
    assert main(["scan", str(tmp_path), "--hash-size", "10"]) == ExitStatus.ERROR
    assert main(["frobnicate"]) == ExitStatus.ERROR


def test_quiet_prints_nothing(dup_tree, tmp_path, capsys):
    main(["scan", str(dup_tree), "-q", "-j", "0", "-o", str(tmp_path / "r.csv")])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_json_to_stdout(dup_tree, capsys):
    assert main(["scan", str(dup_tree), "-f", "json", "-q", "-j", "0"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["groups"] == 1


def test_errors_file_lists_unreadable(dup_tree, tmp_path, capsys):
    (dup_tree / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    errs = tmp_path / "errors.csv"
    code = main(["scan", str(dup_tree), "-j", "0", "-o", str(tmp_path / "r.csv"), "--errors", str(errs)])
    assert code == 1  # an unreadable file does not fail the run
    lines = errs.read_text().splitlines()
    assert lines[0] == "path,stage,message"
    assert lines[1].startswith(str(dup_tree / "broken.jpg"))
    assert "1 unreadable" in capsys.readouterr().err


def test_errors_go_to_stderr_when_no_other_place(dup_tree, capsys):
    (dup_tree / "broken.png").write_text("nope")
    main(["scan", str(dup_tree), "-j", "0"])
    err = capsys.readouterr().err
    assert f"{dup_tree / 'broken.png'}: open: not an image file" in err


def test_hash_command_prints_like_sha256sum(photos, capsys):
    code = main(["hash", str(photos[0]), str(photos[1])])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    for line, path in zip(lines, photos[:2]):
        hexhash, name = line.split("  ", 1)
        assert name == str(path)
        assert hexhash == str(imagehash.phash(Image.open(path)))


def test_hash_command_error_line_on_stderr(tmp_path, photos, capsys):
    code = main(["hash", str(photos[0]), str(tmp_path / "missing.jpg")])
    assert code == ExitStatus.ERROR
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1
    assert "missing.jpg: file vanished" in captured.err


@pytest.mark.parametrize("algorithm, fn", [("ahash", imagehash.average_hash), ("dhash", imagehash.dhash),
                                            ("phash", imagehash.phash), ("whash", imagehash.whash)])
@pytest.mark.parametrize("size", [8, 16])
def test_compat_imagehash_equals_imagehash_on_the_file(tmp_path, photos, capsys, algorithm, fn, size):
    # A sideways phone photo, where our default (orientation applied) differs.
    src = open_rgb(photos[3])
    p = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8
    src.transpose(Image.Transpose.ROTATE_270).resize((1200, 1600)).save(p, exif=exif, quality=90)
    main(["hash", "--compat", "imagehash", "-a", algorithm, "--hash-size", str(size), str(p)])
    ours = capsys.readouterr().out.split()[0]
    assert ours == str(fn(Image.open(p), hash_size=size))


def test_sample_images_scan_shows_groups(tmp_path):
    out = tmp_path / "r.csv"
    code = main(["scan", str(SAMPLES), "--threshold", "5", "--format", "csv", "-o", str(out), "-q"])
    assert code == 1
    groups = {}
    for r in read_csv(out):
        groups.setdefault(r["group"], set()).add(Path(r["path"]).name)
    assert {"china_half_size.jpg", "p0013.jpg"} in groups.values()
    assert {"p0002.jpg", "p0002_phone_sideways.jpg"} in groups.values()
    assert len(groups) >= 7


def test_python_dash_m_runs(tmp_path, photos):
    proc = subprocess.run([sys.executable, "-m", "dupfinder", "hash", str(photos[0])],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0
    assert proc.stdout.startswith(str(imagehash.phash(Image.open(photos[0]))))


def test_every_public_name_has_a_docstring():
    for name in dupfinder.__all__:
        if name == "__version__":
            continue
        obj = getattr(dupfinder, name)
        assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_every_cli_option_has_help():
    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)
            elif not isinstance(action, argparse._HelpAction):
                yield parser.prog, action

    for prog, action in walk(build_parser()):
        assert action.help, f"{prog} {action.option_strings or action.dest} has no help text"


def test_output_through_a_link_keeps_the_link(dup_tree, tmp_path):
    real = tmp_path / "reports" / "today.csv"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "latest.csv"
    link.symlink_to(real)
    assert main(["scan", str(dup_tree), "-q", "--no-cache", "-o", str(link)]) == ExitStatus.DUPLICATES_FOUND
    assert link.is_symlink() and read_csv(link) == read_csv(real) and len(read_csv(real)) == 2


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes here")
def test_output_to_a_named_pipe_or_a_device_is_written_through(dup_tree, tmp_path):
    # Renaming a finished report over a pipe or a device would replace it
    # with a file (as root: /dev/null itself); they are written to instead.
    import os
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    assert main(["scan", str(dup_tree), "-q", "--no-cache", "-o", str(fifo)]) == ExitStatus.DUPLICATES_FOUND
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and got[0].startswith("group,")
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    assert main(["scan", str(dup_tree), "-q", "--no-cache", "-o", str(null), "--errors", str(null)]) == 1
    assert null.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_dash_output_is_standard_output(dup_tree, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["scan", str(dup_tree), "-q", "--no-cache", "-f", "json", "-o", "-"]) == ExitStatus.DUPLICATES_FOUND
    assert json.loads(capsys.readouterr().out)["counts"]["groups"] == 1
    assert not (tmp_path / "-").exists()
    assert main(["index", "build", str(dup_tree), "--no-cache", "-o", "-"]) == ExitStatus.ERROR
    assert "give a file name" in capsys.readouterr().err


def test_a_path_that_does_not_exist_is_a_usage_error_not_an_empty_tree(tmp_path, capsys):
    # A mistyped folder or a drive not mounted tonight must not read as "no duplicates" (0).
    missing = str(tmp_path / "not-mounted")
    assert main(["scan", missing, "-q", "--no-cache"]) == ExitStatus.ERROR
    assert f"no such file or folder: {missing}" in capsys.readouterr().err
    assert main(["match", "-r", str(tmp_path), missing, "-q", "--no-cache"]) == ExitStatus.ERROR
    assert f"no such file or folder: {missing}" in capsys.readouterr().err


def test_quiet_still_lists_unreadable_files_that_nothing_else_keeps(dup_tree, tmp_path, capsys):
    (dup_tree / "broken.png").write_text("nope")
    main(["scan", str(dup_tree), "-q", "-j", "0", "-o", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err
    assert err.strip() == f"dupfinder: {dup_tree / 'broken.png'}: open: not an image file, or a format Pillow cannot read"
    main(["scan", str(dup_tree), "-q", "-j", "0", "-o", str(tmp_path / "r.csv"), "--errors", str(tmp_path / "e.csv")])
    assert capsys.readouterr().err == ""  # the errors file keeps them


def test_log_file_folder_is_made_and_a_bad_log_file_is_a_clear_error(dup_tree, tmp_path, capsys):
    log = tmp_path / "reports" / "new" / "dupfinder.log"
    (dup_tree / "broken.png").write_text("nope")
    assert main(["scan", str(dup_tree), "-q", "-j", "0", "-o", str(tmp_path / "r.csv"),
                 "--log-file", str(log)]) == ExitStatus.DUPLICATES_FOUND
    assert "broken.png: open: not an image file" in log.read_text()
    capsys.readouterr()
    code = main(["scan", str(dup_tree), "-q", "-j", "0", "--log-file", str(tmp_path)])  # a folder
    err = capsys.readouterr().err
    assert code == ExitStatus.ERROR and "--log-file" in err and "Traceback" not in err


def test_verbose_shows_no_pillow_debug_lines(dup_tree, tmp_path, capsys):
    open_rgb(next(dup_tree.iterdir())).save(dup_tree / "again.png")
    main(["scan", str(dup_tree), "-v", "-j", "0", "--no-cache", "-o", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err
    assert not any(line.startswith("dupfinder: STREAM") for line in err.splitlines())


@pytest.mark.parametrize("argv, says", [
    (["-t", "33"], "would match unrelated pictures"),
    (["--hash-size", "1000"], "up to 32"),
    (["-j", "-3"], "must be 0 or more"),
    (["--no-cache", "--cache", "x.sqlite"], "contradict"),
    (["-q", "-v"], "not allowed with"),
    (["-a", "pdq", "--hash-size", "8"], "always 256 bits"),
])
def test_options_that_contradict_or_cannot_work_are_refused(tmp_path, capsys, argv, says):
    assert main(["scan", str(tmp_path), *argv]) == ExitStatus.ERROR
    assert says in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_the_run_quietly(tmp_path):
    # `dupfinder scan ... | head -1`: exit 141 (128 + SIGPIPE) with nothing
    # on stderr, as other tools do, not "error: Broken pipe" and exit 2.
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the report comes
    try:
        proc = subprocess.run([sys.executable, "-m", "dupfinder", "scan", str(SAMPLES), "--no-cache", "-q", "-j", "0"],
                              stdout=write_end, stderr=subprocess.PIPE, cwd=tmp_path, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(Path(dupfinder.__file__).parent.parent)})
    finally:
        os.close(write_end)
    assert proc.returncode == ExitStatus.BROKEN_PIPE == 141
    assert proc.stderr == b""


def test_ignoring_two_files_with_the_same_bytes_says_why_not(dup_tree, tmp_path, capsys):
    first = next(iter(sorted(dup_tree.glob("*.jpg"))))
    shutil.copyfile(first, dup_tree / "same.jpg")
    cache = str(tmp_path / "c.sqlite")
    assert main(["ignore", "add", str(first), str(dup_tree / "same.jpg"), "--cache", cache]) == 0
    err = capsys.readouterr().err
    assert "hold the same bytes: not ignored" in err and "0 pairs added" in err


def test_cache_commands_do_not_make_a_cache_at_a_mistyped_path(tmp_path, capsys):
    typo = tmp_path / "cahce.sqlite"
    for command in ("info", "prune"):
        assert main(["cache", command, "--cache", str(typo)]) == ExitStatus.ERROR
        assert f"no cache at {typo}" in capsys.readouterr().err
    assert not typo.exists()


def test_summary_counts_blank_images_and_says_where_unreadable_files_are(dup_tree, capsys):
    Image.new("RGB", (300, 200), "white").save(dup_tree / "blank.png")
    (dup_tree / "broken.png").write_text("nope")
    main(["scan", str(dup_tree), "-j", "0", "--no-cache"])
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 blank or flat" in summary
    assert "1 unreadable (listed above; --errors FILE saves them); 1 group, 1 duplicate" in summary


def test_verbose_says_what_each_stage_did(dup_tree, tmp_path, capsys):
    main(["scan", str(dup_tree), "-v", "-j", "0", "--no-cache", "-o", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err
    assert "dupfinder: finding files: 5 of 5 files in" in err
    assert "dupfinder: hashing: 5 of 5 files in" in err and "dupfinder: grouping: in" in err


def test_summary_tells_folders_it_could_not_list_from_unreadable_files(dup_tree, tmp_path, monkeypatch, capsys):
    import importlib
    import os

    walk_module = importlib.import_module("dupfinder.walk")

    (dup_tree / "locked").mkdir()
    real = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(walk_module.os, "scandir", scandir)
    main(["scan", str(dup_tree), "-j", "0", "--no-cache", "-f", "json", "-o", str(tmp_path / "r.json")])
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "5 images hashed, 0 unreadable, 1 not listed (folders or links that cannot be read)" in summary


def test_a_root_that_links_to_a_file_another_root_lists_is_that_file(dup_tree, tmp_path, capsys):
    first = sorted(dup_tree.glob("*.jpg"))[1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "link.jpg").symlink_to(first)
    out = tmp_path / "r.json"
    main(["scan", str(dup_tree), str(elsewhere / "link.jpg"), "-q", "-j", "0", "--no-cache", "-f", "json",
          "-o", str(out)])
    doc = json.loads(out.read_text())
    assert doc["counts"]["found"] == 5 and doc["counts"]["groups"] == 1  # the tree's own pair only


def test_a_root_that_links_to_a_drive_that_is_gone_is_an_error(tmp_path, capsys):
    (tmp_path / "backup").symlink_to(tmp_path / "unmounted" / "photos")
    assert main(["scan", str(tmp_path / "backup"), "-q", "--no-cache"]) == ExitStatus.ERROR
    assert "no such file or folder" in capsys.readouterr().err


def test_a_report_onto_a_link_loop_is_refused_and_the_links_stay(dup_tree, tmp_path, capsys):
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    assert main(["scan", str(dup_tree), "-q", "-j", "0", "--no-cache", "-o", str(tmp_path / "loop1")]) == 2
    assert (tmp_path / "loop1").is_symlink() and "loop1" in capsys.readouterr().err
    folder = tmp_path / "reports"
    folder.mkdir()
    assert main(["scan", str(dup_tree), "-q", "-j", "0", "--no-cache", "-o", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "reports" in err and ".dupfinder-" not in err  # the report's name, not a temporary one


def test_a_cache_that_cannot_be_written_is_a_clear_error(dup_tree, tmp_path, monkeypatch, capsys):
    # A cache file on a read-only disk opens (for reading) and fails at the
    # first write: one line and exit 2, not a traceback.
    import sqlite3

    from dupfinder.cache import Cache

    def read_only(self):
        if self.path.endswith("ro.sqlite") and Path(self.path).exists():
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        return sqlite3.connect(self.path, isolation_level=None)

    cache = str(tmp_path / "ro.sqlite")
    Cache(cache).close()
    monkeypatch.setattr(Cache, "_connect", read_only)
    assert main(["scan", str(dup_tree), "-q", "-j", "0", "--cache", cache]) == ExitStatus.ERROR
    err = capsys.readouterr().err
    assert "error: the cache: attempt to write a readonly database" in err and "Traceback" not in err
