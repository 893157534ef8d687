"""Hashing throughput benchmark (issue 5): images per second of a whole scan.

What it measures
    Images per second of a whole ``dupfinder scan`` process (a subprocess:
    ``--no-cache -q -f json -o <temp>``, default workers = one per CPU)
    against the script a user would write with ImageHash + pybktree doing the
    same job (walk, ``imagehash.phash(Image.open(path))``, BK-tree pairs
    within 5 bits, groups, a CSV report). The script is :func:`baseline_script`
    below; it runs as a whole subprocess too (``python bench/hashing.py
    --run-baseline ...``), once single-process (what a typical user script
    does) and once with a ``multiprocessing.Pool`` of the same size as
    dupfinder's pool (``imap_unordered``, chunks as dupfinder batches them).

    Two trees, built from a photo folder:
    (a) every photo copied ``--copies`` times (default 4), each copy with
        a comment of its own (the same pixels, other bytes and size):
        dupfinder decodes byte-for-byte copies once, and this tree measures
        decoding, as a tree of that many different photos would. The same
        tree with byte-for-byte copies is scanned too, to show that gain;
    (b) ``--camera`` (default 200) camera-size JPEGs, about 12 MP
        (4000x3000 for a 4:3 photo), upscaled from those photos with bicubic
        resampling and saved at quality 90 with an EXIF block.

    It also scans the tree twice over (two copies side by side): the extra
    files' rate is the steady state a scan of 10^5-10^6 files runs at, with
    process start-up, the pool's start and fixed costs cancelled out.

    It also prints the floor: ``Image.open(p); im.draft('L', (64, 64));
    im.load()`` for a JPEG, a plain ``load()`` for anything else, timed in
    this process on one core and multiplied by the worker count, i.e. the
    best images/s a decode-bound pipeline could reach. For diagnosis it
    times dupfinder's per-file worker function
    (``fingerprint_and_digest``) the same way, and the start-up of
    ``python -c "import dupfinder.cli"``.

    Every file is read once before timing, so all contenders find the files
    in the page cache. Times are the best of ``--repeat`` runs (baselines:
    ``--baseline-repeat``).

Goals
    dupfinder >= 0.8 of the floor on (a) and (b); about 1.5-2x the script on
    (a) and >= 8x on (b).

    Besides images/s it prints CPU time per image (the process and its
    workers, from ``os.wait4``; the floor's from ``time.process_time``),
    which other load on a shared machine disturbs much less than wall time,
    and the floor measured in a warm Pool, which shows how well the machine
    really scales to the worker count at that moment.

How to run
    /tmp/venv/bin/python bench/hashing.py                        # sample_images/originals
    /tmp/venv/bin/python bench/hashing.py /work/shared/photos    # the fuller figures
    options: --copies N (tree a), --camera N (tree b), --repeat N,
             --baseline-repeat N, --workdir DIR, --keep, --only a|b,
             --profile (cProfile of the worker function), --live

dupfinder runs from a snapshot of ``dupfinder/`` taken when the benchmark
starts (others edit the tree; ``--live`` uses the tree). All ratios are
against figures measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = REPO / "sample_images" / "originals"
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
THRESHOLD = 5

# -- which dupfinder ------------------------------------------------------------------

# The benchmark runs a snapshot of dupfinder/ taken when it starts (others edit
# the working tree; one run must measure one version). --live uses the tree.
SRC_ROOT = REPO


from _common import distinct_copy, floor_chunk, floor_pass, live_changed_note, machine_lines, snapshot, source_digest  # noqa: E402,F401


def use_snapshot(dest: Path, live: bool) -> str:
    """Point SRC_ROOT (child processes and this one) at a copy of dupfinder/, or at the tree."""
    global SRC_ROOT
    SRC_ROOT, line = snapshot(dest, live)
    return line



# -- the baseline a user would write ------------------------------------------------


def _baseline_hash_one(path):
    import imagehash
    from PIL import Image

    try:
        with Image.open(path) as im:
            return path, int(str(imagehash.phash(im)), 16)
    except Exception:  # a user script skips what it cannot read
        return path, None


def baseline_script(root: str, workers: int, output: str, threshold: int = THRESHOLD) -> dict:
    """What a user writes with ImageHash and pybktree: hash all, pair with a BK-tree, group, CSV.

    ``workers <= 1`` hashes in this process (the usual script); otherwise in a
    multiprocessing.Pool of that size.
    """
    import csv
    from collections import namedtuple

    import pybktree

    paths = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if os.path.splitext(name)[1].lower() in IMAGE_EXT:
                paths.append(os.path.join(folder, name))
    if workers <= 1:
        results = list(map(_baseline_hash_one, paths))
    else:
        chunk = max(1, min(64, len(paths) // (workers * 4)))
        with Pool(workers) as pool:
            results = list(pool.imap_unordered(_baseline_hash_one, paths, chunksize=chunk))
    Item = namedtuple("Item", "bits path")
    items = [Item(h, p) for p, h in results if h is not None]
    tree = pybktree.BKTree(lambda a, b: pybktree.hamming_distance(a.bits, b.bits), items)
    parent = {it.path: it.path for it in items}

    def root_of(p):
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for it in items:
        for _, other in tree.find(it, threshold):
            a, b = root_of(it.path), root_of(other.path)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups = {}
    for it in items:
        groups.setdefault(root_of(it.path), []).append(it)
    groups = [g for g in groups.values() if len(g) > 1]
    with open(output, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["group", "path", "hash"])
        for i, g in enumerate(sorted(groups, key=lambda g: min(x.path for x in g)), 1):
            for x in sorted(g, key=lambda x: x.path):
                w.writerow([i, x.path, f"{x.bits:016x}"])
    return {"files": len(paths), "hashed": len(items), "groups": len(groups)}


# -- machine and processes -----------------------------------------------------------


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("DUPFINDER_TEST_DELAY", None)
    return env


def run_timed(cmd: list[str]) -> dict:
    """Wall time, CPU (the process and its reaped workers), stdout and exit code of a command."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=SRC_ROOT, env=child_env(), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rc": proc.returncode,
            "stdout": out.read().decode(), "stderr": err.read().decode("utf-8", "replace"),
        }


