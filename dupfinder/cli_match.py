"""``dupfinder match`` and ``dupfinder index build``: check trees against protected originals."""

from __future__ import annotations

import os

from .cli_common import (
    ExitStatus,
    ProgressBars,
    add_cache_options,
    add_hash_options,
    add_report_options,
    add_run_options,
    add_walk_options,
    expand_output,
    given,
    open_cache,
    plural,
    print_error,
    print_unreadable,
    require_paths,
)
from .models import UsageError
from .report import MATCH_RENDERERS, atomic_writer, render_errors_csv, write_report

__all__ = ["register"]


def register(sub) -> None:
    """Add the ``match`` and ``index`` sub-commands to an argparse sub-parser set."""
    from .cli import add_partial_option, add_threshold_options

    m = sub.add_parser("match", help="find copies of protected reference images in other folders")
    m.add_argument("targets", nargs="+", metavar="TARGET", help="folders or files to check")
    m.add_argument(
        "--reference", "-r", action="append", required=True, metavar="REF",
        help="the originals: a folder of images, an index file from 'dupfinder index build', "
        "or a text/CSV list of hex hashes with optional labels (repeatable)",
    )
    add_threshold_options(m)
    add_partial_option(m)
    add_hash_options(m)
    add_walk_options(m)
    add_report_options(m, formats=tuple(MATCH_RENDERERS))
    add_cache_options(m, no_cache=True)
    add_run_options(m)
    m.set_defaults(handler=_run_match)

    i = sub.add_parser("index", help="build a reference index of protected originals")
    isub = i.add_subparsers(dest="index_command", metavar="ACTION")
    isub.required = True
    b = isub.add_parser("build", help="hash a folder of originals into an index file")
    b.add_argument("paths", nargs="+", metavar="ORIGINALS", help="folders or files of originals")
    b.add_argument("--output", "-o", required=True, metavar="FILE", help="the index file to write")
    add_hash_options(b)
    add_walk_options(b)
    add_cache_options(b, no_cache=True)
    add_run_options(b)
    b.set_defaults(handler=_run_index_build)


def _reference_from_folder(path: str, args, cache, bars):
    # A folder of originals, or one image file: hashed now (with the cache).
    from .match import build_reference

    index, errors = build_reference(
        [path], algorithm=args.algorithm, hash_size=args.hash_size, compat=args.compat,
        orient=args.orient, include=args.include, exclude=args.exclude,
        follow_symlinks=args.follow_symlinks, cache=cache, workers=args.workers, progress=bars,
    )
    for e in errors:
        print_error(f"reference {e.path}: {e.stage}: {e.message}")
    return index


def _reference_from(path: str, args, cache, bars):
    from .reference import load_reference, read_hash_list

    if os.path.isdir(path):
        return _reference_from_folder(path, args, cache, bars)
    if not os.path.exists(path):
        raise UsageError(f"reference {path}: no such file or folder")
    if not os.path.isfile(path):  # a FIFO or a device: reading it to sniff the format would block
        raise UsageError(f"reference {path}: not a regular file or a folder")
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK"):
        index = load_reference(path)
        # Only what the user gave must agree (PDQ has no hash size).
        if (given(args, "algorithm") and args.algorithm != index.algorithm) or (
                given(args, "hash_size") and index.algorithm != "pdq" and args.hash_size != index.hash_size):
            size = "" if index.algorithm == "pdq" else f" at hash size {index.hash_size}"
            msg = f"reference {path} holds {index.algorithm} hashes{size}: drop --algorithm/--hash-size, or build the index with them"
            raise UsageError(msg)
        return index
    if b"\0" in head or _is_image(path):  # one original, not a list of hashes
        return _reference_from_folder(path, args, cache, bars)
    explicit = given(args, "algorithm") or given(args, "hash_size")
    return read_hash_list(path, algorithm=args.algorithm if explicit else None,
                          hash_size=args.hash_size if given(args, "hash_size") else None)


def _is_image(path: str) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


def _run_match(args) -> int:
    from .match import match
    from .reference import merge

    require_paths(args.targets)
    bars = ProgressBars.for_args(args)
    output = expand_output(args.output)
    errors_file = expand_output(args.errors)
    cache = None if args.no_cache else open_cache(args, lock=True)
    try:
        reference = merge([_reference_from(r, args, cache, bars) for r in args.reference])
        bars.close()
        if not len(reference):
            raise UsageError("the reference set is empty: nothing to match against")
        result = match(
            args.targets, reference, threshold=args.threshold, transforms=args.transforms,
            orient=args.orient, compat=args.compat, include=args.include, exclude=args.exclude,
            follow_symlinks=args.follow_symlinks, cache=cache, workers=args.workers, progress=bars,
            partial=args.partial,
        )
    finally:
        bars.close()
        if cache is not None:
            cache.close()
    write_report(result, format=args.format, output=output, renderer=MATCH_RENDERERS[args.format])
    if errors_file:
        with atomic_writer(errors_file) as f:
            render_errors_csv(result, f)
    print_unreadable(result.errors, args, errors_file)
    if not args.quiet:
        c = result.counts
        print_error(
            f"{plural(c['targets'], 'target')} checked against {plural(c['references'], 'reference')} "
            f"({reference.algorithm}, threshold {result.settings.threshold}): "
            f"{plural(c['matches'], 'copy', 'copies')} found, {c['errors']} unreadable "
            f"in {result.elapsed:.1f}s"
        )
    return ExitStatus.DUPLICATES_FOUND if result.has_matches else ExitStatus.NO_DUPLICATES


def _run_index_build(args) -> int:
    from .match import build_reference
    from .reference import save_reference

    if args.output == "-":  # said before the hashing, not after
        raise UsageError("index build -o: an index is binary; give a file name, not '-'")
    bars = ProgressBars.for_args(args)
    cache = None if args.no_cache else open_cache(args, lock=True)
    try:
        # An index is used later and from anywhere: absolute labels, so that
        # match --partial finds the reference images from another folder.
        index, errors = build_reference(
            [os.path.abspath(p) for p in args.paths], algorithm=args.algorithm, hash_size=args.hash_size, compat=args.compat,
            orient=args.orient, include=args.include, exclude=args.exclude,
            follow_symlinks=args.follow_symlinks, cache=cache, workers=args.workers, progress=bars,
        )
    finally:
        bars.close()
        if cache is not None:
            cache.close()
    save_reference(index, expand_output(args.output))
    for e in errors:
        print_error(f"{e.path}: {e.stage}: {e.message}")
    if not args.quiet:
        print_error(f"indexed {plural(len(index), 'reference')} into {args.output}, {len(errors)} unreadable")
    return ExitStatus.NO_DUPLICATES if len(index) else ExitStatus.ERROR
