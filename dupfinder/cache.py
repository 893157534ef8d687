"""The SQLite hash cache: the second night hashes only what changed.

One database file holds five tables:

* ``files``: what each path looked like when it was hashed (size,
  ``st_mtime_ns``) and the digest of its bytes. An entry is trusted only
  when path, size and mtime all match.
* ``results``: fingerprints keyed by the content digest and by a *spec key*
  naming everything that changes the answer (algorithm, hash size, decode
  mode, dupfinder's hash version). A file that failed to decode is stored
  too, so it is not retried every night; it is retried once it changes.
  Keying by content means a renamed or moved file is found again by its
  digest (reading bytes costs ~1% of decoding them) and never decoded twice.
* ``features``: the local features of ``scan --partial`` (about 50 KB a
  file), keyed like ``results`` by content digest and by
  :func:`dupfinder.partial_features.features_key`: a nightly ``--partial``
  scan computes them only for new and changed files.
* ``scans``: one row per scan (roots, settings, start and end time), so
  ``--new-since last`` knows when the last completed scan of the same roots
  began.
* ``ignored``: pairs of files (by content digest) a person said are not
  duplicates.

The file uses WAL mode and commits in batches: ``kill -9`` loses at most the
last batch and never corrupts the file. A file that is not a dupfinder cache,
is damaged, or has another schema version is moved aside and rebuilt, with a
warning through :mod:`logging`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .models import DupfinderError

__all__ = [
    "SCHEMA_VERSION",
    "HASH_VERSION",
    "Cache",
    "CacheBusyError",
    "CacheError",
    "CachedResult",
    "CacheInfo",
    "default_cache_path",
    "spec_key",
]

log = logging.getLogger(__name__)

# Caches of this process that hold their lock file (see forget_inherited_locks).
_LOCKED: weakref.WeakSet = weakref.WeakSet()


def forget_inherited_locks() -> None:
    """In a forked worker: close the copies of the parent's cache locks, which it never uses.

    A flock belongs to every copy of the descriptor, so a worker left behind
    by a kill -9 of its parent would keep every later run "busy" (exit 75).
    Closing a copy does not release the parent's lock. The worker's copies
    of the Cache objects forget their descriptor, so that nothing closes its
    number again once another file has it.

    >>> forget_inherited_locks()  # in a process holding none: nothing to do
    """
    for cache in list(_LOCKED):
        fd, cache._lock_fd = cache._lock_fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    _LOCKED.clear()

SCHEMA_VERSION = 3
# Bump when decoding or hashing changes the bits a file gets, so that old
# entries stop matching instead of mixing with new ones.
HASH_VERSION = 7  # 7: pHash's DCT in numpy (bits differ only where coefficients tie)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    digest BLOB NOT NULL,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_digest ON files (digest);
CREATE INDEX IF NOT EXISTS files_size ON files (size);
CREATE TABLE IF NOT EXISTS results (
    digest BLOB NOT NULL,
    spec TEXT NOT NULL,
    hash TEXT,
    width INTEGER,
    height INTEGER,
    error_stage TEXT,
    error_message TEXT,
    variants TEXT,
    quality INTEGER,
    extras TEXT,
    PRIMARY KEY (digest, spec)
);
CREATE TABLE IF NOT EXISTS features (
    digest BLOB NOT NULL,
    spec TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (digest, spec)
);
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    roots TEXT NOT NULL,
    settings TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS ignored (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    a BLOB NOT NULL,
    b BLOB NOT NULL,
    a_path BLOB,
    b_path BLOB,
    reason TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL,
    UNIQUE (a, b)
);
"""


_FEATURES_TABLE = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS features") : _SCHEMA.index("CREATE TABLE IF NOT EXISTS scans")]


class CacheBusyError(RuntimeError):
    """Another dupfinder process holds the cache; this one does not wait."""