def best_of(n: int, fn):
    results = [fn() for _ in range(max(1, n))]
    return min(results, key=lambda r: r["wall"]), [r["wall"] for r in results]


# -- trees ------------------------------------------------------------------------------


def list_photos(folder: Path) -> list[Path]:
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT)
    if not photos:
        sys.exit(f"no photos in {folder}")
    return photos


def build_copies(photos: list[Path], root: Path, copies: int, *, same_bytes: bool = False) -> None:
    """Tree (a): ``copies`` copies of each photo, each with other bytes unless ``same_bytes``."""
    for k in range(copies):
        d = root / f"copy{k}"
        d.mkdir(parents=True, exist_ok=True)
        for p in photos:
            if same_bytes:
                shutil.copyfile(p, d / p.name)
            else:  # a tag of its own length: no two copies share a size either
                distinct_copy(p, d / p.name, f"dupfinder bench copy {k} " + "." * k)


def _camera_one(job) -> None:
    from PIL import Image

    src, dst, megapixels = job
    with Image.open(src) as im:
        im = im.convert("RGB")
        scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
        big = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x010F] = "Bench"  # Make
    exif[0x0110] = "Camera 12MP"  # Model
    exif[0x0112] = 1  # Orientation: upright
    big.save(dst, "JPEG", quality=90, exif=exif)
    # Past 142 photos a photo is made again: a comment of its own keeps the
    # two from being byte-for-byte copies, which dupfinder decodes once.
    distinct_copy(Path(dst), Path(dst), f"dupfinder bench camera {Path(dst).name}")


def build_camera(photos: list[Path], root: Path, count: int, workers: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(photos[i % len(photos)]), str(root / f"DSC_{i:05d}.jpg"), 12.0)
        for i in range(count)
    ]
    with Pool(workers) as pool:
        for _ in pool.imap_unordered(_camera_one, jobs, chunksize=1):
            pass


def tree_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXT)


# -- measurements -------------------------------------------------------------------------


def _noop(x):
    return x


def floor_pool(pool, paths: list[str], workers: int) -> dict:
    """The floor measured in a warm Pool of ``workers``: how far this machine really scales."""
    chunks = [paths[k::workers] for k in range(workers)]
    start = time.perf_counter()
    pool.map(floor_chunk, chunks, chunksize=1)
    return {"wall": time.perf_counter() - start}


