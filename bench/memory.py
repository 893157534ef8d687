"""Memory benchmark (issue 5): peak RSS of grouping and reporting at 10^5 and 10^6 files.

What it measures
    The part of a scan after hashing, at sizes a decoder never has to touch:
    synthetic :class:`dupfinder.models.HashedFile` records (random 64-bit
    pHashes, clumped so that ``--dup-percent`` (default 3%) of the files are
    near-duplicates of another file: a third byte-identical copies, the rest
    1-4 bits away; realistic paths such as ``/photos/2024/05/IMG_012345.jpg``;
    a 32-hex-digit content digest; sizes, mtimes and camera dimensions as
    distinct int objects, as unpickled worker results are) are fed into the
    code ``scan()`` runs after hashing, as a stream (the workers' results
    arrive one by one): ``scan.collect`` (into a columnar
    :class:`dupfinder.filetable.FileTable`, sorted by path),
    ``scan.group_files`` (the orientation, crop, turn and region searches)
    and ``report.write_report`` to a temporary file. The records carry every
    optional hex field the measured HashedFile has and a worker fills
    (``variants``: the 8 flips and turns; ``extras``: crops, turns, regions).
    ``--bare-records`` leaves those fields empty; ``--no-transforms`` groups
    as ``--no-transforms`` does.

    Each measurement is a child process per size (``ru_maxrss``):
      records        keeps every record as a HashedFile (the baseline: what
                     scan() kept before the FileTable)
      pipeline-csv   stream -> collect -> group_files -> CSV report
      pipeline-json  the same with the JSON report
      scan-like      also holds what scan() keeps alive next to them: the
                     walker's FileEntry list (and, while results stream, the
                     by-path dict Hasher.run holds); CSV report
    It also prints a per-file breakdown of the Python objects (sys.getsizeof)
    and the peak RSS of a real small scan (``dupfinder.cli.main`` in a child:
    main process and largest worker separately).
    Above ``--big`` files (default 100000) only the records and scan-like
    children run, to keep the run within minutes. Each phase's own peak comes
    from VmHWM, reset between phases through /proc/self/clear_refs.

Goal
    A 10^6-file scan within 1 GB peak RSS.

How to run
    /tmp/venv/bin/python bench/memory.py                       # real scan of sample_images/originals
    /tmp/venv/bin/python bench/memory.py /work/shared/photos   # the real scan on the fuller photo set
    options: --sizes 100000 1000000, --dup-percent 3, --threshold 5,
             --no-transforms, --bare-records, --big N, --profile, --live,
             --seed S
    dupfinder is a snapshot of ``dupfinder/`` taken at start (``--live``: the tree).

Ratios are against the records-only baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = REPO / "sample_images" / "originals"
GOAL_BYTES = 1 << 30
CHUNK = 10_000
MODES = ["records", "pipeline-csv", "pipeline-json", "scan-like"]
CAMERA_SIZES = [(4000, 3000), (3000, 4000), (4032, 3024), (3024, 4032), (1920, 1080), (6000, 4000), (640, 480)]

# -- which dupfinder ------------------------------------------------------------------

# The benchmark runs a snapshot of dupfinder/ taken when it starts (others edit
# the working tree; one run must measure one version). --live uses the tree.
SRC_ROOT = REPO


from _common import live_changed_note, machine_lines, reset_hwm, snapshot, source_digest  # noqa: E402,F401


def use_snapshot(dest: Path, live: bool) -> str:
    """Point SRC_ROOT (child processes and this one) at a copy of dupfinder/, or at the tree."""
    global SRC_ROOT
    SRC_ROOT, line = snapshot(dest, live)
    return line


# -- measuring ------------------------------------------------------------------


def rss_mb() -> float:
    """Current resident set size, from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hwm_mb() -> float:
    """Peak RSS since the last reset_hwm() (VmHWM), from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_mb()


# -- synthetic records -------------------------------------------------------------


def _mix(x):
    """splitmix64 of a uint64 array: a stateless random 64-bit value per index."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def optional_hex_fields(bare: bool) -> dict[str, int]:
    """HashedFile's optional hex fields that a worker fills, and how many 64-bit hashes each holds.

    Read from the dupfinder being measured, so the records look like the ones
    its scan keeps: ``variants`` (the 8 flips and turns), ``extras`` (crops,
    turns and regions) when the model has them.
    """
    from dupfinder.models import HashedFile

    fields = getattr(HashedFile, "__dataclass_fields__", {})
    out = {}
    if bare:
        return out
    if "variants" in fields:
        out["variants"] = 8
    if "extras" in fields:
        try:
            from dupfinder.fingerprint import N_EXTRAS
        except ImportError:
            N_EXTRAS = 53
        out["extras"] = N_EXTRAS
    return out


