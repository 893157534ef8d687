"""Local features kept in the cache by content, for ``scan --partial`` and ``match --partial``.

A nightly run decodes only new and changed files for their features: the
others' are read back from the cache's ``features`` table, keyed by the
content digest and every setting that changes them (OpenCV's version too).
"""

from __future__ import annotations

import os
import sqlite3

from .models import HashedFile

__all__ = ["StoredFeatures"]


class StoredFeatures:
    """A cache's features for this run's settings, or nothing without a cache: read by content, put in batches.

    >>> import tempfile
    >>> from PIL import Image
    >>> from dupfinder.cache import Cache
    >>> from dupfinder.partial_features import image_features
    >>> p = tempfile.mktemp(suffix=".png")
    >>> Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100).save(p)
    >>> st = os.stat(p)
    >>> row = HashedFile(p, st.st_size, st.st_mtime_ns, 320, 240, "c4001b0065008c00", "ab" * 16)
    >>> with Cache(":memory:") as cache:
    ...     stored = StoredFeatures(cache, orient=True)
    ...     stored.put(row, image_features(Image.open(p), path=p))
    ...     len(stored.get(p, bytes.fromhex(row.digest))) > 0, stored.get(p, bytes(16))
    (True, None)
    """

    def __init__(self, cache, *, orient: bool):
        from .partial_features import features_key

        self.cache = cache
        self.key = features_key(orient=orient)
        self._pending = 0
        self._writable = cache is not None
        if cache is not None:
            # Older settings or OpenCV are never read again; both orientation
            # settings are kept (a nightly scan and a match may differ there).
            self._write(cache.forget_features, other_than=(features_key(orient=True), features_key(orient=False)))

    def _write(self, method, *args, **kwargs) -> None:
        # A cache that cannot be written now (read-only, another process
        # writing) still serves what it holds: features are just not kept
        # this time, as when its features table cannot be added.
        if not self._writable:
            return
        try:
            method(*args, **kwargs)
        except sqlite3.OperationalError:
            self._writable = False

    def get(self, path: str, digest: bytes | None):
        """The features stored for these bytes, or None (none stored, or a damaged record: recomputed and replaced)."""
        from .partial import Features

        if self.cache is None or digest is None:
            return None
        record = self.cache.lookup_features(digest, spec=self.key)
        try:
            return None if record is None else Features.from_bytes(path, record)
        except ValueError:
            return None

    def put(self, row: HashedFile, features) -> None:
        """Keep a hashed file's features, if it still has the bytes it was hashed from; committed in batches like the hashes."""
        if self.cache is not None and row.digest:
            self.put_bytes(features, path=row.path, size=row.size, mtime_ns=row.mtime_ns,
                           digest=bytes.fromhex(row.digest))

    def put_bytes(self, features, *, path: str, size: int, mtime_ns: int, digest: bytes) -> None:
        """:meth:`put` for a file known by its size, time and content digest."""
        from .hashing import Hasher

        if not self._writable or not _unchanged(path, size, mtime_ns):
            return
        self._write(self.cache.put_features, digest, self.key, features.to_bytes())
        self._pending += 1
        if self._pending % Hasher.BATCH_FILES == 0:  # a WAL of MBs, not GBs
            self._write(self.cache.commit)

    def known(self, path: str) -> tuple[int, int, bytes] | None:
        """``(size, mtime_ns, digest)`` of a file as it is now, if the cache knows its bytes (a file it hashed, unchanged since)."""
        if self.cache is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        digest = self.cache.file_digest(os.path.abspath(path), size=st.st_size, mtime_ns=st.st_mtime_ns)
        return None if digest is None else (st.st_size, st.st_mtime_ns, digest)

    def close(self) -> None:
        """Commit what is pending."""
        if self.cache is not None:
            self._write(self.cache.commit)


def _unchanged(path: str, size: int, mtime_ns: int) -> bool:
    # Features are stored under the digest of the bytes hashed a moment ago:
    # only if the file still has that size and time were they read from them.
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (size, mtime_ns)
