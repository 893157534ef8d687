"""Records that flow through the pipeline, and dupfinder's exceptions.

Every record is a frozen dataclass: values, not objects with behaviour.

>>> ScanError("a.jpg", "decode", "image file is truncated")
ScanError(path='a.jpg', stage='decode', message='image file is truncated')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "DupfinderError",
    "UsageError",
    "ReportFormatError",
    "FileEntry",
    "ScanError",
    "HashedFile",
    "Progress",
    "Member",
    "DuplicateGroup",
    "ScanSettings",
    "ScanResult",
]


class DupfinderError(Exception):
    """Base class of every error dupfinder raises on purpose."""


class UsageError(DupfinderError, ValueError):
    """An option or argument that cannot work (bad threshold, unknown algorithm)."""


class ReportFormatError(DupfinderError, ValueError):
    """A report file that dupfinder cannot read back (wrong columns, bad JSON)."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A regular file the walker found, with what ``stat`` said of it.

    >>> FileEntry("photos/a.jpg", size=1024, mtime_ns=1_700_000_000_000_000_000).size
    1024
    """

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class ScanError:
    """A file or folder that could not be used, and why: data, never a crash.

    ``stage`` says where it failed: ``walk`` (listing or stat), ``open``
    (reading the file or recognising the format), ``decode`` (pixels),
    ``hash``, or ``partial`` (the local features of ``--partial``; the file
    is still hashed and grouped).

    >>> ScanError("b.png", "open", "cannot identify image file").stage
    'open'
    """

    path: str
    stage: str
    message: str


@dataclass(frozen=True, slots=True)
class HashedFile:
    """A file that decoded and hashed: its size, dimensions and fingerprint.

    ``hash`` is the fingerprint as lowercase hex, the same text ImageHash
    prints; ``width`` and ``height`` are as a person sees the image (after
    EXIF orientation).

    ``digest`` is the hex SHA-256 prefix of the bytes, when it was read;
    ``variants`` the hex of the hashes under the 8 flips and turns
    (concatenated, the first is ``hash``); ``quality`` PDQ's 0-100 detail
    score (blank images score 0).

    >>> HashedFile("a.jpg", 10, 0, 640, 480, "d1c4b0f0e0c0c0c0").pixels
    307200
    """

    path: str
    size: int
    mtime_ns: int
    width: int
    height: int
    hash: str
    digest: str = ""
    variants: str = ""
    quality: int = 100
    extras: str = ""

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a stage has got; the core emits these, the CLI draws them.

    ``total`` is None while it is not known yet (during the walk).

    >>> Progress("hash", done=10, total=40).fraction
    0.25
    """

    stage: str
    done: int
    total: int | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return self.done / self.total


@dataclass(frozen=True, slots=True)
class Member:
    """One file of a duplicate group, as the report shows it.

    ``distance`` is the Hamming distance in bits to the group's kept file
    (0 for the kept file itself). ``new`` marks a file first seen after the
    ``--new-since`` time. ``box`` (left, top, right, bottom, in pixels) is set
    for a partial copy (``--partial``): with transform ``crop``, the part of
    the kept file this file shows, in the kept file's pixels; with
    ``contained``, where the kept file is inside this file, in its pixels.

    >>> Member("a.jpg", keep=True, distance=0, width=1, height=1, size=3,
    ...        mtime_ns=0, hash="00").keep
    True
    """

    path: str
    keep: bool
    distance: int
    width: int
    height: int
    size: int
    mtime_ns: int
    hash: str
    transform: str = ""
    new: bool = False
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Files that are near-duplicates of each other; the kept file comes first.

    ``max_distance`` is the largest distance between any two members, so a
    chain (a~b, b~c, but a far from c) shows as a value above the threshold.

    >>> g = DuplicateGroup(1, (Member("a", True, 0, 1, 1, 1, 0, "0"),
    ...                        Member("b", False, 2, 1, 1, 1, 0, "3")), 2)
    >>> g.keep.path, len(g)
    ('a', 2)
    """

    id: int
    members: tuple[Member, ...]
    max_distance: int

    @property
    def keep(self) -> Member:
        return self.members[0]

    def __len__(self) -> int:
        return len(self.members)


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Everything that changes a scan's answer, recorded in the JSON report.

    >>> ScanSettings(roots=("photos",)).algorithm
    'phash'
    """

    roots: tuple[str, ...]
    threshold: int = 5
    algorithm: str = "phash"
    hash_size: int = 8
    compat: str | None = None
    orient: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    follow_symlinks: bool = False
    index: str = "auto"
    keep: str = "default"
    new_since: float | None = None
    transforms: bool = True
    partial: bool = False


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a scan found: the groups, every file hashed, and every failure.

    ``files`` is a sequence of :class:`HashedFile` sorted by path; ``scan()``
    returns a :class:`dupfinder.filetable.FileTable`, which keeps them as
    numpy columns (a million files in about 400 MB) and builds each record
    when it is read.

    >>> r = ScanResult(ScanSettings(roots=(".",)), files=(), groups=(), errors=())
    >>> r.duplicate_count, r.has_duplicates
    (0, False)
    """

    settings: ScanSettings
    files: Sequence[HashedFile]
    groups: tuple[DuplicateGroup, ...]
    errors: tuple[ScanError, ...]
    elapsed: float = 0.0
    counts: dict = field(default_factory=dict, compare=False)

    @property
    def has_duplicates(self) -> bool:
        return bool(self.groups)

    @property
    def duplicate_count(self) -> int:
        """Files that are in a group but are not its kept file."""
        return sum(len(g) - 1 for g in self.groups)
