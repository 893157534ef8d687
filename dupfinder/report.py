"""Write scan results as CSV or JSON, atomically, and read dupfinder's CSV back.

File names are bytes on POSIX and need not be UTF-8. Both formats keep them
exactly: the CSV is UTF-8 with undecodable bytes written back as the same
bytes (Python's ``surrogateescape``), and the JSON escapes them as lone
surrogates ``\\udc80``-``\\udcff`` (``os.fsdecode``'s convention), which
``json.loads`` and :func:`os.fsencode` turn back into the original bytes.

Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a
formula. Such a cell (and one starting with a tab, a carriage return or a
single quote) is written with a leading ``'``, which spreadsheets show as
text; :func:`read_csv` removes it again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import numpy as np

from .filetable import low_information_mask
from .models import ReportFormatError, ScanResult, UsageError

__all__ = [
    "CSV_COLUMNS",
    "ERROR_COLUMNS",
    "REPORT_VERSION",
    "FORMATS",
    "write_report",
    "render_csv",
    "render_json",
    "render_errors_csv",
    "read_csv",
    "escape_cell",
    "unescape_cell",
    "atomic_writer",
    "format_time",
]

CSV_COLUMNS = (
    "group",
    "path",
    "keep",
    "distance",
    "transform",
    "width",
    "height",
    "bytes",
    "modified",
    "hash",
    "group_size",
    "group_max_distance",
    "new",
)
ERROR_COLUMNS = ("path", "stage", "message")
REPORT_VERSION = 1
FORMATS = ("csv", "json", "html")

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def escape_cell(value: str) -> str:
    """Make a text cell safe from spreadsheet formulas.

    >>> escape_cell("=HYPERLINK(1)"), escape_cell("photo.jpg")
    ("'=HYPERLINK(1)", 'photo.jpg')
    """
    return "'" + value if value.startswith(_FORMULA_START) else value


def unescape_cell(value: str) -> str:
    """Undo :func:`escape_cell`.

    >>> unescape_cell("'=HYPERLINK(1)"), unescape_cell("'plain")
    ('=HYPERLINK(1)', "'plain")
    """
    if value.startswith("'") and value[1:].startswith(_FORMULA_START):
        return value[1:]
    return value


def format_time(mtime_ns: int) -> str:
    """A modification time as ISO 8601 in UTC, to the second.

    >>> format_time(1_700_000_000_123_456_789)
    '2023-11-14T22:13:20Z'
    """
    return datetime.fromtimestamp(mtime_ns // 1_000_000_000, tz=timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _csv_rows(result: ScanResult) -> Iterator[list]:
    # "new" only means something when the scan compared with an earlier one.
    since = result.settings.new_since is not None
    for group in result.groups:
        for m in group.members:
            yield csv_row(group, m, since=since)


def csv_row(group, m, *, since: bool) -> list:
    """A member's row of the CSV report (``keep`` is its third field; ``since``: the scan had --new-since)."""
    return [
        group.id,
        escape_cell(m.path),
        "yes" if m.keep else "no",
        m.distance,
        m.transform,
        m.width,
        m.height,
        m.size,
        format_time(m.mtime_ns),
        m.hash,
        len(group),
        group.max_distance,
        ("yes" if m.new else "no") if since else "",
    ]


def csv_text(row) -> str:
    """One CSV line (no line end) exactly as the CSV report writes it.

    >>> csv_text([1, "a,b.jpg", "yes"])
    '1,"a,b.jpg",yes'
    """
    buf = io.StringIO()
    _csv_writer(buf).writerow(row)
    return buf.getvalue()[:-1]


def render_csv(result: ScanResult, out: io.TextIOBase) -> None:
    """Write one CSV row per file that is in a group, kept file first.

    >>> from dupfinder.models import ScanSettings
    >>> buf = io.StringIO()
    >>> render_csv(ScanResult(ScanSettings(roots=(".",)), (), (), ()), buf)
    >>> buf.getvalue().splitlines()[0]
    'group,path,keep,distance,transform,width,height,bytes,modified,hash,group_size,group_max_distance,new'
    """
    writer = _csv_writer(out)
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_csv_rows(result))


class _csv_writer:  # noqa: N801 (used as csv.writer is)
    r"""A csv.writer with "\n" line ends that still quotes a field holding "\r".

    Python's writer quotes only the characters of its own line terminator:
    with "\n", a file name with a carriage return went out bare and split
    its row in two for every reader (and for ``dupfinder apply``).

    >>> buf = io.StringIO()
    >>> _csv_writer(buf).writerows([["a\rb", "c"], ["d", "e"]])
    >>> buf.getvalue()
    '"a\rb",c\nd,e\n'
    """

    def __init__(self, out):
        self._out = out
        self._plain = csv.writer(out, lineterminator="\n")

    def writerow(self, row) -> None:
        if any(isinstance(v, str) and "\r" in v for v in row):
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\r\n").writerow(row)  # quotes what holds "\r"
            self._out.write(buf.getvalue()[:-2] + "\n")
        else:
            self._plain.writerow(row)

    def writerows(self, rows) -> None:
        for row in rows:
            self.writerow(row)


