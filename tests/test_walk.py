"""The walker: which files it takes, and how it reports what it cannot read."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dupfinder.models import FileEntry, ScanError
from dupfinder.walk import walk


def names(items):
    return sorted(Path(i.path).name for i in items if isinstance(i, FileEntry))


def errors(items):
    return [i for i in items if isinstance(i, ScanError)]


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_extensions_any_case_and_nothing_else(tmp_path):
    for name in ["a.jpg", "b.JPEG", "c.Png", "d.gif", "e.bmp", "f.tif", "g.TIFF", "h.webp",
                 "i.heic", "j.HEIF", "k.avif", "notes.txt", "raw.cr2", "noext"]:
        touch(tmp_path / name)
    assert names(walk([tmp_path])) == sorted(
        ["a.jpg", "b.JPEG", "c.Png", "d.gif", "e.bmp", "f.tif", "g.TIFF", "h.webp",
         "i.heic", "j.HEIF", "k.avif"]
    )


def test_recursive_and_sorted(tmp_path):
    touch(tmp_path / "z" / "deep" / "1.jpg")
    touch(tmp_path / "a" / "2.jpg")
    touch(tmp_path / "3.jpg")
    paths = [i.path for i in walk([tmp_path])]
    assert [Path(p).relative_to(tmp_path).as_posix() for p in paths] == ["3.jpg", "a/2.jpg", "z/deep/1.jpg"]


def test_entry_carries_size_and_mtime_ns(tmp_path):
    p = touch(tmp_path / "a.jpg", b"12345")
    os.utime(p, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (entry,) = list(walk([tmp_path]))
    assert entry.size == 5 and entry.mtime_ns == 1_600_000_000_123_456_789


def test_include_and_exclude_globs(tmp_path):
    touch(tmp_path / "keep" / "a.jpg")
    touch(tmp_path / "keep" / "b.png")
    touch(tmp_path / "thumbs" / "c.jpg")
    assert names(walk([tmp_path], include=["*.jpg"])) == ["a.jpg", "c.jpg"]
    assert names(walk([tmp_path], exclude=["thumbs"])) == ["a.jpg", "b.png"]
    assert names(walk([tmp_path], include=["*.jpg"], exclude=["*/thumbs/*"])) == ["a.jpg"]
    # include narrows the image files; it never adds a non-image.
    touch(tmp_path / "keep" / "notes.txt")
    assert "notes.txt" not in names(walk([tmp_path], include=["*"]))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_never_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    touch(tmp_path / "real.jpg")
    # If the walker opened the FIFO it would block here forever.
    assert names(walk([tmp_path])) == ["real.jpg"]


def test_symlinks_skipped_by_default_and_followed_on_request(tmp_path):
    target = touch(tmp_path / "elsewhere" / "t.jpg")
    scan_root = tmp_path / "root"
    scan_root.mkdir()
    (scan_root / "link.jpg").symlink_to(target)
    (scan_root / "dirlink").symlink_to(target.parent, target_is_directory=True)
    assert names(walk([scan_root])) == []
    # link.jpg and dirlink/t.jpg are one file: listed once, under the name
    # that is not itself a link.
    assert [os.path.relpath(e.path, scan_root) for e in walk([scan_root], follow_symlinks=True)] == [
        os.path.join("dirlink", "t.jpg")]
    (scan_root / "dirlink").unlink()
    assert names(walk([scan_root], follow_symlinks=True)) == ["link.jpg"]  # its file is outside the roots


def test_a_file_is_listed_once_whatever_its_names(tmp_path):
    # Hard links (after apply --action hardlink, in snapshot backups) and a
    # followed link next to its file take no extra space: not duplicates.
    real = touch(tmp_path / "zz_real.jpg")
    os.link(real, tmp_path / "bb_hard.jpg")
    (tmp_path / "aa_link.jpg").symlink_to(real.name)
    assert names(walk([tmp_path])) == ["bb_hard.jpg"]
    assert names(walk([tmp_path], follow_symlinks=True)) == ["bb_hard.jpg"]
    os.unlink(tmp_path / "bb_hard.jpg")
    assert names(walk([tmp_path], follow_symlinks=True)) == ["zz_real.jpg"]


def test_symlink_loop_ends(tmp_path):
    touch(tmp_path / "a" / "x.jpg")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    found = list(walk([tmp_path], follow_symlinks=True))
    assert names(found) == ["x.jpg"]
    assert not errors(found)


def test_missing_root_is_an_error_entry(tmp_path):
    found = list(walk([tmp_path / "nope"]))
    assert [(Path(e.path).name, e.stage) for e in errors(found)] == [("nope", "walk")]


def test_root_file_is_taken_even_with_odd_extension(tmp_path):
    p = touch(tmp_path / "picture.data")
    assert [i.path for i in walk([p])] == [str(p)]


_UNREADABLE_SCRIPT = r"""
import os, sys, json
from dupfinder.walk import walk
out = [(type(i).__name__, os.path.basename(i.path), getattr(i, "stage", ""), getattr(i, "message", ""))
       for i in walk([sys.argv[1]])]
print(json.dumps(out))
"""


def test_unreadable_folder_becomes_error_and_walk_goes_on(tmp_path):
    """A folder we may not list is an error entry; its siblings are still found.

    Root reads every folder, so the walk runs in a child process stripped of
    all capabilities (util-linux ``setpriv``), where permissions apply.
    """
    import json
    import shutil

    touch(tmp_path / "open" / "ok.jpg")
    touch(tmp_path / "secret" / "hidden.jpg")
    os.chmod(tmp_path / "secret", 0o000)
    try:
        command = [sys.executable, "-c", _UNREADABLE_SCRIPT, str(tmp_path)]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "running as root needs util-linux setpriv to drop capabilities"
            command = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--", *command]
        repo = Path(__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONPATH=str(repo))
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
        found = json.loads(out)
        assert ["FileEntry", "ok.jpg", "", ""] in found
        assert [f for f in found if f[0] == "ScanError"] == [
            ["ScanError", "secret", "walk", "Permission denied"]
        ]
    finally:
        os.chmod(tmp_path / "secret", 0o755)


def test_without_inode_numbers_every_file_is_listed(tmp_path, monkeypatch):
    # Windows' scandir (and some network file systems) give st_ino 0: names
    # cannot be told apart there, so none may be dropped as another's name.
    walk_module = importlib.import_module("dupfinder.walk")

    for name in ("a.jpg", "b.jpg", "c.jpg"):
        touch(tmp_path / name, name.encode())
    real = os.scandir

    class NoInode:
        def __init__(self, entry):
            self._entry = entry
            self.name, self.path = entry.name, entry.path

        def is_symlink(self):
            return self._entry.is_symlink()

        def stat(self, *, follow_symlinks=True):
            st = self._entry.stat(follow_symlinks=follow_symlinks)
            return os.stat_result((st.st_mode, 0, 0, 0, st.st_uid, st.st_gid, st.st_size,
                                   int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))

    class Listing:
        def __init__(self, path):
            self._it = real(path)

        def __enter__(self):
            return (NoInode(e) for e in self._it)

        def __exit__(self, *exc):
            self._it.close()

    monkeypatch.setattr(walk_module.os, "scandir", Listing)
    assert names(walk([tmp_path], follow_symlinks=True)) == ["a.jpg", "b.jpg", "c.jpg"]
