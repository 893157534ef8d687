"""Hashed files as columns: what a scan of a million files keeps in memory.

A :class:`FileTable` is a read-only sequence of :class:`HashedFile` whose
numbers and hashes live in numpy arrays (one row per file) and whose paths
are one list of strings. A HashedFile with its hex strings costs about 1.8 KB
of Python objects; a row here about 350 bytes (the 33 hashes a pHash'd file
carries are 264 of them), and the arrays are what grouping searches anyway,
so nothing is parsed twice. Items are built when asked for, so the few files
a report shows cost what they did before.

>>> t = FileTable.from_records([HashedFile("b.jpg", 3, 0, 8, 8, "00000000000000ff"),
...                             HashedFile("a.jpg", 5, 0, 8, 8, "0000000000000001")])
>>> [f.path for f in t], t.words[:, 0].tolist()
(['a.jpg', 'b.jpg'], [1, 255])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .models import HashedFile

__all__ = ["FileTable", "TableBuilder", "low_information_mask", "same_content_pairs"]

# Below this PDQ-style quality (0-100) an image is "low information": blank,
# one flat colour, or nearly so. Their hashes are noise around a few common
# values and would chain into huge false groups. Real photos score 90-100 here;
# the flattest real photo in the project's collection (an out-of-focus colour
# wash) scores 48, and 13 with its contrast halved.
LOW_QUALITY = 8
# Images this small carry too few pixels for a meaningful hash.
MIN_SIDE = 16

_DIGEST_BYTES = 16  # fingerprint.file_digest: the first 16 bytes of SHA-256


def _unhex(texts: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """Many hex hashes at once: one join and one bytes.fromhex, not one call per file."""
    raw = bytes.fromhex("".join(texts))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(shape)


def _hex_rows(arr: np.ndarray) -> str:
    return arr.astype(">u8").tobytes().hex()


class FileTable(Sequence):
    """Hashed files in columns, sorted by path; ``table[i]`` is a HashedFile.

    ``words`` is (n, w) uint64 (``hash`` as numbers), ``variants`` (n, 8, w)
    and ``extras`` (n, k, w) or None when the files carry none. ``digest`` is
    (n, 16) uint8 and ``has_digest`` says which rows have one.

    >>> t = FileTable.from_records([HashedFile("a.png", 1, 0, 640, 480, "00000000000000ff", quality=0)])
    >>> t[0].hash, t[-1].pixels, bool(t.low_information[0])
    ('00000000000000ff', 307200, True)
    """

    __slots__ = ("paths", "size", "mtime_ns", "width", "height", "quality", "digest", "has_digest",
                 "words", "variants", "extras")

    def __init__(self, *, paths, size, mtime_ns, width, height, quality, digest, has_digest, words,
                 variants=None, extras=None):
        self.paths: list[str] = list(paths)
        self.size, self.mtime_ns = size, mtime_ns
        self.width, self.height, self.quality = width, height, quality
        self.digest, self.has_digest = digest, has_digest
        self.words, self.variants, self.extras = words, variants, extras

    @classmethod
    def from_records(cls, records: Iterable[HashedFile]) -> FileTable:
        """A table of the records, sorted by path."""
        builder = TableBuilder()
        for r in records:
            builder.add(r)
        return builder.finish()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("FileTable index out of range")
        return HashedFile(
            self.paths[i], int(self.size[i]), int(self.mtime_ns[i]), int(self.width[i]), int(self.height[i]),
            _hex_rows(self.words[i]),
            self.digest[i].tobytes().hex() if self.has_digest[i] else "",
            "" if self.variants is None else _hex_rows(self.variants[i]),
            int(self.quality[i]),
            "" if self.extras is None else _hex_rows(self.extras[i]),
        )

    def __eq__(self, other):
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"<FileTable of {len(self)} files, {self.words.shape[1] * 64}-bit hashes>"

    @property
    def low_information(self) -> np.ndarray:
        """Blank, flat or tiny files, as a bool per row (see LOW_QUALITY)."""
        return (self.quality < LOW_QUALITY) | (np.minimum(self.width, self.height) < MIN_SIDE)


class TableBuilder:
    """Collects HashedFile records as they arrive and turns them into a FileTable.

    Records wait in a short list and are converted a block at a time, so a
    million files never exist as a million records at once.

    >>> b = TableBuilder(capacity=1)
    >>> for p in ("b", "a", "c"):
    ...     b.add(HashedFile(p, 1, 0, 64, 64, "0000000000000003"))
    >>> b.finish().paths
    ['a', 'b', 'c']
    """

    BLOCK = 4096

    def __init__(self, *, capacity: int = 1024):
        self._capacity = max(1, capacity)
        self._n = 0
        self._pending: list[HashedFile] = []
        self._paths: list[str] = []
        self._cols: dict[str, np.ndarray] | None = None
        self._variants = self._extras = True  # until a record lacks them

    def add(self, record: HashedFile) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        block, self._pending = self._pending, []
        if not block:
            return
        k = len(block)
        w = len(block[0].hash) // 16
        if self._cols is None:
            self._allocate(block[0], w)
        need = self._n + k
        if need > len(self._cols["size"]):
            self._grow(max(need, len(self._cols["size"]) * 3 // 2))
        s = slice(self._n, need)
        cols = self._cols
        self._paths.extend(r.path for r in block)
        cols["size"][s] = [r.size for r in block]
        cols["mtime_ns"][s] = [r.mtime_ns for r in block]
        cols["width"][s] = [r.width for r in block]
        cols["height"][s] = [r.height for r in block]
        cols["quality"][s] = [r.quality for r in block]
        cols["words"][s] = _unhex([r.hash for r in block], (k, w))
        has = [bool(r.digest) for r in block]
        if any(len(r.digest) not in (0, 2 * _DIGEST_BYTES) for r in block):
            raise ValueError(f"a content digest must be {2 * _DIGEST_BYTES} hex digits")
        cols["has_digest"][s] = has
        if any(has):
            digests = [r.digest if r.digest else "00" * _DIGEST_BYTES for r in block]
            cols["digest"][s] = np.frombuffer(bytes.fromhex("".join(digests)), np.uint8).reshape(k, _DIGEST_BYTES)
        for name in ("variants", "extras"):
            if name not in cols:
                continue
            texts = [getattr(r, name) for r in block]
            width = len(texts[0])
            if not width or any(len(t) != width for t in texts):
                del cols[name]  # some file lacks them: the table carries none
                continue
            cols[name][s] = _unhex(texts, (k, width // (16 * w), w))
        self._n = need

    def _allocate(self, first: HashedFile, w: int) -> None:
        n = self._capacity
        self._cols = {
            "size": np.zeros(n, np.int64), "mtime_ns": np.zeros(n, np.int64),
            "width": np.zeros(n, np.int32), "height": np.zeros(n, np.int32), "quality": np.zeros(n, np.uint8),
            "digest": np.zeros((n, _DIGEST_BYTES), np.uint8), "has_digest": np.zeros(n, bool),
            "words": np.zeros((n, w), np.uint64),
        }
        for name in ("variants", "extras"):
            count = len(getattr(first, name)) // (16 * w)
            if count:
                self._cols[name] = np.zeros((n, count, w), np.uint64)

    def _grow(self, n: int) -> None:
        for name, col in self._cols.items():
            bigger = np.zeros((n, *col.shape[1:]), col.dtype)
            bigger[: self._n] = col[: self._n]
            self._cols[name] = bigger

    def finish(self) -> FileTable:
        """The table, sorted by path (rows are moved one column at a time, to keep the peak low)."""
        self._flush()
        paths, n = self._paths, self._n
        if self._cols is None:
            self._allocate(HashedFile("", 0, 0, 0, 0, "0" * 16), 1)
        order = np.array(sorted(range(n), key=paths.__getitem__), dtype=np.int64)
        cols = {}
        for name in list(self._cols):
            col = self._cols.pop(name)
            cols[name] = col[order]  # a sorted copy of the first n rows
            del col
        self._paths = []
        return FileTable(paths=[paths[i] for i in order.tolist()], **cols)


def low_information_mask(files: Sequence[HashedFile]) -> np.ndarray:
    """A bool per file: blank, flat or tiny (vectorised for a FileTable).

    >>> low_information_mask([HashedFile("a", 1, 0, 8, 64, "00")]).tolist()
    [True]
    """
    if isinstance(files, FileTable):
        return files.low_information
    return np.array([f.quality < LOW_QUALITY or min(f.width, f.height) < MIN_SIDE for f in files], dtype=bool)


def same_content_pairs(files: Sequence[HashedFile]) -> tuple[np.ndarray, np.ndarray]:
    """Byte-identical files: (first file with a digest, each later file with the same one).

    >>> fs = [HashedFile(p, 1, 0, 8, 8, "00", digest="ab" * 16) for p in "xyz"]
    >>> [a.tolist() for a in same_content_pairs(fs)]
    [[0, 0], [1, 2]]
    """
    if not isinstance(files, FileTable):
        by_digest: dict[str, int] = {}
        a, b = [], []
        for i, f in enumerate(files):
            if not f.digest:
                continue
            j = by_digest.setdefault(f.digest, i)
            if j != i:
                a.append(j)
                b.append(i)
        return np.array(a, np.int64), np.array(b, np.int64)
    rows = np.flatnonzero(files.has_digest)
    if len(rows) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    halves = files.digest[rows].view("<u8").reshape(len(rows), 2)
    order = rows[np.lexsort((rows, halves[:, 1], halves[:, 0]))]  # by digest, then by row
    d = files.digest[order].view("<u8").reshape(len(order), 2)
    new = np.ones(len(order), bool)
    new[1:] = (d[1:] != d[:-1]).any(axis=1)
    first = order[np.flatnonzero(new)][np.cumsum(new) - 1]
    later = ~new
    return first[later].astype(np.int64), order[later].astype(np.int64)
