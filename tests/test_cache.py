"""The hash cache: nightly re-scans, crashes, corruption, renames, ignore list, new-since."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupfinder import scan
from dupfinder.cache import Cache, CachedResult, CacheBusyError, spec_key
from dupfinder.cli import ExitStatus, main
from dupfinder.report import read_csv

from .conftest import open_rgb

REPO = Path(__file__).resolve().parent.parent
KEY = spec_key("phash", 8, "orient")


@pytest.fixture
def tree(tmp_path, photos):
    """Twelve real photos, two of them with a resized copy."""
    folder = tmp_path / "tree"
    folder.mkdir()
    for src in photos[:12]:
        shutil.copyfile(src, folder / src.name)
    for src in photos[:2]:
        open_rgb(src).resize((200, 150)).save(folder / f"{src.stem}_small.jpg", quality=85)
    return folder


def groups_of(result):
    return [[m.path for m in g.members] for g in result.groups]


def test_second_scan_decodes_nothing_and_reports_the_same(tree, tmp_path):
    with Cache(tmp_path / "c.sqlite") as cache:
        first = scan([tree], workers=0, cache=cache)
    with Cache(tmp_path / "c.sqlite") as cache:
        second = scan([tree], workers=0, cache=cache)
    assert first.counts["decoded"] == 14 and second.counts["decoded"] == 0
    assert second.counts["cached"] == 14
    assert second.groups == first.groups and second.files == first.files
    assert len(first.groups) == 2


def test_changed_mtime_or_size_is_rehashed(tree, tmp_path):
    db = tmp_path / "c.sqlite"
    with Cache(db) as cache:
        scan([tree], workers=0, cache=cache)
    victim = next(tree.glob("*_small.jpg"))
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    with Cache(db) as cache:
        assert scan([tree], workers=0, cache=cache).counts["decoded"] == 1
    open_rgb(victim).save(victim, quality=60)  # new size (and content)
    with Cache(db) as cache:
        result = scan([tree], workers=0, cache=cache)
    assert result.counts["decoded"] == 1
    assert len(result.groups) == 2


def test_renamed_and_moved_files_are_not_decoded_again(tree, tmp_path):
    db = tmp_path / "c.sqlite"
    with Cache(db) as cache:
        before = scan([tree], workers=0, cache=cache)
    (tree / "sub").mkdir()
    names = sorted(p.name for p in tree.glob("*.jpg"))
    os.rename(tree / names[0], tree / "renamed.jpg")
    os.rename(tree / names[1], tree / "sub" / names[1])
    with Cache(db) as cache:
        after = scan([tree], workers=0, cache=cache)
    assert after.counts["decoded"] == 0
    assert sorted(f.hash for f in after.files) == sorted(f.hash for f in before.files)


def test_a_failed_file_stays_failed_until_it_changes(tree, tmp_path, photos):
    db = tmp_path / "c.sqlite"
    bad = tree / "broken.jpg"
    data = photos[0].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with Cache(db) as cache:
        first = scan([tree], workers=0, cache=cache)
    with Cache(db) as cache:
        second = scan([tree], workers=0, cache=cache)
    assert second.counts["decoded"] == 0
    assert first.errors == second.errors and [Path(e.path).name for e in second.errors] == ["broken.jpg"]
    bad.write_bytes(data)  # repaired
    with Cache(db) as cache:
        third = scan([tree], workers=0, cache=cache)
    assert third.counts["decoded"] == 1 and third.errors == ()


def test_settings_that_change_the_answer_are_separate_entries(tree, tmp_path):
    db = tmp_path / "c.sqlite"
    with Cache(db) as cache:
        scan([tree], workers=0, cache=cache)
        assert scan([tree], workers=0, cache=cache, algorithm="dhash").counts["decoded"] == 14
        assert scan([tree], workers=0, cache=cache, hash_size=16).counts["decoded"] == 14
        assert scan([tree], workers=0, cache=cache, compat="imagehash").counts["decoded"] == 14
        assert scan([tree], workers=0, cache=cache, orient=False).counts["decoded"] == 14
        assert scan([tree], workers=0, cache=cache, algorithm="dhash").counts["decoded"] == 0


@pytest.mark.parametrize("damage", ["random", "truncated", "old-schema", "not-ours"])
def test_a_broken_cache_is_moved_aside_and_rebuilt(tree, tmp_path, damage, caplog):
    db = tmp_path / "c.sqlite"
    with Cache(db) as cache:
        scan([tree], workers=0, cache=cache)
    if damage == "random":
        db.write_bytes(os.urandom(8192))
    elif damage == "truncated":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 3])
    elif damage == "old-schema":
        con = sqlite3.connect(db)
        con.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
        con.commit()
        con.close()
    else:
        db.unlink()
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE photos (x)")
        con.commit()
        con.close()
    with caplog.at_level("WARNING"):
        with Cache(db) as cache:
            result = scan([tree], workers=0, cache=cache)
    assert len(result.groups) == 2
    assert any("moved it to" in r.getMessage() for r in caplog.records)
    assert list(tmp_path.glob("c.sqlite.broken-*"))
    with Cache(db) as cache:
        assert scan([tree], workers=0, cache=cache).counts["decoded"] == 0


def test_second_run_on_a_busy_cache_exits_with_busy(tree, tmp_path, capsys):
    db = tmp_path / "c.sqlite"
    with Cache(db, lock=True):
        with pytest.raises(CacheBusyError):
            Cache(db, lock=True)
        code = main(["scan", str(tree), "--cache", str(db), "-j", "0", "-o", str(tmp_path / "r.csv")])
    assert code == ExitStatus.BUSY == 75
    assert "busy" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()
    # Once the first run is done the next one goes ahead.
    assert main(["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(tmp_path / "r.csv")]) == 1


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1), st.lists(st.integers(0, 2**64 - 1), min_size=4, max_size=4),
       st.binary(min_size=1, max_size=60).filter(lambda b: b"\x00" not in b and b"/" not in b))
def test_every_hash_and_name_round_trips(value, words, name):
    path = "/photos/" + os.fsdecode(name)
    h64 = f"{value:016x}"
    h256 = "".join(f"{w:016x}" for w in words)
    with Cache(":memory:") as cache:
        cache.put_file(path, size=1, mtime_ns=2, digest=b"d64")
        cache.put_result(b"d64", "phash:8:orient:v1", CachedResult(h64, 3, 4))
        cache.put_result(b"d64", "phash:16:orient:v1", CachedResult(h256, 3, 4))
        cache.commit()
        assert cache.lookup(path, size=1, mtime_ns=2, spec="phash:8:orient:v1").hash == h64
        assert cache.lookup(path, size=1, mtime_ns=2, spec="phash:16:orient:v1").hash == h256
        assert cache.lookup(path, size=1, mtime_ns=3, spec="phash:8:orient:v1") is None


def _run_scan_process(tree, db, out, *, delay):
    env = dict(os.environ, PYTHONPATH=str(REPO), DUPFINDER_TEST_DELAY=str(delay))
    return subprocess.Popen(
        [sys.executable, "-m", "dupfinder", "scan", str(tree), "--cache", str(db), "-j", "0",
         "-q", "-f", "json", "-o", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _cached_files(db) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _wait_for_cached(db, proc, at_least=1, timeout=60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        n = _cached_files(db)
        if n >= at_least:
            return n
        time.sleep(0.02)
    raise AssertionError("the scan never committed a batch")


@pytest.fixture
def slow_tree(tmp_path, photos):
    folder = tmp_path / "slow"
    folder.mkdir()
    for src in photos[:30]:
        shutil.copyfile(src, folder / src.name)
    for src in photos[:5]:
        open_rgb(src).resize((160, 120)).save(folder / f"{src.stem}_thumb.png")
    return folder


def test_kill_9_part_way_then_rerun_gives_the_same_report(slow_tree, tmp_path):
    db = tmp_path / "c.sqlite"
    out = tmp_path / "report.json"
    out.write_text("last night's report")
    proc = _run_scan_process(slow_tree, db, out, delay=0.12)
    _wait_for_cached(db, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cached = _cached_files(db)
    assert 0 < cached < 35, "the kill should land part way"
    assert out.read_text() == "last night's report"  # no partial report replaced it
    with Cache(db) as cache:
        resumed = scan([slow_tree], workers=0, cache=cache)
    assert resumed.counts["decoded"] == 35 - cached
    fresh = scan([slow_tree], workers=0)
    assert groups_of(resumed) == groups_of(fresh) and resumed.files == fresh.files
    assert len(fresh.groups) == 5


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="forked children only")
def test_a_forked_worker_does_not_keep_the_cache_locked(tmp_path):
    # A worker left behind by a kill -9 of its parent must not hold the lock
    # it inherited: every later night would exit 75 ("busy").
    from dupfinder.executor import ProcessExecutor

    db = tmp_path / "c.sqlite"
    cache = Cache(str(db), lock=True)
    pool = ProcessExecutor(1, start_method="fork")
    try:
        assert [r for _, r in pool.map_unordered(abs, [-1])] == [1]  # the worker is up
        cache.close()  # the parent lets go; the worker lives on
        with Cache(str(db), lock=True):
            pass
    finally:
        pool.close()


def test_a_process_forked_otherwise_keeps_its_cache(tmp_path):
    # Only dupfinder's workers let the lock go: a daemon that forks and goes
    # on with the cache in the child keeps it locked, and its close works.
    db = tmp_path / "c.sqlite"
    cache = Cache(str(db), lock=True)
    fork = multiprocessing.get_context("fork")
    done = fork.Event()

    def child_closes():
        cache.close()
        done.set()

    child = fork.Process(target=child_closes)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0 and done.is_set()
    with pytest.raises(CacheBusyError):
        Cache(str(db), lock=True)  # the parent still holds it
    cache.close()


def test_workers_leave_when_their_parent_is_killed(tmp_path):
    # The parent dies without stopping its pool (SIGKILL, the OOM killer):
    # idle workers would wait forever on a queue nobody feeds.
    code = (
        "import os, sys\n"
        "from dupfinder.executor import ProcessExecutor\n"
        "ex = ProcessExecutor(1)\n"
        "list(ex.map_unordered(abs, [1]))\n"  # the worker is up and idle
        "print(next(iter(ex._pool._processes)), flush=True)\n"
        "os._exit(0)\n"  # no shutdown, as after a kill -9
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    worker = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(worker, signal.SIGKILL)
        raise AssertionError(f"worker {worker} outlived its parent")


def test_sigterm_exits_143_keeps_the_work_and_the_old_report(slow_tree, tmp_path):
    db = tmp_path / "c.sqlite"
    out = tmp_path / "report.json"
    out.write_text("last night's report")
    proc = _run_scan_process(slow_tree, db, out, delay=0.12)
    _wait_for_cached(db, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitStatus.TERMINATED == 143
    assert b"terminated" in err
    assert out.read_text() == "last night's report"
    cached = _cached_files(db)
    assert cached > 0
    with Cache(db) as cache:
        assert scan([slow_tree], workers=0, cache=cache).counts["decoded"] == 35 - cached


def test_ignored_pair_does_not_come_back(tree, tmp_path, capsys):
    db = tmp_path / "c.sqlite"
    report = tmp_path / "r.csv"
    assert main(["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(report)]) == 1
    rows = read_csv(report)
    first_group = [r["path"] for r in rows if r["group"] == "1"]
    assert main(["ignore", "add", *first_group, "--cache", str(db), "--reason", "twins"]) == 0
    main(["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(report)])
    paths = {r["path"] for r in read_csv(report)}
    assert not paths & set(first_group)
    assert len({r["group"] for r in read_csv(report)}) == 1
    capsys.readouterr()
    assert main(["ignore", "list", "--cache", str(db)]) == 0
    listing = capsys.readouterr().out
    assert "twins" in listing and first_group[0] in listing
    entry_id = listing.split("\t")[0]
    assert main(["ignore", "remove", entry_id, "--cache", str(db)]) == 0
    main(["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(report)])
    assert set(first_group) <= {r["path"] for r in read_csv(report)}


def test_ignore_import_reads_a_reviewed_verdict_column(tree, tmp_path):
    db = tmp_path / "c.sqlite"
    report = tmp_path / "r.csv"
    main(["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(report)])
    text = report.read_text().splitlines()
    reviewed = [text[0] + ",verdict"]
    for line in text[1:]:
        reviewed.append(line + (",Not duplicate" if line.startswith("2,") and ",no," in line else ","))
    (tmp_path / "reviewed.csv").write_text("\n".join(reviewed) + "\n")
    assert main(["ignore", "import", str(tmp_path / "reviewed.csv"), "--cache", str(db)]) == 0
    main(["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(report)])
    assert {r["group"] for r in read_csv(report)} == {"1"}


def test_new_since_last_shows_only_groups_that_gained_a_file(tree, tmp_path, photos):
    db = tmp_path / "c.sqlite"
    report = tmp_path / "r.csv"
    args = ["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(report), "--new-since", "last"]
    assert main(args) == 1  # first night: everything is new
    assert len({r["group"] for r in read_csv(report)}) == 2
    assert main(args) == 0  # nothing changed
    assert read_csv(report) == []
    open_rgb(photos[5]).resize((100, 75)).save(tree / "tonight.jpg", quality=80)
    assert main(args) == 1
    rows = read_csv(report)
    assert {Path(r["path"]).name for r in rows} == {photos[5].name, "tonight.jpg"}
    assert {Path(r["path"]).name: r["new"] for r in rows} == {photos[5].name: "no", "tonight.jpg": "yes"}


def test_new_since_a_date(tree, tmp_path):
    db = tmp_path / "c.sqlite"
    report = tmp_path / "r.csv"
    base = ["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(report)]
    main(base)
    assert main([*base, "--new-since", "2999-01-01"]) == 0
    assert main([*base, "--new-since", "2000-01-01T00:00"]) == 1
    assert main([*base, "--new-since", "yesterday-ish"]) == ExitStatus.ERROR


def test_cache_info_and_prune(tree, tmp_path, capsys):
    db = tmp_path / "c.sqlite"
    main(["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(tmp_path / "r.csv")])
    capsys.readouterr()
    assert main(["cache", "info", "--cache", str(db)]) == 0
    info = capsys.readouterr().out
    assert f"location: {db}" in info and "files: 14" in info
    for p in list(tree.glob("*_small.jpg")):
        p.unlink()
    assert main(["cache", "prune", "--cache", str(db)]) == 0
    assert "pruned 2 entries" in capsys.readouterr().err
    main(["cache", "info", "--cache", str(db)])
    assert "files: 12" in capsys.readouterr().out


def test_default_cache_location_follows_xdg(tree, tmp_path, private_cache):
    main(["scan", str(tree), "-j", "0", "-q", "-o", str(tmp_path / "r.csv")])
    assert private_cache.exists()


def test_output_date_pattern_and_log_file(tree, tmp_path):
    (tree / "bad.png").write_text("nope")
    pattern = str(tmp_path / "reports" / "dups-%Y-%m-%d.csv")
    log = tmp_path / "run.log"
    main(["scan", str(tree), "-j", "0", "-q", "-o", pattern, "--log-file", str(log)])
    (made,) = (tmp_path / "reports").iterdir()
    assert made.name == time.strftime("dups-%Y-%m-%d.csv")
    assert "bad.png: open: not an image file" in log.read_text()


def test_a_busy_old_cache_is_opened_as_it_is_not_moved_aside(tmp_path):
    # An older cache lacks the features table; adding it needs a write. If
    # another process is writing just then, the cache is still good: open it
    # (features are not cached this time), never treat it as damaged.
    path = tmp_path / "cache.sqlite"
    with Cache(str(path)) as cache:
        cache.put_file("a.jpg", size=3, mtime_ns=7, digest=b"d")
        cache.commit()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE features")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with Cache(str(path), timeout=0.2) as cache:
            assert cache.file_digest("a.jpg", size=3, mtime_ns=7) == b"d"
            assert cache.lookup_features(b"d", spec="k") is None
            cache.put_features(b"d", "k", b"x")  # not stored, no error
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not list(tmp_path.glob("cache.sqlite.broken-*"))
    with Cache(str(path)) as cache:  # the next run adds the table
        cache.put_features(b"d", "k", b"x")
        cache.commit()
        assert cache.lookup_features(b"d", spec="k") == b"x"


def test_a_cache_damaged_inside_is_moved_aside_and_the_scan_goes_on(tree, tmp_path, capsys):
    # Its header and schema read fine, so the open keeps it; the damage shows
    # at a later query. Failing every night until someone looks is not an
    # option for a cron job: the cache is moved aside and the scan runs again.
    db = tmp_path / "c.sqlite"
    report = tmp_path / "r.csv"
    assert main(["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(report)]) == 1
    expected = report.read_bytes()
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    size = db.stat().st_size
    with open(db, "r+b") as f:
        for page in range(2, size // 4096):
            f.seek(page * 4096 + 100)
            f.write(bytes(range(256)) * 8)
    capsys.readouterr()
    assert main(["scan", str(tree), "--cache", str(db), "-j", "0", "-q", "-o", str(report)]) == 1
    assert "is damaged" in capsys.readouterr().err
    assert report.read_bytes() == expected
    assert list(tmp_path.glob("c.sqlite.broken-*"))
    with Cache(db) as cache:  # the new cache holds what the second run hashed
        assert cache.info().files > 0


def test_a_file_moved_in_from_a_tree_scanned_apart_is_not_decoded_again(tmp_path, photos):
    # One cache for every nightly job: Downloads and Pictures are scanned
    # apart, and a photo moved from one to the other keeps its hashes.
    downloads, pictures = tmp_path / "Downloads", tmp_path / "Pictures"
    downloads.mkdir()
    pictures.mkdir()
    for src in photos[:4]:
        shutil.copyfile(src, downloads / src.name)
    for src in photos[4:8]:
        shutil.copyfile(src, pictures / src.name)
    with Cache(tmp_path / "c.sqlite") as cache:
        scan([downloads], workers=0, cache=cache)
        scan([pictures], workers=0, cache=cache)
        moved = photos[0].name
        (downloads / moved).rename(pictures / moved)
        shutil.copyfile(photos[9], pictures / "really_new.jpg")
        again = scan([pictures], workers=0, cache=cache)
    assert again.counts["decoded"] == 1  # only the new file
    assert again.files == scan([pictures], workers=0).files


def test_a_close_that_fails_still_lets_the_lock_go(tmp_path, monkeypatch):
    # A damaged cache fails its last commit; the lock must go with it, or the
    # rerun on a new cache reports "busy".
    db = tmp_path / "c.sqlite"
    cache = Cache(str(db), lock=True)

    def damaged():
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(cache, "commit", damaged)
    with pytest.raises(sqlite3.DatabaseError):
        cache.close()
    with Cache(str(db), lock=True):
        pass