def render_errors_csv(result: ScanResult, out: io.TextIOBase) -> None:
    """Write the files that could not be read: path, stage, message."""
    writer = _csv_writer(out)
    writer.writerow(ERROR_COLUMNS)
    for e in result.errors:
        writer.writerow([escape_cell(e.path), e.stage, escape_cell(e.message)])


def _file_fields(m) -> dict:
    """What the JSON reports say of a file (a group member or a matched target), in their order."""
    return {
        "width": m.width,
        "height": m.height,
        "bytes": m.size,
        "modified": format_time(m.mtime_ns),
        "mtime_ns": m.mtime_ns,
        "hash": m.hash,
    }


def _json_document(result: ScanResult) -> dict:
    from . import __version__

    s = result.settings
    return {
        "dupfinder": __version__,
        "report_version": REPORT_VERSION,
        "settings": {
            "roots": list(s.roots),
            "threshold": s.threshold,
            "algorithm": s.algorithm,
            "hash_size": s.hash_size,
            "compat": s.compat,
            "orient": s.orient,
            "include": list(s.include),
            "exclude": list(s.exclude),
            "follow_symlinks": s.follow_symlinks,
            "index": s.index,
            "keep": s.keep,
            "new_since": s.new_since,
            "transforms": s.transforms,
            **({"partial": True} if s.partial else {}),
        },
        "counts": dict(result.counts),
        "elapsed_seconds": round(result.elapsed, 3),
        "groups": [
            {
                "id": g.id,
                "size": len(g),
                "max_distance": g.max_distance,
                "members": [
                    {
                        "path": m.path,
                        "keep": m.keep,
                        "distance": m.distance,
                        "transform": m.transform,
                        **_file_fields(m),
                        "new": m.new,
                        # A partial copy's region (see Member): only when there is one.
                        **({"box": list(m.box)} if m.box is not None else {}),
                    }
                    for m in g.members
                ],
            }
            for g in result.groups
        ],
        "errors": [{"path": e.path, "stage": e.stage, "message": e.message} for e in result.errors],
        # Blank, flat or tiny images: grouped only with byte-identical copies.
        "low_information": [
            {"path": f.path, "quality": f.quality, "width": f.width, "height": f.height}
            for f in (result.files[int(i)] for i in np.flatnonzero(low_information_mask(result.files)))
        ],
    }


def render_json(result: ScanResult, out: io.TextIOBase) -> None:
    """Write one versioned JSON document: settings, counts, groups and errors."""
    _write_json(_json_document(result), out)


_ENCODE = json.JSONEncoder(ensure_ascii=True).encode


def _write_json(document: dict, out: io.TextIOBase) -> None:
    # The text json.dump(document, out) writes, 6x faster: json.dump streams
    # through json's pure-Python encoder, json.dumps takes its C one. Lists
    # go an item at a time, so a big report is never one string in memory.
    # No indent (the C encoder serves only compact output): pipe through
    # `python -m json.tool` to read.
    out.write("{")
    for n, (key, value) in enumerate(document.items()):
        out.write((", " if n else "") + _ENCODE(key) + ": ")
        if isinstance(value, list):
            out.write("[")
            out.writelines((", " if k else "") + _ENCODE(item) for k, item in enumerate(value))
            out.write("]")
        else:
            out.write(_ENCODE(value))
    out.write("}\n")


MATCH_COLUMNS = (
    "path",
    "reference",
    "distance",
    "transform",
    "algorithm",
    "width",
    "height",
    "bytes",
    "modified",
    "hash",
    "matches",
)


def render_match_csv(result, out: io.TextIOBase) -> None:
    """One row per matching target: its closest reference, distance and transform.

    >>> from dupfinder.match import MatchResult
    >>> from dupfinder.models import ScanSettings
    >>> buf = io.StringIO()
    >>> render_match_csv(MatchResult(ScanSettings(roots=(".",)), (), (), ()), buf)
    >>> buf.getvalue().split(",")[:5]
    ['path', 'reference', 'distance', 'transform', 'algorithm']
    """
    writer = _csv_writer(out)
    writer.writerow(MATCH_COLUMNS)
    algorithm = result.settings.algorithm
    for m in result.matches:
        best = m.best
        writer.writerow([
            escape_cell(m.path), escape_cell(best.reference), best.distance, best.transform, algorithm,
            m.width, m.height, m.size, format_time(m.mtime_ns), m.hash, len(m.hits),
        ])