def worker_profile(paths: list[str], top: int = 12) -> list[str]:
    """cProfile of dupfinder's worker function over the tree, by own time."""
    import cProfile
    import io
    import pstats

    from dupfinder.fingerprint import HashSpec, fingerprint_and_digest

    spec = HashSpec()
    fingerprint_and_digest(paths[0], spec)
    prof = cProfile.Profile()
    prof.enable()
    for p in paths:
        fingerprint_and_digest(p, spec)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    out, keep = [], False
    for line in buf.getvalue().splitlines():
        if line.strip().startswith("ncalls"):
            keep = True
        if keep and line.strip():
            out.append("    " + line.rstrip().replace(str(SRC_ROOT) + os.sep, "").replace(sys.prefix + os.sep, ""))
    return out


def worker_pass(paths: list[str]) -> dict:
    """dupfinder's per-file worker function, in this process, on one core."""
    from dupfinder.fingerprint import HashSpec, fingerprint_and_digest

    spec = HashSpec()
    fingerprint_and_digest(paths[0], spec)  # import scipy.fftpack outside the timing
    start, cpu = time.perf_counter(), time.process_time()
    for p in paths:
        fingerprint_and_digest(p, spec)
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def dupfinder_run(tree: Path, report: Path) -> dict:
    r = run_timed([
        sys.executable, "-m", "dupfinder", "scan", str(tree),
        "--no-cache", "-q", "-f", "json", "-o", str(report),
    ])
    if r["rc"] not in (0, 1):
        sys.exit(f"dupfinder scan failed (exit {r['rc']}):\n{r['stderr']}")
    r["counts"] = json.loads(report.read_text())["counts"]
    return r


def baseline_run(tree: Path, workers: int, report: Path) -> dict:
    r = run_timed([
        sys.executable, str(Path(__file__).resolve()), "--run-baseline", str(tree),
        "--baseline-workers", str(workers), "--baseline-output", str(report),
    ])
    if r["rc"] != 0:
        sys.exit(f"baseline script failed (exit {r['rc']}):\n{r['stderr']}")
    r["counts"] = json.loads(r["stdout"].strip().splitlines()[-1])
    return r


def startup() -> float:
    return min(run_timed([sys.executable, "-c", "import dupfinder.cli"])["wall"] for _ in range(5))


