"""Re-scan benchmark (issue 3): how much faster is the second night?

What it measures
    Whole ``dupfinder scan`` processes (a subprocess each, ``-q -f json``,
    ``--cache`` in a fresh temporary folder, ``-o`` a temporary report) over a
    tree of N image files (default 5000) built from a photo folder: copies
    plus simple variants (resized, recompressed JPEG, re-saved as PNG),
    generated with Pillow in a process pool, each file with a comment of its
    own (the same pixels, other bytes: dupfinder decodes byte-for-byte copies
    once, and the cold scan should decode every file). In one run it times

    1. a cold scan (empty cache),
    2. a second scan of the unchanged tree (warm),
    3. a scan after 1% of the files were rewritten with different bytes
       (JPEG re-saved at another quality, PNG at another compression level,
       so size and mtime change).

    For each it prints wall time, CPU time (the process and its workers,
    from ``os.wait4``), peak RSS, and ``decoded`` / ``cached`` read from the
    JSON report's ``counts``. It also times ``python -c "import dupfinder.cli"``
    against ``python -c pass`` (median of several runs).

Goal
    The warm scan at least 20x faster than the cold one (cold/warm >= 20);
    0 files decoded on the unchanged tree; exactly the changed files decoded
    after the change. When the 20x goal is missed (or with ``--profile``) the
    warm scan is profiled with ``python -X importtime`` and
    ``python -m cProfile -o`` and the biggest costs are printed.

How to run (from anywhere)
    /tmp/venv/bin/python bench/rescan.py                        # sample_images/originals
    /tmp/venv/bin/python bench/rescan.py /work/shared/photos    # the fuller figures
    options: --files N (default 5000), --changed-percent P (default 1),
             --partial (every scan with --partial: local features cached too),
             --match (``dupfinder match --reference PHOTOS tree`` instead of
             scans: a nightly check against a folder of originals; with
             --partial the targets' local features are cached too),
             --plain-copies (byte-for-byte copies, decoded once),
             --workdir DIR (default: a temporary folder, removed afterwards),
             --keep (keep the work folder), --profile (always profile),
             --live (see below), --seed S

The scans run ``python -m dupfinder`` from a snapshot of ``dupfinder/``
copied into the work folder when the benchmark starts (``PYTHONPATH`` and
the working directory point there), so one run measures one version while
others edit the tree; ``--live`` runs the working tree instead. The end of
the output says whether the tree changed during the run. The machine is
shared, so the load average is printed and CPU time is given next to wall
time; all ratios are against figures measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = REPO / "sample_images" / "originals"
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}

# -- which dupfinder ------------------------------------------------------------------

# The benchmark runs a snapshot of dupfinder/ taken when it starts (others edit
# the working tree; one run must measure one version). --live uses the tree.
SRC_ROOT = REPO


from _common import distinct_copy, live_changed_note, machine_lines, snapshot, source_digest, tagged  # noqa: E402,F401


def use_snapshot(dest: Path, live: bool) -> str:
    """Point SRC_ROOT (child processes and this one) at a copy of dupfinder/, or at the tree."""
    global SRC_ROOT
    SRC_ROOT, line = snapshot(dest, live)
    return line

GOAL_RATIO = 20.0


# -- machine -------------------------------------------------------------------


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("DUPFINDER_TEST_DELAY", None)
    return env


def run_timed(cmd: list[str], *, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env: dict | None = None) -> dict:
    """Run a command; wall time, CPU of it and its reaped children, peak RSS (max of them)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=SRC_ROOT, env=env or child_env(), stdout=stdout, stderr=stderr)
    err = b""
    if stderr == subprocess.PIPE:
        # Drain stderr while the child runs so a chatty child cannot block.
        err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "maxrss_mb": usage.ru_maxrss / 1024,
        "rc": proc.returncode,
        "stderr": err.decode("utf-8", "replace"),
    }


# -- building the tree -----------------------------------------------------------


def list_photos(folder: Path) -> list[Path]:
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT)
    if not photos:
        sys.exit(f"no photos in {folder}")
    return photos


KINDS = ("copy", "resized", "recompressed", "png")


