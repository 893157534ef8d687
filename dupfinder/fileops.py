"""File operations that never lose bytes: moves that never overwrite, copies checked by SHA-256.

On one file system a file changes name by ``link`` then ``unlink``, so a
crash leaves one of the two names, or both on the same bytes, and an existing
destination is never clobbered. Across file systems it is copied beside the
destination, fsync'd, read back and compared, and only then deleted.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with open(f"{d}/a.jpg", "wb") as f:
...     _ = f.write(b"photo")
>>> move_file(f"{d}/a.jpg", f"{d}/b.jpg")
>>> os.path.exists(f"{d}/a.jpg"), open(f"{d}/b.jpg", "rb").read()
(False, b'photo')
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time

__all__ = [
    "checkpoint",
    "sha256_file",
    "fsync_dir",
    "missing_dirs",
    "same_inode",
    "link_noreplace",
    "move_file",
]

# Errors of os.link that mean "this file system has no hard links", after
# which a plain rename does the same job.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def checkpoint() -> None:
    """A point between two file operations where a crash is possible.

    Tests replace it (or set DUPFINDER_TEST_SLOW_STEPS=seconds and SIGKILL
    the process) to stop an apply at every point a power cut could.
    """
    delay = os.environ.get("DUPFINDER_TEST_SLOW_STEPS")
    if delay:
        time.sleep(float(delay))


def sha256_file(path: str) -> str:
    """The SHA-256 of a file's bytes, in hex.

    >>> import tempfile
    >>> p = tempfile.mktemp()
    >>> _ = open(p, "wb").write(b"")
    >>> sha256_file(p)[:16]
    'e3b0c44298fc1c14'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: str) -> None:
    """Flush a folder's entries to disk, so a rename in it survives a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a folder we may not open (or Windows): nothing more to do
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename still stands
    finally:
        os.close(fd)


def missing_dirs(folder: str) -> list[str]:
    """The folders that ``os.makedirs(folder)`` would create, outermost first.

    >>> missing_dirs("/")
    []
    """
    out = []
    folder = os.path.abspath(folder)
    while not os.path.isdir(folder):
        out.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return out[::-1]


def same_inode(a: str, b: str) -> bool:
    """Whether two names are the same file (links not followed); False if either is missing.

    >>> same_inode("/", "/"), same_inode("/", "/no/such/file")
    (True, False)
    """
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _copy_verified(src: str, tmp: str, expected: str | None) -> None:
    # O_EXCL: a leftover from a killed run is removed by undo, never reused.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(fd, "wb") as fout:
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copystat(src, tmp)
    if expected is not None and h.hexdigest() != expected:
        os.unlink(tmp)
        msg = f"{src}: content is not the one recorded (sha256 {h.hexdigest()})"
        raise OSError(errno.EIO, msg)
    if sha256_file(tmp) != h.hexdigest():  # read back what the disk holds
        os.unlink(tmp)
        raise OSError(errno.EIO, f"{tmp}: the copy does not read back the same")


def link_noreplace(src: str, dst: str) -> None:
    """Give ``src`` the name ``dst`` too; fails if ``dst`` exists (atomic)."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # No hard links here (FAT, some network shares): check, then rename.
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "refusing to overwrite", dst) from None
        os.rename(src, dst)


def move_file(src: str, dst: str, *, tmp: str | None = None, expected: str | None = None) -> None:
    """Move a file to ``dst`` and never overwrite; across file systems by verified copy.

    On one file system the file gets its new name by ``link`` then loses the
    old one, so ``dst`` is never clobbered and a crash leaves one of the two
    names, or both on the same bytes. Across file systems it is copied to
    ``tmp`` beside ``dst``, fsync'd, read back and compared by SHA-256
    (against ``expected`` too, when given), renamed to ``dst`` and only then
    is ``src`` deleted.
    """
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "refusing to overwrite", dst)
    try:
        link_noreplace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = tmp or os.path.join(os.path.dirname(dst), f".dupfinder-{os.getpid()}.tmp")
        _copy_verified(src, tmp, expected)
        checkpoint()
        link_noreplace(tmp, dst)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        fsync_dir(os.path.dirname(dst))
        checkpoint()
        os.unlink(src)
        fsync_dir(os.path.dirname(src))
        return
    checkpoint()
    if os.path.lexists(src) and same_inode(src, dst):
        os.unlink(src)
    fsync_dir(os.path.dirname(dst))
    fsync_dir(os.path.dirname(src))