def bench_tree(label: str, tree: Path, workdir: Path, workers: int, args, start_s: float) -> list[str]:
    paths = tree_files(tree)
    n = len(paths)
    mb = sum(os.path.getsize(p) for p in paths) / 1e6
    for p in paths:  # into the page cache for everyone
        with open(p, "rb") as f:
            f.read()
    print(f"\n({label}) {n} files, {mb:.0f} MB, in {tree}")
    sys.stdout.flush()

    floor, floor_all = best_of(args.repeat, lambda: floor_pass(paths))
    floor_1 = n / floor["wall"]
    floor_ips = floor_1 * workers
    with Pool(workers) as p:
        p.map(_noop, range(workers))
        pfloor, _ = best_of(args.repeat, lambda: floor_pool(p, paths, workers))
    pfloor_ips = n / pfloor["wall"]
    work, _ = best_of(args.repeat, lambda: worker_pass(paths))
    work_1 = n / work["wall"]
    report = workdir / f"report-{label}.json"
    dup, dup_all = best_of(args.repeat, lambda: dupfinder_run(tree, report))
    dup_ips = n / dup["wall"]
    pool, pool_all = best_of(args.baseline_repeat, lambda: baseline_run(tree, workers, workdir / "b.csv"))
    pool_ips = n / pool["wall"]
    single, single_all = best_of(args.baseline_repeat, lambda: baseline_run(tree, 1, workdir / "b.csv"))
    single_ips = n / single["wall"]

    def fmt(ts):
        return ", ".join(f"{t:.2f}" for t in ts)

    def cpu_per(r):
        return f"{r['cpu'] / n * 1e3:7.2f}ms"

    print(f"  {'':44s} {'images/s':>9s} {'wall/img':>9s} {'CPU/img':>9s}   runs (s)")
    print(f"  {'floor, 1 process (open+draft+load)':44s} {floor_1:9.1f} {floor['wall'] / n * 1e3:7.2f}ms "
          f"{cpu_per(floor)}   {fmt(floor_all)}")
    print(f"  {f'floor x {workers} workers (the goal reference)':44s} {floor_ips:9.1f}")
    print(f"  {f'floor measured in a warm Pool({workers})':44s} {pfloor_ips:9.1f} {'':9s}   "
          f"(this machine scales {pfloor_ips / floor_1:.2f}x on {workers} processes right now)")
    print(f"  {'dupfinder worker fn, 1 process (in-process)':44s} {work_1:9.1f} {work['wall'] / n * 1e3:7.2f}ms "
          f"{cpu_per(work)}   ({work['cpu'] / floor['cpu']:.2f}x the floor's CPU per image)")
    print(f"  {f'dupfinder scan, whole process, {workers} workers':44s} {dup_ips:9.1f} {'':9s} {cpu_per(dup)}   {fmt(dup_all)}"
          f"   (decoded {dup['counts'].get('decoded')}, groups {dup['counts'].get('groups')})")
    print(f"  {f'ImageHash script, {workers}-process Pool':44s} {pool_ips:9.1f} {'':9s} {cpu_per(pool)}   {fmt(pool_all)}"
          f"   (groups {pool['counts']['groups']})")
    print(f"  {'ImageHash script, single process':44s} {single_ips:9.1f} {'':9s} {cpu_per(single)}   {fmt(single_all)}"
          f"   (groups {single['counts']['groups']})")
    print(f"  CPU per image (contention-proof): dupfinder whole scan = {dup['cpu'] / floor['cpu']:.2f}x the floor's, "
          f"{dup['cpu'] / single['cpu']:.2f}x the single-process script's")
    steady = n / max(1e-9, dup["wall"] - start_s)
    print(f"  dupfinder without its start-up ({start_s * 1e3:.0f} ms import): {steady:.1f} images/s, "
          f"{steady / floor_ips:.2f} of the floor")
    # Steady state, as on the 10^5-10^6 files of a real tree: the same scan of
    # the tree twice over (a second copy beside it) less the scan of the tree
    # once, so start-up, the pool's start and grouping's fixed costs cancel.
    double = workdir / f"double-{label}"
    if not double.exists():
        shutil.copytree(tree, double / "one")
        for p in paths:  # other bytes again: a copy of a file is not decoded twice
            q = double / "two" / Path(p).relative_to(tree)
            q.parent.mkdir(parents=True, exist_ok=True)
            distinct_copy(Path(p), q, "dupfinder bench second tree")
    for p in tree_files(double):
        with open(p, "rb") as f:
            f.read()
    dup2, dup2_all = best_of(args.repeat, lambda: dupfinder_run(double, workdir / f"report-{label}-2.json"))
    marginal = n / max(1e-9, dup2["wall"] - dup["wall"])
    print(f"  {f'dupfinder scan of the tree twice over ({2 * n})':44s} {2 * n / dup2['wall']:9.1f} {'':9s} "
          f"{cpu_per(dup2)}   {fmt(dup2_all)}")
    print(f"  dupfinder steady state (the {n} more files of the double tree): {marginal:.1f} images/s = "
          f"{marginal / floor_ips:.2f} of the floor x {workers}, {marginal / pfloor_ips:.2f} of the measured pool floor")
    if label == "a":
        # What a library of byte-for-byte copies gains: each content decoded once.
        same = workdir / "a-same-bytes"
        shutil.rmtree(same, ignore_errors=True)
        build_copies(list_photos(Path(args.photos)), same, args.copies, same_bytes=True)
        for p in tree_files(same):
            with open(p, "rb") as f:
                f.read()
        dups, dups_all = best_of(args.repeat, lambda: dupfinder_run(same, workdir / "report-a-same.json"))
        print(f"  {'dupfinder scan, the copies byte for byte':44s} {n / dups['wall']:9.1f} {'':9s} {cpu_per(dups)}   "
              f"{fmt(dups_all)}   (decoded {dups['counts'].get('decoded')} of {n}: "
              f"{dup['wall'] / dups['wall']:.2f}x the scan above; the scripts decode every file either way)")
    if args.profile:
        print(f"  cProfile of dupfinder's worker function on ({label}), 1 process, by own time:")
        for line in worker_profile(paths):
            print(line)
    return [
        label, n, floor_ips, dup_ips, pool_ips, single_ips, pfloor_ips, marginal,
    ]