def plan_tree(photos: list[Path], root: Path, n_files: int, *, plain_copies: bool = False
              ) -> list[tuple[str, str, str, float]]:
    """(source, destination, kind, parameter) for n_files files, 250 per folder.

    ``plain_copies``: the ``copy`` files are byte-for-byte copies (parameter 1),
    as a library's are, instead of copies with a comment of their own.
    """
    jobs = []
    for i in range(n_files):
        src = photos[i % len(photos)]
        variant = i // len(photos)
        kind = KINDS[variant % len(KINDS)]
        if kind == "resized":
            param = 0.35 + 0.6 * (((variant * 37) % 97) / 97)  # 35%..95% of the size
            ext = src.suffix.lower()
        elif kind == "recompressed":
            param = 40 + (variant * 7) % 55  # quality 40..94
            ext = ".jpg"
        elif kind == "png":
            param = 0
            ext = ".png"
        else:
            param = 1 if plain_copies else 0
            ext = src.suffix.lower()
        dst = root / f"d{i // 250:03d}" / f"IMG_{i:06d}{ext}"
        jobs.append((str(src), str(dst), kind, param))
    return jobs


def _make_one(job) -> None:
    from PIL import Image

    src, dst, kind, param = job
    # Every file gets a comment of its own: byte-for-byte copies are decoded
    # once, and the cold scan is meant to decode every file of the tree.
    tag = f"dupfinder rescan bench {Path(dst).name}"
    if kind == "copy":
        if param:
            shutil.copyfile(src, dst)
        else:
            distinct_copy(Path(src), Path(dst), tag)
        return
    with Image.open(src) as im:
        im.load()
        fmt = im.format
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        if kind == "resized":
            size = (max(16, round(im.width * param)), max(16, round(im.height * param)))
            im = im.resize(size, Image.Resampling.LANCZOS)
            if fmt == "JPEG":
                im.save(dst, "JPEG", quality=88)
            else:
                im.save(dst, "PNG")
        elif kind == "recompressed":
            im.save(dst, "JPEG", quality=int(param))
        else:
            im.save(dst, "PNG")
    distinct_copy(Path(dst), Path(dst), tag)


def build_tree(photos: list[Path], root: Path, n_files: int, workers: int, *, plain_copies: bool = False) -> None:
    jobs = plan_tree(photos, root, n_files, plain_copies=plain_copies)
    for d in {Path(j[1]).parent for j in jobs}:
        d.mkdir(parents=True, exist_ok=True)
    with Pool(workers) as pool:
        for _ in pool.imap_unordered(_make_one, jobs, chunksize=16):
            pass


def tree_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def rewrite(path: Path) -> None:
    """Re-save a file with different bytes (so its size and mtime change)."""
    from PIL import Image

    old = path.read_bytes()
    with Image.open(io.BytesIO(old)) as im:
        im.load()
        fmt = im.format
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        attempts = (
            [dict(quality=q) for q in (63, 77, 51, 86)]
            if fmt == "JPEG"
            else [dict(compress_level=c) for c in (1, 9, 3)]
        )
        for opts in attempts:
            buf = io.BytesIO()
            im.save(buf, fmt, **opts)
            new = tagged(buf.getvalue(), f"dupfinder rescan bench rewritten {path.name}")
            if new != old and len(new) != len(old):
                break
        else:
            raise RuntimeError(f"could not make different bytes for {path}")
    path.write_bytes(new)


# -- scans ------------------------------------------------------------------------


# --partial: every scan also finds partial copies (local features, cached too).
PARTIAL: list[str] = []
# --match: the runs are "dupfinder match --reference PHOTOS tree" instead of scans.
COMMAND: list[str] = ["scan"]


def scan_cmd(tree: Path, cache: Path, report: Path) -> list[str]:
    return [
        sys.executable, "-m", "dupfinder", *COMMAND, str(tree),
        "-q", "-f", "json", "-o", str(report), "--cache", str(cache), *PARTIAL,
    ]


def run_scan(tree: Path, cache: Path, report: Path) -> dict:
    if report.exists():
        report.unlink()
    r = run_timed(scan_cmd(tree, cache, report))
    if r["rc"] not in (0, 1):
        sys.exit(f"dupfinder scan failed (exit {r['rc']}):\n{r['stderr']}")
    r["counts"] = json.loads(report.read_text())["counts"]
    return r


def median_startup(code: str, repeat: int, env: dict | None = None) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        times.append(run_timed([sys.executable, "-c", code], env=env)["wall"])
    return statistics.median(times), min(times)


def bytecode_env(folder: Path) -> dict:
    """The environment with a writable bytecode cache, as an installed package has."""
    env = child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(folder)
    return env


# -- profiling --------------------------------------------------------------------


