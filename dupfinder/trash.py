"""Where a file goes in the desktop trash, by the freedesktop.org Trash specification 1.0.

A file on the home file system goes to ``$XDG_DATA_HOME/Trash`` (default
``~/.local/share/Trash``); a file on another file system goes to that file
system's own trash, ``$topdir/.Trash/$uid`` when an administrator made a
sticky ``.Trash`` there, else ``$topdir/.Trash-$uid``, so trashing never
copies across disks. Each trashed file ``files/NAME`` has an
``info/NAME.trashinfo`` with its original path (URL-encoded, relative to
``$topdir`` in a top-directory trash) and the deletion date, which is what
file managers read to offer "Restore".

This module only chooses names; :mod:`dupfinder.journal` moves the file.

>>> place = TrashPlace(files="/t/files", info="/t/info", topdir=None)
>>> info_text("/home/me/a b.jpg", place, when=datetime(2024, 5, 1, 12, 0, 0))
'[Trash Info]\\nPath=/home/me/a%20b.jpg\\nDeletionDate=2024-05-01T12:00:00\\n'
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

__all__ = ["TrashPlace", "trash_for", "reserve_name", "info_text", "mount_point", "home_trash", "device"]


@dataclass(frozen=True, slots=True)
class TrashPlace:
    """A trash folder's ``files`` and ``info`` folders; ``topdir`` is set for a top-directory trash.

    >>> TrashPlace("/t/files", "/t/info", None).topdir is None
    True
    """

    files: str
    info: str
    topdir: str | None


def mount_point(path: str) -> str:
    """The top folder of the file system ``path`` is on.

    >>> mount_point("/")
    '/'
    """
    path = os.path.abspath(path)
    dev = os.stat(path).st_dev
    while True:
        parent = os.path.dirname(path)
        if parent == path or os.stat(parent).st_dev != dev:
            return path
        path = parent


def home_trash() -> str:
    """The home trash folder: ``$XDG_DATA_HOME/Trash`` or ``~/.local/share/Trash``."""
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(os.path.abspath(data), "Trash")


def device(path: str) -> int:
    """The device number of ``path``, or of its nearest folder that exists.

    >>> device("/no/such/folder") == os.stat("/").st_dev
    True
    """
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.stat(path).st_dev


def _writable(folder: str) -> bool:
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return os.access(folder, os.W_OK)


def _place(root: str, topdir: str | None) -> TrashPlace:
    return TrashPlace(os.path.join(root, "files"), os.path.join(root, "info"), topdir)


def trash_for(path: str, *, trash_dir: str | os.PathLike | None = None) -> TrashPlace | str:
    """The trash that ``path`` goes to, or a message saying why there is none.

    ``trash_dir`` overrides the choice (tests use it; so can a person, with
    $DUPFINDER_TRASH_DIR), and original paths are then absolute.
    """
    if trash_dir:
        return _place(os.path.abspath(os.fspath(trash_dir)), None)
    folder = os.path.dirname(os.path.abspath(path))
    home = home_trash()
    if device(home) == os.stat(folder).st_dev:
        return _place(home, None)
    top = mount_point(folder)
    uid = os.getuid()
    admin = os.path.join(top, ".Trash")
    try:
        st = os.lstat(admin)
    except OSError:
        st = None
    # The spec: use $topdir/.Trash only if it is a real folder with the
    # sticky bit (so users cannot remove each other's files); never a link.
    if st is not None and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
        candidate = os.path.join(admin, str(uid))
        if _writable(candidate):
            return _place(candidate, top)
    candidate = os.path.join(top, f".Trash-{uid}")
    if os.path.islink(candidate):
        return f"{candidate} is a symbolic link; the trash spec forbids using it"
    if _writable(candidate):
        return _place(candidate, top)
    return f"no trash folder can be made on the file system at {top}"


def info_text(path: str, place: TrashPlace, *, when: datetime | None = None) -> str:
    """The ``.trashinfo`` file for ``path``: its original location and the deletion time."""
    original = os.path.abspath(path)
    if place.topdir is not None:
        original = os.path.relpath(original, place.topdir)
    when = when or datetime.now()  # local time, as the spec says
    return (
        "[Trash Info]\n"
        f"Path={quote(os.fsencode(original), safe='/')}\n"
        f"DeletionDate={when.strftime('%Y-%m-%dT%H:%M:%S')}\n"
    )


def reserve_name(place: TrashPlace, path: str) -> tuple[str, str, str]:
    """A free name in the trash for ``path``: (files path, info path, info text).

    The name is only chosen here; creating the ``.trashinfo`` with O_EXCL is
    what reserves it, so two programs trashing at once cannot collide.
    """
    name = os.path.basename(path)
    stem, ext = os.path.splitext(name)
    i = 1
    while True:
        candidate = name if i == 1 else f"{stem}.{i}{ext}"
        files = os.path.join(place.files, candidate)
        info = os.path.join(place.info, candidate + ".trashinfo")
        if not os.path.lexists(files) and not os.path.lexists(info):
            return files, info, info_text(path, place)
        i += 1
