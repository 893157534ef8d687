"""Find the image files under a set of roots; never opens an image.

The walker yields :class:`FileEntry` records for regular files whose name
ends in an image extension, and :class:`ScanError` records for what it could
not list or stat. It uses ``os.scandir`` so that one ``stat`` per file is all
it costs, and it never opens a file, so a FIFO or a device cannot block it.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator

from .models import FileEntry, ScanError

__all__ = ["IMAGE_EXTENSIONS", "walk", "is_image_name"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif"}
)


def is_image_name(name: str) -> bool:
    """Tell whether a file name has one of the image extensions, in any case.

    >>> is_image_name("IMG_0001.JPG"), is_image_name("notes.txt")
    (True, False)
    """
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _matches(path: str, patterns: Iterable[str]) -> bool:
    # A pattern matches the whole path or the bare name, so that both
    # "*.png" and "*/thumbnails/*" do what people mean.
    name = os.path.basename(path)
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _message(exc: OSError) -> str:
    return exc.strerror or str(exc)


def walk(
    roots: Iterable[str | os.PathLike],
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    follow_symlinks: bool = False,
) -> Iterator[FileEntry | ScanError]:
    """Yield every image file under the roots, and an error for what cannot be read.

    Roots may be folders or files. A file is taken when its extension is an
    image extension and, if ``include`` globs are given, one of them matches;
    ``exclude`` globs drop files and whole folders. A glob matches the path
    or the bare name, case-sensitively. Symbolic links are skipped unless ``follow_symlinks``,
    and then a folder already visited (same device and inode) is not entered
    again, so a link loop ends. Entries of a folder come in name order, so
    a scan's output does not depend on the file system's order.

    A file is one file however many names it has: hard links to it (after
    ``apply --action hardlink``, or in a snapshot backup) are listed once,
    under the first name the walk meets, and a followed link to a file the
    walk lists under its own name is dropped; they take no extra space, so
    they are not duplicates. (Links whose file lies outside the roots come
    last, under the link's name.)

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.JPG").write_bytes(b"x"); _ = (d / "b.txt").write_bytes(b"y")
    >>> [os.path.basename(e.path) for e in walk([d])]
    ['a.JPG']
    """
    if isinstance(roots, (str, bytes, os.PathLike)):  # one path, not its characters
        roots = [roots]
    include = tuple(include)
    exclude = tuple(exclude)
    seen_dirs: set[tuple[int, int]] = set()
    # Files listed that may have another name here: hard links always, and
    # every file when links are followed (a link may come before or after
    # its file). Files reached through a link wait in `held` until the end.
    # (One int a file, not a tuple: half the memory over 10^6 files.)
    seen_files: set[int] = set()
    held: dict[int, FileEntry] = {}

    def listed(path: str, st: os.stat_result, *, through_link: bool) -> FileEntry | None:
        entry = FileEntry(path, st.st_size, st.st_mtime_ns)
        if not st.st_ino:  # no inode numbers (Windows' scandir, some network file systems): names cannot be told apart
            return entry
        key = (st.st_dev << 64) | st.st_ino
        if key in seen_files:
            return None
        if through_link:
            held.setdefault(key, entry)
            return None
        if follow_symlinks or st.st_nlink > 1:
            seen_files.add(key)
            held.pop(key, None)
        return entry

    def wanted(path: str, name: str) -> bool:
        if not is_image_name(name):
            return False
        if exclude and _matches(path, exclude):
            return False
        return not include or _matches(path, include)

    def visit_dir(path: str) -> Iterator[FileEntry | ScanError]:
        try:
            st = os.stat(path)
        except OSError as exc:
            yield ScanError(path, "walk", _message(exc))
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            return
        seen_dirs.add(key)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield ScanError(path, "walk", _message(exc))
            return
        for entry in entries:
            yield from visit_entry(entry.path, entry)

    def visit_entry(path: str, entry: os.DirEntry | None) -> Iterator[FileEntry | ScanError]:
        try:
            is_link = entry.is_symlink() if entry is not None else os.path.islink(path)
            if is_link and not follow_symlinks:
                return
            st = os.stat(path, follow_symlinks=True) if is_link else (
                entry.stat(follow_symlinks=False) if entry is not None else os.stat(path)
            )
        except FileNotFoundError:
            if entry is not None and is_link:
                return  # a dangling link is not a file we were asked about
            yield ScanError(path, "walk", "file vanished before it could be read")
            return
        except OSError as exc:
            yield ScanError(path, "walk", _message(exc))
            return
        if stat.S_ISDIR(st.st_mode):
            if exclude and _matches(path, exclude):
                return
            yield from visit_dir(path)
        elif stat.S_ISREG(st.st_mode):
            if wanted(path, os.path.basename(path)) and (entry := listed(path, st, through_link=is_link)):
                yield entry
        # FIFOs, sockets and devices are never opened: they could block or
        # stream forever, and they are not photos.

    for root in roots:
        root = os.fsdecode(root)  # bytes too: the names are compared as text
        if os.path.isdir(root) and not os.path.islink(root):
            yield from visit_dir(root)
        elif not os.path.lexists(root):
            yield ScanError(root, "walk", "no such file or folder")
        else:
            # A root named on the command line is followed even if it is a
            # link: the user pointed at it.
            try:
                st = os.stat(root)
            except OSError as exc:
                yield ScanError(root, "walk", _message(exc))
                continue
            if stat.S_ISDIR(st.st_mode):
                yield from visit_dir(root)
            elif stat.S_ISREG(st.st_mode):
                if entry := listed(root, st, through_link=False):
                    yield entry
            else:
                yield ScanError(root, "walk", "not a regular file or folder")
    yield from held.values()
