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

import operator
from collections.abc import Iterable, Sequence

import numpy as np

from .fingerprint import N_CROPS, N_TURNS
from .models import HashedFile

__all__ = ["FileTable", "PathColumn", "TableBuilder", "is_low_information", "low_information_mask", "same_content_pairs"]

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


def _row(i, n: int, what: str) -> int:
    """A sequence index (negative counts from the end) as a row number, or IndexError."""
    i = operator.index(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"{what} index out of range")
    return i


class PathColumn(Sequence):
    """Paths packed into one bytes object with offsets: about 60 bytes a path instead of 90.

    UTF-8 with ``surrogatepass`` takes any Python string, including the
    ``\\udcXX`` escapes os.fsdecode gives undecodable names, and gives it
    back unchanged. Holding no per-path objects also lets the memory of
    the walk's records go back to the system once they are dropped.

    >>> c = PathColumn(["a.jpg", "caf\\xe9/\\udcff.png"])
    >>> list(c) == ["a.jpg", "caf\\xe9/\\udcff.png"], len(c)
    (True, 2)
    """

    __slots__ = ("_blob", "_offsets")

    def __init__(self, paths: Iterable[str]):
        parts = [p.encode("utf-8", "surrogatepass") for p in paths]
        self._offsets = np.zeros(len(parts) + 1, np.int64)
        np.cumsum([len(b) for b in parts], out=self._offsets[1:])
        self._blob = b"".join(parts)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = _row(i, len(self), "PathColumn")
        return self._blob[self._offsets[i] : self._offsets[i + 1]].decode("utf-8", "surrogatepass")


class FileTable(Sequence):
    """Hashed files in columns, sorted by path; ``table[i]`` is a HashedFile.

    ``words`` is (n, w) uint64 (``hash`` as numbers); ``variants`` (n, 8, w)
    and ``extras`` (n, k, w), or None when no file carries them (a file
    without them, from a damaged cache row, has stand-ins that compare as
    the file is: its hash in every orientation, crop and turn). ``extras`` is a view of an array stored hash kind
    first, (k, n, w), so that one kind for all files, or the crop and turn
    kinds together, is a contiguous block the index searches without a copy.
    ``digest`` is (n, 16) uint8 and ``has_digest`` says which rows have one.

    >>> t = FileTable.from_records([HashedFile("a.png", 1, 0, 640, 480, "00000000000000ff", quality=0)])
    >>> t[0].hash, t[-1].pixels, bool(t.low_information[0])
    ('00000000000000ff', 307200, True)
    """

    __slots__ = ("_by_kind", "_has", "_mtime_big", "_variants", "digest", "has_digest", "height", "mtime_ns",
                 "paths", "quality", "size", "width", "words")

    def __init__(self, *, paths, size, mtime_ns, width, height, quality, digest, has_digest, words,
                 variants=None, extras_by_kind=None, has_variants=None, has_extras=None, mtime_big=None):
        self.paths = paths if isinstance(paths, PathColumn) else PathColumn(paths)
        self.size, self.mtime_ns = size, mtime_ns
        self.width, self.height, self.quality = width, height, quality
        self.digest, self.has_digest = digest, has_digest
        self.words = words
        self._variants, self._by_kind = variants, extras_by_kind
        n = len(self.paths)
        self._has = {
            "variants": np.ones(n, bool) if has_variants is None else has_variants,
            "extras": np.ones(n, bool) if has_extras is None else has_extras,
        }
        # mtimes past 2262 (or before 1677) do not fit int64 nanoseconds: kept exactly here.
        self._mtime_big: dict[int, int] = mtime_big or {}

    @classmethod
    def from_records(cls, records: Iterable[HashedFile]) -> FileTable:
        """A table of the records, sorted by path."""
        builder = TableBuilder()
        for r in records:
            builder.add(r)
        return builder.finish()

    @property
    def variants(self) -> np.ndarray | None:
        """(n, 8, w), or None when no file has them; a file without them has its hash in each."""
        return self._variants

    @property
    def extras(self) -> np.ndarray | None:
        """(n, k, w) view, or None when no file has them; a file without them has its hash as crops and turns."""
        return None if self._by_kind is None else self._by_kind.transpose(1, 0, 2)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[k] for k in range(*i.indices(len(self))))
        i = _row(i, len(self), "FileTable")
        variants = self._variants is not None and self._has["variants"][i]
        extras = self._by_kind is not None and self._has["extras"][i]
        return HashedFile(
            self.paths[i], int(self.size[i]), self._mtime_big.get(i, int(self.mtime_ns[i])),
            int(self.width[i]), int(self.height[i]),
            _hex_rows(self.words[i]),
            self.digest[i].tobytes().hex() if self.has_digest[i] else "",
            _hex_rows(self._variants[i]) if variants else "",
            int(self.quality[i]),
            _hex_rows(self._by_kind[:, i]) if extras else "",
        )

    def brief(self, i: int) -> HashedFile:
        """Row ``i`` without its variant and extra hashes: what a report's member and a keep rule use, 4x cheaper.

        >>> t = FileTable.from_records([HashedFile("a.jpg", 3, 1, 8, 8, "00000000000000ff", variants="ff" * 64)])
        >>> t.brief(0).variants, t[0].variants[:4]
        ('', 'ffff')
        """
        i = _row(i, len(self), "FileTable")
        return HashedFile(
            self.paths[i], int(self.size[i]), self._mtime_big.get(i, int(self.mtime_ns[i])),
            int(self.width[i]), int(self.height[i]), _hex_rows(self.words[i]),
            self.digest[i].tobytes().hex() if self.has_digest[i] else "", "", int(self.quality[i]),
        )

    def __eq__(self, other):
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __hash__(self):
        return hash(tuple(self))  # as the tuple of records it stands for (ScanResult is hashable)

    def __repr__(self) -> str:
        return f"<FileTable of {len(self)} files, {self.words.shape[1] * 64}-bit hashes>"

    @property
    def low_information(self) -> np.ndarray:
        """Blank, flat or tiny files, as a bool per row (see LOW_QUALITY)."""
        return (self.quality < LOW_QUALITY) | (np.minimum(self.width, self.height) < MIN_SIDE)