def profile_imports(tree: Path, cache: Path, report: Path, top: int = 15) -> list[str]:
    cmd = [sys.executable, "-X", "importtime"] + scan_cmd(tree, cache, report)[1:]
    r = run_timed(cmd)
    rows = []
    for line in r["stderr"].splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(1)), len(m.group(3)) - 1, m.group(4)))
    total = sum(self_us for _, self_us, _, _ in rows)
    out = [f"  -X importtime: {len(rows)} modules, {total / 1e3:.0f} ms of imports in a {r['wall']:.2f} s warm scan"]
    top_level = sorted((row for row in rows if row[2] == 0), reverse=True)[:top]
    out.append("  top-level imports by cumulative time:")
    for cum, _, _, name in top_level:
        out.append(f"    {cum / 1e3:8.1f} ms  {name}")
    heavy = sorted(rows, key=lambda row: -row[1])[:top]
    out.append("  modules by self time:")
    for cum, self_us, _, name in heavy:
        out.append(f"    {self_us / 1e3:8.1f} ms self  {cum / 1e3:8.1f} ms cum  {name}")
    return out


def profile_cpu(tree: Path, cache: Path, report: Path, workdir: Path, top: int = 25) -> list[str]:
    prof = workdir / "warm.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof)] + scan_cmd(tree, cache, report)[1:]
    r = run_timed(cmd)
    stats = pstats.Stats(str(prof))
    total = stats.total_tt
    out = [f"  cProfile of the warm scan: {r['wall']:.2f} s wall under the profiler, {total:.2f} s profiled"]
    out.append("  dupfinder functions by cumulative time (>= 1% of the run; seconds, calls):")
    marker = os.sep + "dupfinder" + os.sep
    for (filename, line, func), (cc, nc, tt, ct, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][3]):
        if marker in filename and ct >= 0.01 * total and func != "<module>":
            out.append(f"    {ct:7.3f} s  {nc:7d}  {filename.split(marker)[-1]}:{line} {func}")
    buf = io.StringIO()
    pstats.Stats(str(prof), stream=buf).sort_stats("tottime").print_stats(top)
    out.append(f"  top {top} functions by own time:")
    keep = False
    for line in buf.getvalue().splitlines():
        if line.strip().startswith("ncalls"):
            keep = True
        if keep and line.strip():
            out.append("    " + line.rstrip().replace(str(SRC_ROOT) + os.sep, ""))
    return out