def iter_records(n: int, seed: int, dup_percent: float, optional: dict[str, int], entries: list | None = None):
    """Yield n HashedFile records, built CHUNK at a time so no big temporaries linger.

    Files 0..n_base-1 are distinct photos; the rest are near-duplicates of a
    random base file (a third byte-identical, the others 1-4 bits away, in
    every hash they carry). A base file's hashes and digest are a function of
    its index (splitmix64), so a copy derives them without an n-sized table.
    ``optional`` names the extra hex fields to fill and their hash counts.
    With ``entries``, a FileEntry per file is appended to it and the record
    shares its path, size and mtime objects, as scan() builds them.
    """
    import numpy as np

    from dupfinder.models import FileEntry, HashedFile

    rng = np.random.default_rng(seed)
    n_dup = int(n * dup_percent / 100)
    n_base = n - n_dup
    # Column layout of the per-file hash block: [hash | variants... | extras...].
    n_var = optional.get("variants", 0)
    n_ext = optional.get("extras", 0)
    n_cols = max(1, n_var) + n_ext
    stride = np.uint64(1 << (n_cols + 2).bit_length())
    salt = np.uint64(seed) << np.uint64(48)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        k = stop - start
        idx = np.arange(start, stop)
        is_dup = idx >= n_base
        src = np.where(is_dup, rng.integers(0, n_base, size=k), np.minimum(idx, n_base - 1)).astype(np.uint64)
        cell = (salt + src * stride)[:, None]
        h = _mix(cell + np.arange(n_cols, dtype=np.uint64)[None, :])
        digest = _mix(cell + np.arange(n_cols, n_cols + 2, dtype=np.uint64)[None, :])
        kind = rng.integers(0, 3, size=k)  # 0: byte-identical copy, else edited
        edited = is_dup & (kind > 0)
        flips = np.where(edited, rng.integers(1, 5, size=k), 0)
        for b in range(4):
            bit = rng.integers(0, 64, size=k).astype(np.uint64)
            mask = np.where(flips > b, np.uint64(1) << bit, np.uint64(0))
            h ^= mask[:, None]
        digest[edited] = rng.integers(0, 2**64, size=(int(edited.sum()), 2), dtype=np.uint64, endpoint=False)
        hex_rows = h.astype(">u8").tobytes().hex()
        dig_hex = digest.astype(">u8").tobytes().hex()
        dims = rng.integers(0, len(CAMERA_SIZES), size=k)
        # Distinct int objects per record (as unpickled worker results are).
        widths = np.array([CAMERA_SIZES[d][0] for d in dims.tolist()]).tolist()
        heights = np.array([CAMERA_SIZES[d][1] for d in dims.tolist()]).tolist()
        sizes = rng.integers(150_000, 9_000_000, size=k).tolist()
        mtimes = rng.integers(1_300_000_000 * 10**9, 1_760_000_000 * 10**9, size=k).tolist()
        years = (2010 + src % np.uint64(16)).tolist()
        months = (1 + (src // np.uint64(7)) % np.uint64(12)).tolist()
        srcs = src.tolist()
        dup_flags = is_dup.tolist()
        step = 16 * n_cols
        v_end = 16 * max(1, n_var)
        for j in range(k):
            i = start + j
            s = srcs[j]
            if dup_flags[j]:
                path = f"/photos/backup/{years[j]}/{months[j]:02d}/IMG_{s:06d} ({i - n_base + 1}).jpg"
            else:
                path = f"/photos/{years[j]}/{months[j]:02d}/IMG_{s:06d}.jpg"
            row = hex_rows[j * step : (j + 1) * step]
            fields = dict(
                path=path, size=sizes[j], mtime_ns=mtimes[j], width=widths[j], height=heights[j],
                hash=row[:16], digest=dig_hex[j * 32 : (j + 1) * 32],
            )
            if n_var:
                fields["variants"] = row[:v_end]
            if n_ext:
                fields["extras"] = row[v_end:]
            if entries is not None:
                e = FileEntry(path, sizes[j], mtimes[j])
                entries.append(e)
                fields.update(path=e.path, size=e.size, mtime_ns=e.mtime_ns)
            yield HashedFile(**fields)


def child(mode: str, n: int, args) -> dict:
    """One measurement, in this (child) process; returns phases and peaks."""
    import numpy  # noqa: F401  (the same imports in every mode)

    import dupfinder  # noqa: F401
    from dupfinder.models import ScanResult, ScanSettings
    from dupfinder.report import write_report

    optional = optional_hex_fields(args.bare_records)
    phases = []
    peaks = [peak_mb()]
    can_reset = reset_hwm()
    t = time.perf_counter()

    def mark(name):
        nonlocal t
        now = time.perf_counter()
        peak = hwm_mb()
        peaks.append(peak)
        phases.append((name, round(now - t, 3), round(rss_mb(), 1), round(peak, 1)))
        reset_hwm()
        t = time.perf_counter()

    mark("imports")
    entries = by_path = records = None
    if mode == "records":
        # The baseline: every result kept as a HashedFile, as scan() did before FileTable.
        records = list(iter_records(n, args.seed, args.dup_percent, optional))
        mark("records")
    elif mode == "scan-like":
        # scan() holds the walker's FileEntry list, and Hasher.run a by-path dict of it, while results stream.
        entries = []
        for _ in iter_records(n, args.seed, args.dup_percent, optional, entries):
            pass
        by_path = {e.path: e for e in entries}
        mark("entries + by_path")
    out = {"mode": mode, "n": n}
    if mode != "records":
        from dupfinder import scan as _scan  # noqa: F401  (the package re-exports scan(), the function)
        import importlib

        scan_mod = importlib.import_module("dupfinder.scan")
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        # What scan() does with the workers' stream: collect it into a FileTable.
        source = iter_records(n, args.seed, args.dup_percent, optional)
        if entries is not None:  # a worker's result carries the entry's own path, size and mtime objects
            import dataclasses

            source = (dataclasses.replace(r, path=e.path, size=e.size, mtime_ns=e.mtime_ns)
                      for r, e in zip(source, entries))
        files = scan_mod.collect(source, [], capacity=n)
        # Hasher.run's dict is gone once the stream ends, and scan() lets the walk's list go.
        del by_path, entries, source
        mark("collect (table)")
        out["arrays"] = {k: list(getattr(files, k).shape) for k in ("words", "variants", "extras")
                         if getattr(files, k) is not None}
        groups = scan_mod.group_files(files, args.threshold, transforms=args.transforms)
        mark("group_files")
        if args.profile:
            import io
            import pstats

            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
            lines, keep = [], False
            for line in buf.getvalue().splitlines():
                keep = keep or line.strip().startswith("ncalls")
                if keep and line.strip():
                    lines.append(line.rstrip().replace(str(SRC_ROOT) + os.sep, "").replace(sys.prefix + os.sep, ""))
            out["profile"] = lines
        result = ScanResult(
            settings=ScanSettings(roots=("/photos",), threshold=args.threshold),
            files=files,
            groups=groups,
            errors=(),
            counts={"found": n, "hashed": n, "groups": len(groups)},
        )
        fmt = "json" if mode == "pipeline-json" else "csv"
        with tempfile.TemporaryDirectory() as d:
            report = os.path.join(d, "report." + fmt)
            write_report(result, format=fmt, output=report)
            out["report_mb"] = round(os.path.getsize(report) / 1e6, 1)
        mark(f"write_report ({fmt})")
        out["groups"] = len(groups)
        out["grouped_files"] = sum(len(g) for g in groups)
    out["phases"] = phases
    # ru_maxrss would do, but resetting VmHWM lowers it too: the peak is the largest phase peak.
    out["peak_mb"] = round(max(peaks) if can_reset else peak_mb(), 1)
    out["records_len"] = n if records is None else len(records)
    return out


def run_child(mode: str, n: int, args) -> dict:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", mode, "--n", str(n), "--src", str(SRC_ROOT),
        "--seed", str(args.seed), "--dup-percent", str(args.dup_percent), "--threshold", str(args.threshold),
    ]
    if not args.transforms:
        cmd.append("--no-transforms")
    if args.bare_records:
        cmd.append("--bare-records")
    if args.profile and mode == "pipeline-csv":
        cmd.append("--profile")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"child {mode} n={n} failed ({proc.returncode}):\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


# -- per-object sizes -------------------------------------------------------------------


def object_breakdown(optional: dict[str, int], transforms: bool) -> list[tuple[str, int]]:
    """Bytes per file of each Python object a scan keeps, measured with sys.getsizeof."""
    recs = []
    entries = []
    for r in iter_records(2000, 7, 0.0, optional, entries):
        recs.append(r)
    r, e = recs[1000], entries[1000]
    rows = [
        ("HashedFile object (slots dataclass)", sys.getsizeof(r)),
        ("  path str", sys.getsizeof(r.path)),
        ("  hash str (16 hex)", sys.getsizeof(r.hash)),
        ("  digest str (32 hex)", sys.getsizeof(r.digest)),
    ]
    for name, count in optional.items():
        rows.append((f"  {name} str ({count} x 16 hex)", sys.getsizeof(getattr(r, name))))
    rows += [
        ("  size, mtime_ns ints", sys.getsizeof(r.size) + sys.getsizeof(r.mtime_ns)),
        ("  width, height ints (> 256: not shared)", sys.getsizeof(r.width) + sys.getsizeof(r.height)),
        ("FileEntry object (shares path, size, mtime)", sys.getsizeof(e)),
        ("list slots: files, tuple(files) in ScanResult, entries", 3 * 8),
    ]
    hashes_per_file = 1 + (optional.get("variants", 0) + optional.get("extras", 0) if transforms else 0)
    rows.append((f"numpy words arrays ({hashes_per_file} x 8 bytes)", 8 * hashes_per_file))
    return rows


# -- a real scan --------------------------------------------------------------------


REAL_SCAN = """
import resource, sys, json, tempfile, os
from dupfinder.cli import main
out = os.path.join(tempfile.mkdtemp(), "r.json")
rc = main(["scan", sys.argv[1], "--no-cache", "-q", "-f", "json", "-o", out])
counts = json.load(open(out))["counts"]
print(json.dumps({"rc": rc, "counts": counts,
                  "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def real_scan(folder: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", REAL_SCAN, folder], capture_output=True, text=True, env=env, cwd=SRC_ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"real scan failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="?", default=str(DEFAULT_PHOTOS), help="folder for the real scan (default: %(default)s)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dup-percent", type=float, default=3.0)
    ap.add_argument("--threshold", type=int, default=5)
    ap.add_argument("--no-transforms", dest="transforms", action="store_false",
                    help="group as 'dupfinder scan --no-transforms' does (the records still carry the hex fields)")
    ap.add_argument("--bare-records", action="store_true",
                    help="leave HashedFile's optional hex fields (variants, extras) empty, to see what they cost")
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES,
                    help="which children to run (put the photo folder before this option)")
    ap.add_argument("--big", type=int, default=100_000,
                    help="above this many files run only the records and scan-like children (time; default 100000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true",
                    help="cProfile collect + group_files in the pipeline-csv child (slower; its times are inflated)")
    ap.add_argument("--live", action="store_true", help="measure the working tree's dupfinder/, not a snapshot")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        global SRC_ROOT
        SRC_ROOT = Path(args.src)
        sys.path.insert(0, args.src)
        print(json.dumps(child(args.child, args.n, args)))
        return 0

    print("== dupfinder memory benchmark (issue 5) ==")
    for line in machine_lines():
        print(line)
    snap = Path(tempfile.mkdtemp(prefix="dupfinder-memory-"))
    try:
        source_line = use_snapshot(snap, args.live)
        print(source_line)
        optional = optional_hex_fields(args.bare_records)
        carried = ", ".join(f"{k} ({v} hashes)" for k, v in optional.items()) or "none"
        print(f"records: {args.dup_percent:g}% near-duplicates, threshold {args.threshold}; optional hex fields "
              f"carried: {carried}; grouping {'with' if args.transforms else 'without'} transforms")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        print("\nper-file Python objects (sys.getsizeof, bytes):")
        total = 0
        for name, size in object_breakdown(optional, args.transforms):
            print(f"  {name:66s} {size:5d}")
            total += size
        print(f"  {'sum (before allocator overhead)':66s} {total:5d}")

        results = {}
        for n in args.sizes:
            print(f"\n{n:,} files:")
            base = None
            modes = args.modes if n <= args.big else [m for m in args.modes if m in ("records", "scan-like")]
            if modes != args.modes:
                print(f"  (above --big {args.big:,}: only {', '.join(modes)}, to keep the run short)")
            for mode in modes:
                r = run_child(mode, n, args)
                results[(n, mode)] = r
                if mode == "records":
                    base = r
                extra = ""
                if base is not None and mode != "records":
                    over = r["peak_mb"] - base["peak_mb"]
                    extra = (f"  +{over:6.0f} MB over records ({over * 2**20 / n:5.0f} B/file, "
                             f"{r['peak_mb'] / base['peak_mb']:.2f}x)")
                groups = f"  {r['groups']} groups, {r['grouped_files']} files in them" if "groups" in r else ""
                print(f"  {mode:14s} peak RSS {r['peak_mb']:7.0f} MB  ({r['peak_mb'] * 2**20 / n:5.0f} B/file)  "
                      f"wall {r['wall']:6.1f} s{extra}{groups}")
                print("      phases: " + "; ".join(
                    f"{name} {dt:.2f}s peak {pk:.0f} after {mb:.0f} MB" for name, dt, mb, pk in r["phases"]))
                if r.get("arrays"):
                    print("      arrays: " + ", ".join(f"{k} {tuple(v)}" for k, v in r["arrays"].items()))
                if r.get("profile"):
                    print("      cProfile of collect + group_files (own time):")
                    for line in r["profile"]:
                        print("        " + line)
            if (n, "scan-like") in results and n >= 1_000_000:
                peak = results[(n, "scan-like")]["peak_mb"] * 2**20
                budget = GOAL_BYTES * n / 1_000_000
                print(f"  goal: scan-like peak {peak / 2**30:.2f} GB for {n:,} files against "
                      f"{budget / 2**30:.2f} GB (1 GB per 10^6 files): {'met' if peak <= budget else 'MISSED'}")

        print(f"\nreal scan of {args.photos} (dupfinder.cli.main in a child, --no-cache, default workers):")
        r = real_scan(args.photos)
        c = r["counts"]
        print(f"  {c.get('hashed')} files hashed, {c.get('groups')} groups in {r['wall']:.1f} s; "
              f"peak RSS main process {r['main_mb']:.0f} MB, largest worker {r['worker_mb']:.0f} MB")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(live_changed_note(source_line))
    finally:
        shutil.rmtree(snap, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
