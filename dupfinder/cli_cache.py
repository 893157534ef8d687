"""``dupfinder cache`` and ``dupfinder ignore``: look after the cache and the ignore list."""

from __future__ import annotations

import os
from itertools import combinations

from .cli_common import ExitStatus, add_cache_options, open_cache, plural, print_error, stdout
from .models import ScanError, UsageError

__all__ = ["register"]


def register(sub) -> None:
    """Add the ``cache`` and ``ignore`` sub-commands to an argparse sub-parser set."""
    c = sub.add_parser("cache", help="look after the hash cache")
    csub = c.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.required = True
    add_cache_options(csub.add_parser("info", help="entries, size and location of the cache"))
    add_cache_options(csub.add_parser("prune", help="drop entries of files that no longer exist"))
    c.set_defaults(handler=_run_cache)

    i = sub.add_parser("ignore", help="record pairs of files that are not duplicates")
    isub = i.add_subparsers(dest="ignore_command", metavar="ACTION")
    isub.required = True
    ia = isub.add_parser("add", help="never group these files with each other again")
    ia.add_argument("files", nargs="+", metavar="FILE", help="two or more files (every pair is ignored)")
    ia.add_argument("--reason", default="", help="a note kept with the entry")
    add_cache_options(ia)
    ii = isub.add_parser("import", help="ignore what a reviewed CSV report says is not a duplicate")
    ii.add_argument("report", metavar="REPORT", help="a CSV report from dupfinder scan, with a verdict column")
    ii.add_argument(
        "--column", default="verdict",
        help="the column holding the verdict (default: verdict); a row whose verdict is "
        "'not duplicate', 'different', 'keep both' or 'ignore' is not a duplicate of the rest of its group",
    )
    add_cache_options(ii)
    add_cache_options(isub.add_parser("list", help="show the ignore list with its ids"))
    ir = isub.add_parser("remove", help="take entries off the ignore list")
    ir.add_argument("ids", nargs="+", type=int, metavar="ID", help="ids shown by 'ignore list'")
    add_cache_options(ir)
    i.set_defaults(handler=_run_ignore)


def _run_cache(args) -> int:
    from .cache import default_cache_path

    path = args.cache or default_cache_path()
    if not os.path.exists(path):  # looking after a cache must not make one at a mistyped path
        raise UsageError(f"no cache at {path}")
    with open_cache(args) as cache:
        if args.cache_command == "info":
            info = cache.info()
            with stdout() as out:
                out.write(
                    f"location: {info.path}\nfiles: {info.files}\nresults: {info.results}\n"
                    f"local features (--partial): {info.features}\n"
                    f"scans: {info.scans}\nignored pairs: {info.ignored}\nsize: {info.bytes} bytes\n"
                )
        else:
            n = cache.prune()
            print_error(f"pruned {plural(n, 'entry', 'entries')} of files that no longer exist")
    return ExitStatus.NO_DUPLICATES


_NOT_DUPLICATE = {"not duplicate", "not a duplicate", "different", "keep both", "ignore", "not duplicates"}


def _digest_for(cache, path: str) -> bytes | None:
    from .fingerprint import file_digest

    try:
        st = os.stat(path)
    except OSError:
        return None
    known = cache.file_digest(os.path.abspath(path), size=st.st_size, mtime_ns=st.st_mtime_ns)
    if known is not None:
        return known
    digest = file_digest(path)
    return None if isinstance(digest, ScanError) else digest


def _run_ignore(args) -> int:
    from .report import read_csv

    with open_cache(args) as cache:
        if args.ignore_command == "list":
            with stdout() as out:
                for i, a, b, reason, _ in cache.list_ignored():
                    out.write(f"{i}\t{a}\t{b}\t{reason}\n")
            return ExitStatus.NO_DUPLICATES
        if args.ignore_command == "remove":
            n = cache.unignore(args.ids)
            print_error(f"removed {n} of {len(args.ids)}")
            return ExitStatus.NO_DUPLICATES if n == len(args.ids) else ExitStatus.ERROR
        if args.ignore_command == "add":
            pairs = list(combinations(args.files, 2))
            reason = args.reason
        else:
            rows = read_csv(args.report)
            if rows and args.column not in rows[0]:
                raise UsageError(f"{args.report}: no {args.column!r} column")
            groups: dict[str, list[dict]] = {}
            for r in rows:
                groups.setdefault(r["group"], []).append(r)
            pairs = []
            for members in groups.values():
                for r in members:
                    verdict = " ".join(r.get(args.column, "").lower().replace("-", " ").replace("_", " ").split())
                    if verdict in _NOT_DUPLICATE:
                        pairs.extend((r["path"], o["path"]) for o in members if o is not r)
            reason = f"from {os.path.basename(args.report)}"
        digests: dict[str, bytes | None] = {}
        added = 0
        missing = set()
        identical: list[tuple[str, str]] = []
        for a, b in pairs:
            for p in (a, b):
                if p not in digests:
                    digests[p] = _digest_for(cache, p)
                    if digests[p] is None:
                        missing.add(p)
            if digests[a] and digests[b] and digests[a] == digests[b]:
                identical.append((a, b))
            elif digests[a] and digests[b]:
                added += cache.ignore(digests[a], digests[b], a_path=a, b_path=b, reason=reason)
        cache.commit()
        for p in sorted(missing):
            print_error(f"{p}: cannot be read, not ignored")
        for a, b in identical:
            # The list holds pairs of contents; one content cannot be two pictures.
            print_error(f"{a} and {b} hold the same bytes: not ignored (delete or keep one of them)")
        print_error(f"{plural(added, 'pair')} added to the ignore list")
        return ExitStatus.ERROR if missing else ExitStatus.NO_DUPLICATES