def render_match_json(result, out: io.TextIOBase) -> None:
    """One document: settings, counts, every match with all its references, errors."""
    from . import __version__

    s = result.settings
    doc = {
        "dupfinder": __version__,
        "report_version": REPORT_VERSION,
        "kind": "match",
        "settings": {
            "targets": list(s.roots),
            "threshold": s.threshold,
            "algorithm": s.algorithm,
            "hash_size": s.hash_size,
            "transforms": s.transforms,
            "orient": s.orient,
            "compat": s.compat,
            **({"partial": True} if s.partial else {}),
        },
        "counts": dict(result.counts),
        "elapsed_seconds": round(result.elapsed, 3),
        "matches": [
            {
                "path": m.path,
                **_file_fields(m),
                "references": [
                    {"reference": h.reference, "distance": h.distance, "transform": h.transform,
                     **({"box": list(h.box)} if h.box is not None else {})}
                    for h in m.hits
                ],
            }
            for m in result.matches
        ],
        "errors": [{"path": e.path, "stage": e.stage, "message": e.message} for e in result.errors],
    }
    _write_json(doc, out)


MATCH_RENDERERS = {"csv": render_match_csv, "json": render_match_json}
def _render_html(result: ScanResult, out: io.TextIOBase) -> None:
    # Imported late: the HTML report decodes thumbnails, the others never do.
    from .html_report import render_html

    render_html(result, out)


_RENDERERS = {"csv": render_csv, "json": render_json, "html": _render_html}


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_writer(path: str | os.PathLike, *, binary: bool = False) -> Iterator[io.TextIOBase]:
    """Open a text file that appears at ``path`` only once it is complete.

    The text goes to a temporary file in the same folder, is flushed to disk,
    then renamed over ``path``: a crash or a full disk leaves the previous
    report in place, never half a report. ``binary`` gives a bytes file.
    A symbolic link stays: the file it points to is replaced. A path that
    is not a file (``/dev/stdout``, a named pipe, a device) is written
    through, as the shell's ``>`` would: renaming over it would replace
    the device with a file.

    >>> p = tempfile.mktemp()
    >>> with atomic_writer(p) as f:
    ...     _ = f.write("done")
    >>> open(p).read()
    'done'
    """
    path = os.fspath(path)
    mode = {"mode": "wb"} if binary else {"mode": "w", "encoding": "utf-8", "errors": "surrogateescape", "newline": ""}
    try:
        st = os.stat(path)  # through links
    except FileNotFoundError:
        st = None  # a new file, or a link to one: made where the link points, as `>` would
    except OSError as exc:  # a link loop, a folder that cannot be searched
        raise OSError(exc.errno, exc.strerror, path) from None
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        with open(path, **mode) as f:
            yield f
        return
    if os.path.islink(path):
        path = os.path.realpath(path)
    folder = os.path.dirname(os.path.abspath(path))
    # mkstemp makes 0600 files; a report gets the mode of the one it
    # replaces, or what the umask gives a new file, as `>` would.
    permissions = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dupfinder-", suffix=".tmp", dir=folder)
    except OSError as exc:  # named after the report, not the temporary file
        raise OSError(exc.errno, exc.strerror, path) from None
    try:
        os.chmod(tmp, permissions)
        with open(fd, **mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_report(
    result: ScanResult,
    *,
    format: str = "csv",
    output: str | os.PathLike | None = None,
    renderer=None,
) -> None:
    """Write the report to ``output`` atomically, or to stdout when it is None.

    >>> from dupfinder.models import ScanSettings
    >>> p = tempfile.mktemp(suffix=".json")
    >>> write_report(ScanResult(ScanSettings(roots=(".",)), (), (), ()), format="json", output=p)
    >>> json.load(open(p))["report_version"]
    1
    """
    render = renderer or _RENDERERS.get(format)
    if render is None:
        msg = f"unknown report format {format!r}; choose from {', '.join(FORMATS)}"
        raise UsageError(msg)  # a ValueError too, as it was
    if output is None:
        if not hasattr(sys.stdout, "buffer"):  # a replaced stdout (tests, IDEs)
            render(result, sys.stdout)
            return
        sys.stdout.flush()
        stream = io.TextIOWrapper(
            sys.stdout.buffer, encoding="utf-8", errors="surrogateescape", newline="",
            write_through=True,
        )
        try:
            render(result, stream)
            stream.flush()
        finally:
            stream.detach()
        return
    with atomic_writer(output) as f:
        render(result, f)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV report dupfinder wrote, undoing the formula escaping.

    >>> from dupfinder.models import ScanSettings
    >>> p = tempfile.mktemp(suffix=".csv")
    >>> write_report(ScanResult(ScanSettings(roots=(".",)), (), (), ()), output=p)
    >>> read_csv(p)
    []
    """
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"group", "path"} - set(reader.fieldnames or ())
        if missing:
            msg = f"{os.fspath(path)}: not a dupfinder CSV report (no {', '.join(sorted(missing))} column)"
            raise ReportFormatError(msg)
        return [{k: unescape_cell(v or "") for k, v in row.items() if k is not None} for row in reader]