GOALS = {"a": (0.8, 1.5, "about 1.5-2x"), "b": (0.8, 8.0, ">= 8x")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="?", default=str(DEFAULT_PHOTOS), help="photo folder (default: %(default)s)")
    ap.add_argument("--copies", type=int, default=4, help="tree (a): copies of each photo (default 4)")
    ap.add_argument("--camera", type=int, default=200, help="tree (b): 12 MP JPEGs (default 200)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the floor and of dupfinder; best is kept")
    ap.add_argument("--baseline-repeat", type=int, default=1, help="runs of each baseline; best is kept")
    ap.add_argument("--only", choices=("a", "b"), default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--live", action="store_true", help="run the working tree's dupfinder/, not a snapshot")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of the worker function")
    # internal: run the baseline script in this (child) process
    ap.add_argument("--run-baseline", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--baseline-workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--baseline-output", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.run_baseline:
        print(json.dumps(baseline_script(args.run_baseline, args.baseline_workers, args.baseline_output)))
        return 0

    workers = os.cpu_count() or 1
    print("== dupfinder hashing throughput benchmark (issue 5) ==")
    try:
        import imagehash

        ih = f", ImageHash {imagehash.__version__}"
    except ImportError:
        ih = ", ImageHash missing"
    for line in machine_lines(versions=ih):
        print(line)
    photos = list_photos(Path(args.photos))
    print(f"photos: {args.photos} ({len(photos)} files)")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes share this machine)")
    print(f"workers: dupfinder default ({workers}); baseline Pool({workers}) and single process; "
          f"best of {args.repeat} (baselines: best of {args.baseline_repeat})")

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dupfinder-hashing-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        source_line = use_snapshot(workdir / "src", args.live)
        print(source_line)
        start_s = startup()
        print(f"start-up: python -c 'import dupfinder.cli' {start_s * 1e3:.0f} ms (best of 5)")
        if args.only in (None, "a"):
            tree_a = workdir / "a-copies"
            shutil.rmtree(tree_a, ignore_errors=True)
            build_copies(photos, tree_a, args.copies)
            rows.append(bench_tree("a", tree_a, workdir, workers, args, start_s))
        if args.only in (None, "b"):
            tree_b = workdir / "b-camera"
            shutil.rmtree(tree_b, ignore_errors=True)
            t0 = time.perf_counter()
            build_camera(photos, tree_b, args.camera, workers)
            print(f"\n(built {args.camera} camera JPEGs in {time.perf_counter() - t0:.1f} s)")
            rows.append(bench_tree("b", tree_b, workdir, workers, args, start_s))

        print("\nsummary (ratios of images/s, same run):")
        print(f"  {'tree':5s} {'files':>6s} {'dupfinder/floor':>16s} {'dupfinder/pool script':>22s} "
              f"{'dupfinder/single script':>24s} {'dupfinder/measured pool floor':>29s}")
        for label, n, floor_ips, dup_ips, pool_ips, single_ips, pfloor_ips, _ in rows:
            print(f"  {label:5s} {n:6d} {dup_ips / floor_ips:16.2f} {dup_ips / pool_ips:22.2f} "
                  f"{dup_ips / single_ips:24.2f} {dup_ips / pfloor_ips:29.2f}")
        for label, n, floor_ips, dup_ips, pool_ips, single_ips, _, marginal in rows:
            floor_goal, script_goal, script_text = GOALS[label]
            ok_floor = dup_ips / floor_ips >= floor_goal
            print(f"  goal ({label}) dupfinder >= {floor_goal} of the floor: {'met' if ok_floor else 'MISSED'} "
                  f"({dup_ips / floor_ips:.2f} whole process; steady state {marginal / floor_ips:.2f})")
            for name, ips in (("pool", pool_ips), ("single-process", single_ips)):
                ok = dup_ips / ips >= script_goal
                print(f"  goal ({label}) {script_text} the {name} script: {'met' if ok else 'MISSED'} ({dup_ips / ips:.2f}x)")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(live_changed_note(source_line))
    finally:
        if args.keep or args.workdir:
            print(f"\nwork folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