# -- main -------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="?", default=str(DEFAULT_PHOTOS), help="photo folder (default: %(default)s)")
    ap.add_argument("--files", type=int, default=5000, help="image files in the tree (default: 5000)")
    ap.add_argument("--changed-percent", type=float, default=1.0, help="share of files rewritten before the third scan")
    ap.add_argument("--workdir", default=None, help="where to build the tree (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--profile", action="store_true", help="profile the warm scan even if the goal is met")
    ap.add_argument("--startup-repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--live", action="store_true", help="run the working tree's dupfinder/, not a snapshot")
    ap.add_argument("--plain-copies", action="store_true",
                    help="the tree's copies are byte for byte, as in a library (decoded once; the cold scan then"
                         " decodes fewer files than it finds)")
    ap.add_argument("--partial", action="store_true",
                    help="scan with --partial: the warm scans read the local features from the cache too"
                         " (the 20x goal is the default scan's; --partial still searches and verifies every night)")
    ap.add_argument("--match", action="store_true",
                    help="run 'dupfinder match --reference PHOTOS' over the tree instead of scans (a nightly"
                         " check of a tree against a folder of originals; with --partial its targets' local"
                         " features come from the cache too)")
    args = ap.parse_args(argv)
    if args.partial:
        PARTIAL.append("--partial")
    if args.match:
        COMMAND[:] = ["match", "--reference", str(Path(args.photos).resolve())]

    workers = os.cpu_count() or 1
    print("== dupfinder re-scan benchmark (issue 3) ==")
    for line in machine_lines():
        print(line)
    photos = list_photos(Path(args.photos))
    print(f"photos: {args.photos} ({len(photos)} files)")
    print(f"scans: dupfinder {' '.join(COMMAND)}{' --partial' if args.partial else ''} (the same in every run)")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes share this machine)")

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dupfinder-rescan-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tree = workdir / "tree"
    cache = workdir / "cache" / "cache.sqlite"
    report = workdir / "report.json"
    try:
        source_line = use_snapshot(workdir / "src", args.live)
        print(source_line)
        if tree.exists():
            shutil.rmtree(tree)
        if cache.parent.exists():
            shutil.rmtree(cache.parent)
        t0 = time.perf_counter()
        build_tree(photos, tree, args.files, workers, plain_copies=args.plain_copies)
        files = tree_files(tree)
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        kinds = {k: sum(1 for i in range(args.files) if KINDS[(i // len(photos)) % len(KINDS)] == k) for k in KINDS}
        print(
            f"tree: {len(files)} files, {size_mb:.0f} MB, in {workdir} "
            f"({', '.join(f'{v} {k}' for k, v in kinds.items())}); built in {time.perf_counter() - t0:.1f} s"
        )
        # Read every file once so that the cold scan does not pay for disk reads the others skip.
        for p in files:
            p.read_bytes()

        print()
        print("start-up (median of %d, whole interpreter):" % args.startup_repeat)
        base_med, base_min = median_startup("pass", args.startup_repeat)
        cli_med, cli_min = median_startup("import dupfinder.cli", args.startup_repeat)
        print(f"  python -c pass                   {base_med * 1e3:7.1f} ms (min {base_min * 1e3:.1f})")
        print(f"  python -c 'import dupfinder.cli' {cli_med * 1e3:7.1f} ms (min {cli_min * 1e3:.1f})"
              f"  -> import cost {(cli_med - base_med) * 1e3:.1f} ms, {cli_med / base_med:.1f}x bare python")
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            env = bytecode_env(workdir / "pycache")
            median_startup("import dupfinder.cli", 1, env)  # fill the bytecode cache
            bc_med, bc_min = median_startup("import dupfinder.cli", args.startup_repeat, env)
            print(f"  the same with a bytecode cache   {bc_med * 1e3:7.1f} ms (min {bc_min * 1e3:.1f})"
                  f"  (PYTHONDONTWRITEBYTECODE is set here, so dupfinder's modules are compiled at every"
                  f" start; the scans below run in that environment, as given)")

        print()
        runs = []
        cold = run_scan(tree, cache, report)
        distinct = len({hashlib.sha256(p.read_bytes()).digest() for p in files}) if args.plain_copies else len(files)
        runs.append(("cold (empty cache)", cold, distinct))
        warm = run_scan(tree, cache, report)
        runs.append(("warm (unchanged tree)", warm, 0))

        rng = random.Random(args.seed)
        n_changed = max(1, round(len(files) * args.changed_percent / 100))
        changed = rng.sample(files, n_changed)
        time.sleep(0.01)
        for p in changed:
            rewrite(p)
        after = run_scan(tree, cache, report)
        runs.append((f"after {n_changed} files changed", after, n_changed))

        print(f"{'scan':28s} {'wall s':>8s} {'cpu s':>8s} {'peak RSS':>9s} {'found':>6s} {'decoded':>8s} {'cached':>7s} {'expected decoded':>17s}")
        for name, r, expect in runs:
            c = r["counts"]
            flag = "ok" if c.get("decoded") == expect else "MISSED"
            print(
                f"{name:28s} {r['wall']:8.2f} {r['cpu']:8.2f} {r['maxrss_mb']:7.0f}MB {c.get('found', c.get('targets', '?')):>6} "
                f"{c.get('decoded', '?'):>8} {c.get('cached', '?'):>7} {expect:>10} {flag}"
            )
        ratio = cold["wall"] / warm["wall"]
        print()
        if args.partial or args.match:  # issue 3's goal is the default scan's
            print(f"cold/warm wall ratio: {ratio:.1f}x (no goal here; the default scan's is {GOAL_RATIO:.0f}x)")
        else:
            print(f"cold/warm wall ratio: {ratio:.1f}x (goal >= {GOAL_RATIO:.0f}x): "
                  f"{'met' if ratio >= GOAL_RATIO else 'MISSED'}")
        print(f"cold/warm CPU ratio: {cold['cpu'] / warm['cpu']:.1f}x (CPU of the scan and its workers; "
              f"less sensitive to other load on the machine)")
        print(f"cold/after-change wall ratio: {cold['wall'] / after['wall']:.1f}x")
        print(f"warm scan = {warm['wall'] / cli_med:.1f}x the 'import dupfinder.cli' start-up "
              f"({(warm['wall'] - cli_med) * 1e3:.0f} ms beyond it, {(warm['wall'] - cli_med) / len(files) * 1e6:.0f} us/file)")
        print(f"cold scan: {len(files) / cold['wall']:.0f} files/s; warm scan: {len(files) / warm['wall']:.0f} files/s")
        print(f"decoded on the unchanged tree: {warm['counts'].get('decoded')} (goal 0): "
              f"{'met' if warm['counts'].get('decoded') == 0 else 'MISSED'}")
        print(f"decoded after the change: {after['counts'].get('decoded')} (goal exactly {n_changed}): "
              f"{'met' if after['counts'].get('decoded') == n_changed else 'MISSED'}")

        if args.profile or (ratio < GOAL_RATIO and not (args.partial or args.match)):
            print()
            why = "goal missed" if ratio < GOAL_RATIO else "--profile"
            print(f"profile of a warm scan ({why}):")
            for line in profile_imports(tree, cache, report):
                print(line)
            for line in profile_cpu(tree, cache, report, workdir):
                print(line)
        print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(live_changed_note(source_line))
    finally:
        if args.keep or args.workdir:
            print(f"\nwork folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