_INT64 = (-(2**63), 2**63 - 1)


class TableBuilder:
    """Collects HashedFile records as they arrive and turns them into a FileTable.

    Records wait in a short list and are converted a block at a time, so a
    million files never exist as a million records at once. Every record
    must have a hash of the same length (else ValueError); variants or
    extras of another length than the first file's are kept as none.

    >>> b = TableBuilder(capacity=1)
    >>> for p in ("b", "a", "c"):
    ...     b.add(HashedFile(p, 1, 0, 64, 64, "0000000000000003"))
    >>> list(b.finish().paths)
    ['a', 'b', 'c']
    """

    BLOCK = 4096

    def __init__(self, *, capacity: int = 1024):
        self._capacity = max(1, capacity)
        self._n = 0
        self._w = 0
        self._pending: list[HashedFile] = []
        self._paths: list[str] = []
        self._cols: dict[str, np.ndarray] = {}
        self._mtime_big: dict[int, int] = {}

    def add(self, record: HashedFile) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        block, self._pending = self._pending, []
        if not block:
            return
        k = len(block)
        if not self._cols:
            self._w = max(1, len(block[0].hash) // 16)
            self._allocate()
        w = self._w
        if any(len(r.hash) != 16 * w for r in block):
            raise ValueError(f"every hash must have {16 * w} hex digits (the first one had)")
        if any(len(r.digest) not in (0, 2 * _DIGEST_BYTES) for r in block):
            raise ValueError(f"a content digest must be {2 * _DIGEST_BYTES} hex digits")
        need = self._n + k
        if need > len(self._cols["size"]):
            self._grow(max(need, len(self._cols["size"]) * 3 // 2))
        s = slice(self._n, need)
        cols = self._cols
        cols["size"][s] = [r.size for r in block]
        mtimes = [r.mtime_ns for r in block]
        for at, m in enumerate(mtimes):
            if not _INT64[0] <= m <= _INT64[1]:
                self._mtime_big[self._n + at] = m
                mtimes[at] = 0
        cols["mtime_ns"][s] = mtimes
        cols["width"][s] = [r.width for r in block]
        cols["height"][s] = [r.height for r in block]
        cols["quality"][s] = [r.quality for r in block]
        cols["words"][s] = _unhex([r.hash for r in block], (k, w))
        has = [bool(r.digest) for r in block]
        cols["has_digest"][s] = has
        if any(has):
            digests = [r.digest if r.digest else "00" * _DIGEST_BYTES for r in block]
            cols["digest"][s] = np.frombuffer(bytes.fromhex("".join(digests)), np.uint8).reshape(k, _DIGEST_BYTES)
        for name in ("variants", "extras"):
            texts = [getattr(r, name) for r in block]
            width = max(len(t) for t in texts)
            if not width:
                continue
            if name not in cols:
                self._add_hash_column(name, width // (16 * w))
            count = cols[name].shape[0 if name == "extras" else 1]
            # A list of another length (a damaged cache row) counts as none: that
            # file loses its crop or turn matches, the scan goes on.
            present = [len(t) == 16 * w * count for t in texts]
            cols["has_" + name][s] = present
            zero = "0" * (16 * w * count)
            values = _unhex([t if ok else zero for t, ok in zip(texts, present)], (k, count, w))
            if not all(present):
                # Stand-ins that compare as the file is: its own hash for each
                # orientation, crop and turn; 0 (flat: no vote) for regions.
                missing = ~np.array(present)
                shown = N_CROPS + N_TURNS if name == "extras" else count
                values[missing, :shown] = cols["words"][s][missing][:, None, :]
            if name == "extras":
                cols[name][:, s] = values.transpose(1, 0, 2)
            else:
                cols[name][s] = values
        self._paths.extend(r.path for r in block)
        self._n = need

    def _allocate(self) -> None:
        n, w = self._capacity, self._w
        self._cols = {
            "size": np.zeros(n, np.int64), "mtime_ns": np.zeros(n, np.int64),
            "width": np.zeros(n, np.int32), "height": np.zeros(n, np.int32), "quality": np.zeros(n, np.uint8),
            "digest": np.zeros((n, _DIGEST_BYTES), np.uint8), "has_digest": np.zeros(n, bool),
            "words": np.zeros((n, w), np.uint64),
        }

    def _add_hash_column(self, name: str, count: int) -> None:
        n, w = len(self._cols["size"]), self._w
        self._cols[name] = np.zeros((count, n, w) if name == "extras" else (n, count, w), np.uint64)
        self._cols["has_" + name] = np.zeros(n, bool)  # rows before this one have none

    def _grow(self, n: int) -> None:
        for name, col in self._cols.items():
            axis = 1 if name == "extras" else 0
            shape = list(col.shape)
            shape[axis] = n
            bigger = np.zeros(shape, col.dtype)
            if axis:
                bigger[:, : self._n] = col[:, : self._n]
            else:
                bigger[: self._n] = col[: self._n]
            self._cols[name] = bigger

    def finish(self) -> FileTable:
        """The table, sorted by path (rows are moved one column at a time, to keep the peak low)."""
        self._flush()
        paths, n = self._paths, self._n
        if not self._cols:
            self._w = 1
            self._allocate()
        order = np.array(sorted(range(n), key=paths.__getitem__), dtype=np.int64)
        rank = {int(old): new for new, old in enumerate(order.tolist())} if self._mtime_big else {}
        cols = {}
        for name in list(self._cols):
            col = self._cols.pop(name)
            # A sorted copy of the first n rows (np.take: col[:, order] would come out transposed, not contiguous).
            cols[name] = np.take(col, order, axis=1 if name == "extras" else 0)
            del col
        self._paths = []  # the strings go as the column is packed
        table = FileTable(
            paths=PathColumn(paths[i] for i in order.tolist()),
            size=cols["size"], mtime_ns=cols["mtime_ns"], width=cols["width"], height=cols["height"],
            quality=cols["quality"], digest=cols["digest"], has_digest=cols["has_digest"], words=cols["words"],
            variants=cols.get("variants"), extras_by_kind=cols.get("extras"),
            has_variants=cols.get("has_variants"), has_extras=cols.get("has_extras"),
            mtime_big={rank[i]: m for i, m in self._mtime_big.items()},
        )
        self._paths, self._n, self._mtime_big = [], 0, {}
        return table


def is_low_information(f: HashedFile) -> bool:
    """Blank, flat or tiny: such a file groups only with byte-identical copies.

    >>> is_low_information(HashedFile("white.png", 1, 0, 640, 480, "0", quality=0))
    True
    """
    return f.quality < LOW_QUALITY or min(f.width, f.height) < MIN_SIDE


def low_information_mask(files: Sequence[HashedFile]) -> np.ndarray:
    """A bool per file: blank, flat or tiny (vectorised for a FileTable).

    >>> low_information_mask([HashedFile("a", 1, 0, 8, 64, "00")]).tolist()
    [True]
    """
    if isinstance(files, FileTable):
        return files.low_information
    return np.array([is_low_information(f) for f in files], dtype=bool)


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
