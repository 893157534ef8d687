"""Acting on a reviewed report: dry runs touch nothing, every action undoes byte for byte.

The trees are real scans of copies of the sample photos, with resized and
recompressed variants made here, so the hashes checked before each step are
the ones a person's report would carry.
"""

from __future__ import annotations

import argparse
import csv
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

import dupfinder
from dupfinder import fileops
from dupfinder.actions import ACTIONS, apply_plan, plan_actions, purge, undo
from dupfinder.cli_actions import register
from dupfinder.journal import Journal, JournalError, read_journal
from dupfinder.report import CSV_COLUMNS, escape_cell, read_csv

from .conftest import open_rgb

REPO = Path(__file__).resolve().parent.parent
OLD = 1_600_000_000  # originals are older, so the keep rule picks them


class Tree:
    """A scanned folder of photos and their near-duplicates, with its CSV report."""

    def __init__(self, base: Path, photos: list[Path], *, extra_names: tuple[bytes, ...] = ()):
        self.base = base
        self.root = base / "photos"
        album, copies, protected = self.root / "album", self.root / "copies", self.root / "protected"
        for folder in (album, copies / "small", protected):
            folder.mkdir(parents=True)
        self.originals = []
        for i, src in enumerate(photos[:3]):
            original = album / src.name
            shutil.copyfile(src, original)
            os.utime(original, (OLD + i, OLD + i))
            self.originals.append(original)
            shutil.copyfile(src, copies / f"copy of {src.name}")
            open_rgb(src).save(copies / f"{src.stem}_q40.jpg", quality=40)
            image = open_rgb(src)
            image.resize((image.width // 2, image.height // 2)).save(copies / "small" / src.name, quality=90)
        shutil.copyfile(photos[0], protected / "kept_safe.jpg")
        for name in extra_names:
            shutil.copyfile(photos[1], os.path.join(os.fsencode(copies), name))
        self.protected = protected
        self.report = base / "report.csv"
        self.rescan()

    def rescan(self) -> None:
        self.result = dupfinder.scan([self.root], workers=0)
        dupfinder.write_report(self.result, format="csv", output=self.report)

    def rows(self) -> list[dict[str, str]]:
        return read_csv(self.report)

    def write_rows(self, rows: list[dict[str, str]]) -> None:
        with open(self.report, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({**r, "path": escape_cell(r["path"])})

    def kept(self) -> list[str]:
        return [r["path"] for r in self.rows() if r["keep"] == "yes"]

    def duplicates(self) -> list[str]:
        return [r["path"] for r in self.rows() if r["keep"] == "no"]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict:
    """Every file under a folder: size, modification time and SHA-256 (links by target)."""
    out = {}
    for root, _dirs, files in os.walk(os.fsencode(folder)):
        for name in files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            if os.path.islink(p):
                out[p] = ("link", os.readlink(p))
            else:
                digest = hashlib.sha256(Path(os.fsdecode(p)).read_bytes()).hexdigest()
                out[p] = (st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.fixture
def tree(tmp_path, photos) -> Tree:
    return Tree(tmp_path, photos)


def _plan(tree: Tree, action: str, **kw):
    to = tree.base / "moved" if action == "move" else None
    return plan_actions(tree.rows(), action=action, to=to, protect=[tree.protected], **kw)


def _apply(tree: Tree, action: str, journal: Path, **kw):
    return apply_plan(_plan(tree, action), journal_path=journal, dry_run=False,
                      trash_dir=tree.base / "Trash", **kw)


def test_the_tree_has_groups_with_variants(tree):
    assert len(tree.result.groups) == 3
    assert all(len(g) == 5 or len(g) == 4 for g in tree.result.groups)
    assert sorted(tree.kept()) == sorted(str(p) for p in tree.originals)


@pytest.mark.parametrize("action", ACTIONS)
def test_dry_run_changes_nothing_on_disk(tree, action):
    before = snapshot(tree.base)
    result = apply_plan(_plan(tree, action), journal_path=tree.base / "j.jsonl",
                        trash_dir=tree.base / "Trash")
    assert result.dry_run and len(result.done) == 9
    assert snapshot(tree.base) == before
    assert not (tree.base / "j.jsonl").exists()


@pytest.mark.parametrize("action", ACTIONS)
def test_apply_then_undo_restores_every_byte(tree, action):
    before = snapshot(tree.root)
    kept = {p: sha256(p) for p in tree.kept()}
    protected = snapshot(tree.protected)
    journal = tree.base / "j.jsonl"
    result = _apply(tree, action, journal)
    assert len(result.done) == 9 and not result.failed
    assert {s.path for s in result.skipped} == {str(tree.protected / "kept_safe.jpg")}
    assert {p: sha256(p) for p in kept} == kept
    assert snapshot(tree.protected) == protected
    for step in result.done:
        path = step.path
        if action == "hardlink":
            assert os.stat(path).st_ino == os.stat(step.keep.path).st_ino
        elif action == "symlink":
            assert os.readlink(path) == step.keep.path and os.path.isabs(os.readlink(path))
        else:
            assert not os.path.lexists(path)
    if action == "move":
        moved = tree.base / "moved"
        assert sorted(str(p.relative_to(moved)) for p in moved.rglob("*.jpg")) == [
            "copy of p0001.jpg", "copy of p0002.jpg", "copy of p0005.jpg",
            "p0001_q40.jpg", "p0002_q40.jpg", "p0005_q40.jpg",
            "small/p0001.jpg", "small/p0002.jpg", "small/p0005.jpg",
        ]
    outcome = undo(journal)
    assert outcome.ok and len(outcome.restored) == 9
    assert snapshot(tree.root) == before
    # Nothing of the apply is left: no backup, no trash entry, no moved folder.
    assert sorted(p.name for p in tree.base.iterdir()) == ["j.jsonl", "photos", "report.csv"]


def test_trash_follows_the_freedesktop_spec(tmp_path, photos, monkeypatch):
    name = "copy é 100%.jpg".encode()
    tree = Tree(tmp_path, photos, extra_names=(name,))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the home trash, not the real one
    monkeypatch.delenv("DUPFINDER_TRASH_DIR", raising=False)
    result = apply_plan(_plan(tree, "trash"), journal_path=tmp_path / "j.jsonl", dry_run=False)
    trash = tmp_path / "xdg" / "Trash"
    assert len(result.done) == 10 and len(list((trash / "files").iterdir())) == 10
    for info in (trash / "info").iterdir():
        lines = info.read_text(encoding="ascii").splitlines()
        assert lines[0] == "[Trash Info]"
        original = unquote(lines[1].removeprefix("Path="), encoding="utf-8", errors="surrogateescape")
        assert original in {s.path for s in result.done}
        assert re.fullmatch(r"DeletionDate=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", lines[2])
        assert (trash / "files" / info.name.removesuffix(".trashinfo")).is_file()
    assert "Path=" + str(tree.root / "copies").replace(" ", "%20") + "/copy%20%C3%A9%20100%25.jpg" in {
        info.read_text().splitlines()[1] for info in (trash / "info").iterdir()
    }
    assert (trash / "files").stat().st_mode & 0o777 == 0o700
    assert undo(tmp_path / "j.jsonl").ok
    assert not (tmp_path / "xdg").exists()  # the folders it made, and only those, are gone


def test_a_file_changed_after_the_scan_is_skipped(tree, photos):
    copies = tree.root / "copies"
    rewritten = copies / "copy of p0001.jpg"
    shutil.copyfile(photos[5], rewritten)  # another photo under the same name
    touched = copies / "p0002_q40.jpg"
    os.utime(touched, (time.time() + 60, time.time() + 60))
    # Same size and same time, other picture: only the perceptual hash tells.
    disguised = copies / "copy of p0005.jpg"
    st = disguised.stat()
    other = next(p for p in photos[6:] if p.stat().st_size <= st.st_size)
    disguised.write_bytes(other.read_bytes().ljust(st.st_size, b"\0"))
    os.utime(disguised, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = {str(rewritten), str(touched), str(disguised)}
    before = {p: sha256(p) for p in changed}
    result = _apply(tree, "delete", tree.base / "j.jsonl")
    reasons = {s.path: s.reason for s in result.skipped}
    assert "size changed" in reasons[str(rewritten)]
    assert "modified since the scan" in reasons[str(touched)]
    assert "picture changed" in reasons[str(disguised)]
    assert {p: sha256(p) for p in changed} == before
    assert len(result.done) == 6


def test_a_changed_kept_file_protects_its_whole_group(tree):
    kept = tree.originals[0]
    os.utime(kept, (OLD + 99, OLD + 99))
    before = snapshot(tree.root)
    result = _apply(tree, "delete", tree.base / "j.jsonl")
    group = [r["path"] for r in tree.rows() if r["group"] == "1" and r["keep"] == "no"]
    assert len(group) == 4
    reasons = {s.path: s.reason for s in result.skipped}
    for path in group:
        assert path not in {s.path for s in result.done}
        assert path not in reasons or "the kept file" in reasons[path] or "protected" in reasons[path]
    assert all(os.path.exists(p) for p in group)
    assert len(result.done) == 6
    undo(tree.base / "j.jsonl")
    assert snapshot(tree.root) == before


def test_a_vanished_kept_file_means_no_copy_is_removed(tree):
    gone = tree.originals[1]
    gone.unlink()
    result = _apply(tree, "delete", tree.base / "j.jsonl")
    group = [r["path"] for r in tree.rows() if r["keep"] == "no" and Path(r["path"]).name.find("p0002") >= 0]
    assert group and all(os.path.exists(p) for p in group)
    assert all("the kept file" in s.reason for s in result.skipped if s.path in group)


def test_the_persons_edits_to_the_csv_are_obeyed(tree):
    rows = tree.rows()
    by_group: dict[str, list[dict]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    g1, g2, g3 = (by_group[k] for k in ("1", "2", "3"))
    # Group 1: keep the recompressed copy instead of the original ("x" means yes).
    g1[0]["keep"] = "No"
    q40 = next(r for r in g1 if r["path"].endswith("_q40.jpg"))
    q40["keep"] = "x"
    # Group 2: the person deleted a row: that file is not touched.
    dropped = next(r for r in g2 if r["keep"] == "no")
    g2.remove(dropped)
    # Group 3: nothing marked keep: the whole group is left alone.
    for r in g3:
        r["keep"] = "false"
    tree.write_rows(g1 + g2 + g3)
    result = apply_plan(plan_actions(read_csv(tree.report), action="delete"),
                        journal_path=tree.base / "j.jsonl", dry_run=False)
    done = {s.path for s in result.done}
    assert g1[0]["path"] in done and os.path.exists(q40["path"]) and q40["path"] not in done
    assert os.path.exists(dropped["path"]) and dropped["path"] not in done
    assert all(os.path.exists(r["path"]) for r in g3)
    messages = [s.reason for s in result.skipped if s.group == "3"]
    assert messages and all("no file marked keep=yes" in m for m in messages)
    assert undo(tree.base / "j.jsonl").ok


def test_several_kept_rows_are_all_kept(tree):
    rows = tree.rows()
    group1 = [r for r in rows if r["group"] == "1"]
    for r in group1[:3]:
        r["keep"] = "yes"
    tree.write_rows(rows)
    plan = plan_actions(read_csv(tree.report), action="delete")
    planned = {s.path for s in plan.steps}
    assert not planned & {r["path"] for r in group1[:3]}
    assert planned & {r["path"] for r in group1[3:]} == {r["path"] for r in group1[3:]}


def test_protected_folders_are_compared_by_real_path(tree):
    alias = tree.base / "alias"
    alias.symlink_to(tree.protected)  # a link to the folder must not get around it
    for option in ("protect", "reference"):
        plan = plan_actions(tree.rows(), action="delete", **{option: [alias]})
        skipped = {s.path: s.reason for s in plan.skipped}
        target = str(tree.protected / "kept_safe.jpg")
        assert "protected" in skipped[target] and target not in {s.path for s in plan.steps}


def test_a_kept_file_is_never_acted_on_even_through_a_second_listing(tree):
    rows = tree.rows()
    kept = next(r for r in rows if r["keep"] == "yes")
    rows.append({**kept, "group": "2", "keep": "no"})  # the same file, listed as a duplicate elsewhere
    plan = plan_actions(rows, action="delete")
    assert kept["path"] not in {s.path for s in plan.steps}
    assert any(s.path == kept["path"] and "keep" in s.reason for s in plan.skipped)


def test_move_refuses_to_overwrite_and_honours_root(tree):
    to = tree.base / "moved"
    (to / "photos" / "copies").mkdir(parents=True)
    blocker = to / "photos" / "copies" / "copy of p0001.jpg"
    blocker.write_bytes(b"already here")
    plan = plan_actions(tree.rows(), action="move", to=to, root=tree.base, protect=[tree.protected])
    skipped = {s.path: s.reason for s in plan.skipped}
    assert "refusing to overwrite" in skipped[str(tree.root / "copies" / "copy of p0001.jpg")]
    result = apply_plan(plan, journal_path=tree.base / "j.jsonl", dry_run=False)
    assert blocker.read_bytes() == b"already here"
    assert (to / "photos" / "copies" / "small" / "p0001.jpg").is_file()
    assert len(result.done) == 8
    with pytest.raises(dupfinder.UsageError):
        plan_actions(tree.rows(), action="move")
    with pytest.raises(dupfinder.UsageError):
        plan_actions(tree.rows(), action="move", to=tree.protected / "x", protect=[tree.protected])


def _other_filesystem() -> str | None:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        if os.stat(shm).st_dev != os.stat(tempfile.gettempdir()).st_dev:
            return shm
    return None


@pytest.mark.skipif(_other_filesystem() is None, reason="needs /dev/shm on another file system")
def test_move_across_file_systems_and_back(tree):
    to = tempfile.mkdtemp(dir=_other_filesystem())
    try:
        before = snapshot(tree.root)
        plan = plan_actions(tree.rows(), action="move", to=to, protect=[tree.protected])
        result = apply_plan(plan, journal_path=tree.base / "j.jsonl", dry_run=False)
        assert len(result.done) == 9 and not result.failed
        moved = Path(to) / "copy of p0001.jpg"
        assert sha256(moved) == sha256(tree.originals[0])
        assert moved.stat().st_mtime_ns == before[os.fsencode(tree.root / "copies" / "copy of p0001.jpg")][1]
        assert undo(tree.base / "j.jsonl").ok
        assert snapshot(tree.root) == before
        assert os.listdir(to) == []
    finally:
        shutil.rmtree(to, ignore_errors=True)


@pytest.mark.skipif(_other_filesystem() is None, reason="needs /dev/shm on another file system")
def test_hardlink_is_refused_across_file_systems(tmp_path, photos):
    far = Path(tempfile.mkdtemp(dir=_other_filesystem()))
    try:
        shutil.copyfile(photos[0], tmp_path / "a.jpg")
        os.utime(tmp_path / "a.jpg", (OLD, OLD))
        shutil.copyfile(photos[0], far / "b.jpg")
        dupfinder.write_report(dupfinder.scan([tmp_path, far], workers=0), output=tmp_path / "r.csv")
        plan = plan_actions(read_csv(tmp_path / "r.csv"), action="hardlink")
        result = apply_plan(plan, journal_path=tmp_path / "j.jsonl", dry_run=False)
        assert not result.done and "another file system" in result.skipped[0].reason
        assert (far / "b.jpg").is_file()
    finally:
        shutil.rmtree(far, ignore_errors=True)


class _Crash(BaseException):
    """Stands for a power cut: not an error the code may catch."""


def _crash_at(monkeypatch, k: int) -> None:
    calls = {"n": 0}

    def checkpoint():
        calls["n"] += 1
        if calls["n"] == k:
            raise _Crash

    monkeypatch.setattr(fileops, "checkpoint", checkpoint)


def _fake_exdev(monkeypatch, marker: str) -> None:
    real_link = os.link

    def link(src, dst, **kw):
        if (marker in os.fspath(src)) != (marker in os.fspath(dst)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, **kw)

    monkeypatch.setattr(os, "link", link)


@pytest.mark.parametrize("action", [*ACTIONS, "move-across"])
def test_a_crash_at_any_point_is_undone(tmp_path, photos, monkeypatch, action):
    tree = Tree(tmp_path, photos)
    rows = [r for r in tree.rows() if r["group"] == "1"][:3]  # two steps are enough
    if action == "move-across":
        action = "move"
        _fake_exdev(monkeypatch, "moved")  # the copy, fsync, verify, delete path
    to = tmp_path / "moved" if action == "move" else None
    plan = plan_actions(rows, action=action, to=to)
    before = snapshot(tree.root)
    k = 1
    while True:
        _crash_at(monkeypatch, k)
        journal = tmp_path / f"j{k}.jsonl"
        try:
            apply_plan(plan, journal_path=journal, dry_run=False, trash_dir=tmp_path / "Trash")
            finished = True
        except _Crash:
            finished = False
        monkeypatch.setattr(fileops, "checkpoint", lambda: None)
        outcome = undo(journal)
        assert outcome.ok, (k, outcome.problems)
        assert snapshot(tree.root) == before, k
        if finished:
            break
        k += 1
    assert k > 4  # the crash points were really hit


CHILD = """
import sys
from dupfinder.actions import apply_plan, plan_actions
from dupfinder.report import read_csv
report, action, journal, to, trash = sys.argv[1:]
plan = plan_actions(read_csv(report), action=action, to=to if action == "move" else None)
apply_plan(plan, journal_path=journal, dry_run=False, trash_dir=trash)
"""


# The delays land the kill at different points inside the second step.
@pytest.mark.parametrize("action, delay", [("move", 0.2), ("hardlink", 0.2), ("symlink", 0.35),
                                           ("delete", 0.05), ("trash", 0.2)])
def test_an_apply_killed_half_way_is_undone(tree, action, delay):
    before = snapshot(tree.root)
    journal = tree.base / "j.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DUPFINDER_TEST_SLOW_STEPS": "0.15"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tree.report), action, str(journal),
         str(tree.base / "moved"), str(tree.base / "Trash")],
        env=env, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            records = list(read_journal(journal)) if journal.exists() else []
            intents = [r for r in records if r["type"] == "intent"]
            if len(intents) >= 2 and records[-1]["type"] == "intent":
                break  # in the middle of the second step
            assert child.poll() is None, "the apply finished before it could be killed"
            time.sleep(0.01)
        else:
            pytest.fail("the apply wrote no second intent in time")
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    records = list(read_journal(journal))
    assert records[-1]["type"] != "end"
    outcome = undo(journal)
    assert outcome.ok, outcome.problems
    assert snapshot(tree.root) == before
    assert not (tree.base / "j.backup").exists()


def test_journal_records_intent_before_done(tree):
    journal = tree.base / "j.jsonl"
    _apply(tree, "delete", journal)
    kinds = [(r["type"], r.get("n")) for r in read_journal(journal)]
    assert kinds[0][0] == "begin" and kinds[-1][0] == "end"
    for n in range(1, 10):
        assert kinds.index(("intent", n)) < kinds.index(("done", n))
    intent = next(r for r in read_journal(journal) if r["type"] == "intent")
    assert intent["sha256"] == hashlib.sha256(Path(intent["aside"]).read_bytes()).hexdigest()
    with pytest.raises(OSError):  # a journal is never reused
        _apply(tree, "delete", journal)


def test_a_torn_last_line_is_dropped_and_a_busy_journal_refused(tree):
    journal = tree.base / "j.jsonl"
    before = snapshot(tree.root)
    _apply(tree, "delete", journal)
    with open(journal, "ab") as f:
        f.write(b'{"type":"intent","n":99,"op":"del')  # killed inside write()
    with Journal(journal):  # an apply or undo still running holds the lock
        with pytest.raises(JournalError, match="in use"):
            undo(journal)
    assert undo(journal).ok
    assert snapshot(tree.root) == before
    assert [r["type"] for r in read_journal(journal)][-1] == "undone"


def test_names_that_are_not_utf8_are_restored(tmp_path, photos):
    name = b"latin1-\xe9t\xe9.jpg"
    tree = Tree(tmp_path, photos, extra_names=(name,))
    before = snapshot(tree.root)
    result = _apply(tree, "delete", tmp_path / "j.jsonl")
    assert os.fsdecode(os.path.join(os.fsencode(tree.root / "copies"), name)) in {s.path for s in result.done}
    json.loads((tmp_path / "j.jsonl").read_bytes().splitlines()[1])  # plain ASCII JSON
    assert undo(tmp_path / "j.jsonl").ok
    assert snapshot(tree.root) == before


def test_purge_frees_the_backups_and_then_undo_says_so(tree):
    journal = tree.base / "j.jsonl"
    result = _apply(tree, "delete", journal)
    backup = tree.base / "j.backup"
    assert sum(f.stat().st_size for f in backup.rglob("*") if f.is_file()) == result.bytes
    dry = purge(journal, dry_run=True)
    assert dry.freed_bytes == result.bytes and backup.exists()
    done = purge(journal)
    assert done.freed_bytes == result.bytes and not backup.exists()
    outcome = undo(journal)
    assert len(outcome.problems) == 9 and "purged" in outcome.problems[0].message


def test_undo_never_overwrites_a_new_file(tree):
    journal = tree.base / "j.jsonl"
    result = _apply(tree, "delete", journal)
    path = Path(result.done[0].path)
    path.write_bytes(b"a new file the person made since")
    outcome = undo(journal)
    assert [p.path for p in outcome.problems] == [str(path)]
    assert path.read_bytes() == b"a new file the person made since"
    assert "kept at" in outcome.problems[0].message


# --- the command line ---------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dupfinder")
    register(parser.add_subparsers(dest="command"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.handler(args)


def test_every_option_has_a_help_text():
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"apply", "undo", "purge"}
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, (name, action.dest)


def test_cli_dry_run_then_yes_then_undo(tree, capsys):
    before = snapshot(tree.base)
    assert _run(["apply", str(tree.report), "--action", "delete", "--protect", str(tree.protected)]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 9 and all(line.startswith("would delete ") for line in out.splitlines())
    assert "dupfinder: dry run: 9 files" in err and "--yes" in err
    assert "dupfinder: skipped " + str(tree.protected / "kept_safe.jpg") in err
    assert snapshot(tree.base) == before

    journal = tree.base / "j.jsonl"
    assert _run(["apply", str(tree.report), "--action", "delete", "--protect", str(tree.protected),
                 "--journal", str(journal), "--yes"]) == 0
    out, err = capsys.readouterr()
    assert all(line.startswith("delete ") for line in out.splitlines())
    assert f"dupfinder undo --yes {journal}" in err and "dupfinder purge --yes" in err

    assert _run(["undo", str(journal)]) == 0
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if line.startswith("would restore ")]) == 9
    assert _run(["undo", str(journal), "--yes"]) == 0
    assert snapshot(tree.root) == {k: v for k, v in before.items() if k.startswith(os.fsencode(tree.root))}


def test_cli_default_journal_sits_beside_the_report(tree, capsys):
    assert _run(["apply", str(tree.report), "--action", "trash", "--trash-dir", str(tree.base / "T"),
                 "--yes"]) == 0
    journals = list(tree.base.glob("report-apply-*.jsonl"))
    assert len(journals) == 1
    assert _run(["undo", "--yes", str(journals[0])]) == 0


def test_cli_errors_exit_2_with_a_message(tmp_path, capsys):
    assert _run(["apply", str(tmp_path / "missing.csv"), "--action", "delete"]) == 2
    assert capsys.readouterr().err.startswith("dupfinder: error: ")
    (tmp_path / "r.csv").write_text("group,path\n1,a.jpg\n")
    assert _run(["apply", str(tmp_path / "r.csv"), "--action", "delete"]) == 2
    assert "no keep, bytes, modified, hash column" in capsys.readouterr().err
    assert _run(["apply", str(tmp_path / "r.csv"), "--action", "move"]) == 2
    assert _run(["undo", str(tmp_path / "r.csv")]) == 2