class CacheError(DupfinderError, OSError):
    """A cache path that cannot be used at all (a folder, no permission)."""


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A fingerprint (or a stored failure) for one content digest and spec."""

    hash: str | None
    width: int | None
    height: int | None
    error_stage: str | None = None
    error_message: str | None = None
    variants: str | None = None
    quality: int | None = None
    extras: str | None = None
    digest: bytes | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """What ``dupfinder cache info`` shows."""

    path: str
    files: int
    results: int
    scans: int
    ignored: int
    bytes: int
    features: int = 0  # files' local features stored for scan --partial


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/dupfinder/cache.sqlite``, else ``~/.cache/dupfinder/cache.sqlite``.

    >>> default_cache_path().name
    'cache.sqlite'
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dupfinder" / "cache.sqlite"


def spec_key(algorithm: str, hash_size: int, decode: str) -> str:
    """The part of a result's key that names how it was computed.

    >>> spec_key("phash", 8, "orient")
    'phash:8:orient:v7'
    """
    return f"{algorithm}:{hash_size}:{decode}:v{HASH_VERSION}"


def _b(path: str) -> bytes:
    # Paths are stored as bytes so that names that are not UTF-8 survive.
    return os.fsencode(path)


def move_aside(path: str, reason: str) -> str:
    """Move a damaged cache file (and its WAL) to ``PATH.broken-DATE``, with a warning; returns where.

    The next open starts a new cache; nothing of the old one is read again.

    >>> import tempfile
    >>> p = tempfile.mktemp(suffix=".sqlite")
    >>> _ = open(p, "w").write("junk")
    >>> ".broken-" in move_aside(p, "unreadable"), os.path.exists(p)
    (True, False)
    """
    aside = f"{path}.broken-{time.strftime('%Y%m%d-%H%M%S')}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
    log.warning("cache %s was %s; moved it to %s and started a new one", path, reason, aside)
    return aside


class Cache:
    """An open hash cache; use as a context manager.

    ``path=":memory:"`` gives a private in-memory cache (tests, one-off runs).
    ``lock=True`` takes an exclusive lock on a ``.lock`` file beside the
    database and raises :class:`CacheBusyError` at once if another process
    holds it: two nightly runs must not pile up.

    >>> with Cache(":memory:") as c:
    ...     c.put_file("a.jpg", size=3, mtime_ns=7, digest=b"d")
    ...     c.put_result(b"d", "phash:8:orient:v6", CachedResult("ff", 1, 1))
    ...     c.commit()
    ...     c.lookup("a.jpg", size=3, mtime_ns=7, spec="phash:8:orient:v6")
    CachedResult(hash='ff', width=1, height=1, error_stage=None, error_message=None, variants=None, quality=None, extras=None, digest=b'd')
    """

    def __init__(self, path: str | os.PathLike = ":memory:", *, lock: bool = False, timeout: float = 30.0):
        self.path = os.fspath(path)
        self.scan_started: float | None = None
        self._lock_fd: int | None = None
        self._timeout = timeout
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if lock:
                self._take_lock()
        self._features = True  # whether the features table is there to use
        try:
            self.db = self._open()
            self._add_features_table()
        except BaseException:
            self._release_lock()
            raise

    # -- opening, locking, repair -------------------------------------------

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: SQLite's own locking
            return
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            msg = f"another dupfinder is using the cache {self.path}"
            raise CacheBusyError(msg) from None
        self._lock_fd = fd
        _LOCKED.add(self)

    def _release_lock(self) -> None:
        _LOCKED.discard(self)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        if self.path != ":memory:":
            db.execute("PRAGMA journal_mode = WAL")
            # NORMAL is safe in WAL mode: a crash of the process loses no
            # committed transaction; a power cut may lose the last ones only.
            db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:" and os.path.lexists(self.path) and not os.path.isfile(self.path):
            # Never move a folder (or a device) aside: it is not a cache of ours.
            msg = f"the cache path {self.path} is not a file; give --cache a file name"
            raise CacheError(msg)
        try:
            db = self._connect()
            version = self._schema_version(db)
            if version == SCHEMA_VERSION:
                return db
            if version is None:
                self._create(db)
                return db
            db.close()
            reason = f"schema version {version}, this dupfinder uses {SCHEMA_VERSION}"
        except sqlite3.OperationalError as exc:
            if "unable to open" in str(exc):
                # Permissions or a missing folder: the file is not damaged.
                msg = f"cannot open the cache {self.path}: {exc}"
                raise CacheError(msg) from None
            reason = f"unreadable ({exc})"
        except sqlite3.DatabaseError as exc:
            reason = f"unreadable ({exc})"
        self._move_aside(reason)
        db = self._connect()
        self._create(db)
        return db

    def _add_features_table(self) -> None:
        # A cache made before the features table existed gains it: the table
        # is new, nothing else changed, so no rebuild. If it cannot be added
        # now (another process is writing, the file is read-only), the
        # hashes are still good: features are just not cached this time.
        try:
            if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'features'").fetchone():
                self.db.executescript(_FEATURES_TABLE)
        except sqlite3.OperationalError:
            self._features = False

    @staticmethod
    def _schema_version(db: sqlite3.Connection) -> int | None:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None
        if "meta" not in tables:
            return -1
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            return int(row[0]) if row else -1
        except ValueError:
            return -1

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        db.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )

    def _move_aside(self, reason: str) -> None:
        if self.path != ":memory:":
            move_aside(self.path, reason)

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Commit what is pending and close the file."""
        try:
            if self.db is not None:
                try:
                    self.commit()
                finally:
                    self.db.close()
                    self.db = None
        finally:
            # Even when the commit fails (a damaged file): a lock kept here
            # made the rerun on a new cache report "busy".
            self._release_lock()

    # -- files and results ---------------------------------------------------

    def _begin(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN")

    def commit(self) -> None:
        """End the current batch: everything written so far survives a crash."""
        if self.db is not None and self.db.in_transaction:
            self.db.execute("COMMIT")

    def lookup(self, path: str, *, size: int, mtime_ns: int, spec: str) -> CachedResult | None:
        """The stored result for a file, if path, size and mtime all still match (with its digest)."""
        row = self.db.execute(
            "SELECT r.hash, r.width, r.height, r.error_stage, r.error_message, r.variants, r.quality, "
            "r.extras, f.digest FROM files f "
            "JOIN results r ON r.digest = f.digest AND r.spec = ? "
            "WHERE f.path = ? AND f.size = ? AND f.mtime_ns = ?",
            (spec, _b(path), size, mtime_ns),
        ).fetchone()
        return CachedResult(*row) if row else None

    def file_digest(self, path: str, *, size: int, mtime_ns: int) -> bytes | None:
        """The content digest recorded for a file that has not changed since."""
        row = self.db.execute(
            "SELECT digest FROM files WHERE path = ? AND size = ? AND mtime_ns = ?",
            (_b(path), size, mtime_ns),
        ).fetchone()
        return row[0] if row else None

    def lookup_digest(self, digest: bytes, *, spec: str) -> CachedResult | None:
        """The stored result for some content, whatever its path."""
        row = self.db.execute(
            "SELECT hash, width, height, error_stage, error_message, variants, quality, extras FROM results "
            "WHERE digest = ? AND spec = ?",
            (digest, spec),
        ).fetchone()
        return CachedResult(*row) if row else None

    def sizes_of_missing(self, seen: Iterable[str], *, under: Iterable[str]) -> set[int]:
        """Sizes of cached files under ``under`` that the walk did not see.

        A renamed file keeps its size, so only new files of one of these
        sizes need their digest read before deciding to decode them.
        """
        seen_b = {_b(p) for p in seen}
        sizes: set[int] = set()
        for path, size in self._rows_under(under, "path, size"):
            if path not in seen_b:
                sizes.add(size)
        return sizes

    def sizes_gone_elsewhere(self, sizes: Iterable[int], *, under: Iterable[str]) -> set[int]:
        """Of ``sizes``, those of cached files outside ``under`` that no longer exist.

        A file moved from a tree scanned on its own (Downloads) into this one
        (Pictures) left its entry there: new files of such a size have their
        digest read too. Costs one pass over the table and a stat per entry
        of a wanted size, only when there are new files.
        """
        wanted = set(sizes)
        if not wanted:
            return set()
        inside = tuple(_b(os.path.join(os.fspath(r), "")) for r in under)
        exact = {_b(os.fspath(r)) for r in under}
        found: set[int] = set()
        for path, size in self.db.execute("SELECT path, size FROM files"):
            elsewhere = size in wanted and size not in found and path not in exact and not path.startswith(inside)
            if elsewhere and not os.path.lexists(os.fsdecode(path)):
                found.add(size)
        return found

    def _rows_under(self, roots: Iterable[str], columns: str) -> Iterator[tuple]:
        for root in roots:
            prefix = _b(os.path.join(os.fspath(root), ""))
            exact = _b(os.fspath(root))
            # Byte-wise range scan of the primary key: every path that starts
            # with "root/", plus the root itself when it is a file.
            yield from self.db.execute(
                f"SELECT {columns} FROM files WHERE (path >= ? AND path < ?) OR path = ?",
                (prefix, prefix + b"\xff" * 8, exact),
            )

    def put_file(self, path: str, *, size: int, mtime_ns: int, digest: bytes, added_at: float | None = None) -> None:
        """Record what a path looks like now; keeps its first-seen time if unchanged."""
        self._begin()
        # A file counts as added when the scan that first saw it began, so
        # that "new since the last scan" compares like with like; the same
        # content at the same path keeps its first time (one statement: this
        # runs once per hashed file).
        now = added_at if added_at is not None else (self.scan_started or time.time())
        self.db.execute(
            "INSERT INTO files (path, size, mtime_ns, digest, added_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
            "added_at = CASE WHEN files.digest = excluded.digest THEN files.added_at "
            "ELSE excluded.added_at END, digest = excluded.digest",
            (_b(path), size, mtime_ns, digest, now),
        )

    def put_result(self, digest: bytes, spec: str, result: CachedResult) -> None:
        """Store a fingerprint, or a failure, for some content."""
        self._begin()
        self.db.execute(
            "INSERT OR REPLACE INTO results "
            "(digest, spec, hash, width, height, error_stage, error_message, variants, quality, extras) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                digest, spec, result.hash, result.width, result.height,
                result.error_stage, result.error_message, result.variants, result.quality, result.extras,
            ),
        )

    def lookup_features(self, digest: bytes, *, spec: str) -> bytes | None:
        """The local features (``--partial``) stored for some content, as :meth:`Features.to_bytes` wrote them."""
        if not self._features:
            return None
        row = self.db.execute("SELECT data FROM features WHERE digest = ? AND spec = ?", (digest, spec)).fetchone()
        return row[0] if row else None

    def put_features(self, digest: bytes, spec: str, data: bytes) -> None:
        """Store the local features of some content (about 50 KB)."""
        if self._features:
            self._begin()
            self.db.execute("INSERT OR REPLACE INTO features (digest, spec, data) VALUES (?, ?, ?)",
                            (digest, spec, data))

    def forget_features(self, *, other_than: str | Iterable[str]) -> int:
        """Drop features stored under any other key (older settings, another OpenCV): they are never read again."""
        if not self._features:
            return 0
        keep = [other_than] if isinstance(other_than, str) else list(other_than)
        self._begin()
        marks = ", ".join("?" * len(keep))
        return self.db.execute(f"DELETE FROM features WHERE spec NOT IN ({marks})", keep).rowcount

    def added_at(self, paths: Iterable[str]) -> dict[str, float]:
        """When each path was first recorded with its current content."""
        out = {}
        for p in paths:
            row = self.db.execute("SELECT added_at FROM files WHERE path = ?", (_b(p),)).fetchone()
            if row:
                out[p] = row[0]
        return out

    # -- scans -----------------------------------------------------------------

    def start_scan(self, roots: Iterable[str], settings: dict) -> int:
        """Record that a scan began; returns its id."""
        self.commit()
        self.scan_started = time.time()
        cur = self.db.execute(
            "INSERT INTO scans (roots, settings, started) VALUES (?, ?, ?)",
            (_roots_key(roots), json.dumps(settings, sort_keys=True), self.scan_started),
        )
        return int(cur.lastrowid)

    def finish_scan(self, scan_id: int) -> None:
        """Mark a scan completed: later ``--new-since last`` runs compare to it."""
        self.commit()
        self.db.execute("UPDATE scans SET finished = ? WHERE id = ?", (time.time(), scan_id))

    def last_completed_scan(self, roots: Iterable[str], *, before: int | None = None) -> float | None:
        """Start time of the newest completed scan of the same roots, if any."""
        query = "SELECT started FROM scans WHERE roots = ? AND finished IS NOT NULL"
        args: list = [_roots_key(roots)]
        if before is not None:
            query += " AND id < ?"
            args.append(before)
        row = self.db.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return row[0] if row else None

    # -- ignore list -----------------------------------------------------------

    def ignore(self, a: bytes, b: bytes, *, a_path: str = "", b_path: str = "", reason: str = "") -> bool:
        """Record that two contents are not duplicates; False if already recorded."""
        if a == b:
            return False
        if b < a:
            a, b, a_path, b_path = b, a, b_path, a_path
        self._begin()
        cur = self.db.execute(
            "INSERT OR IGNORE INTO ignored (a, b, a_path, b_path, reason, added_at) VALUES (?, ?, ?, ?, ?, ?)",
            (a, b, _b(a_path), _b(b_path), reason, time.time()),
        )
        return cur.rowcount > 0

    def ignored_pairs(self) -> set[tuple[bytes, bytes]]:
        """Every ignored pair of digests, smaller digest first."""
        return {(a, b) for a, b in self.db.execute("SELECT a, b FROM ignored")}

    def list_ignored(self) -> list[tuple[int, str, str, str, float]]:
        """Rows of the ignore list: id, first path, second path, reason, time."""
        return [
            (i, os.fsdecode(ap or b""), os.fsdecode(bp or b""), reason, added)
            for i, ap, bp, reason, added in self.db.execute(
                "SELECT id, a_path, b_path, reason, added_at FROM ignored ORDER BY id"
            )
        ]

    def unignore(self, ids: Iterable[int]) -> int:
        """Remove entries from the ignore list; returns how many went."""
        self._begin()
        n = 0
        for i in ids:
            n += self.db.execute("DELETE FROM ignored WHERE id = ?", (int(i),)).rowcount
        self.commit()
        return n

    # -- maintenance -----------------------------------------------------------

    def prune(self, *, under: Iterable[str] | None = None) -> int:
        """Drop entries of files that no longer exist (all, or under some roots)."""
        rows = (
            self._rows_under(under, "path")
            if under is not None
            else self.db.execute("SELECT path FROM files")
        )
        gone = [p for (p,) in list(rows) if not os.path.lexists(p)]
        self._begin()
        for p in gone:
            self.db.execute("DELETE FROM files WHERE path = ?", (p,))
        for table in ("results", "features") if self._features else ("results",):
            self.db.execute(f"DELETE FROM {table} WHERE digest NOT IN (SELECT digest FROM files)")
        self.commit()
        return len(gone)

    def info(self) -> CacheInfo:
        """Counts and size of the cache file."""
        self.commit()

        def count(table: str) -> int:
            return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

        size = 0
        if self.path != ":memory:":
            for suffix in ("", "-wal"):
                try:
                    size += os.path.getsize(self.path + suffix)
                except OSError:
                    pass
        features = count("features") if self._features else 0
        return CacheInfo(self.path, count("files"), count("results"), count("scans"), count("ignored"), size,
                         features)


def _roots_key(roots: Iterable[str]) -> str:
    return json.dumps(sorted(os.path.abspath(os.fspath(r)) for r in roots))
