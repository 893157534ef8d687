"""Peak memory and time of dupfinder.index.find_matches / find_pairs on big hash sets.

    /tmp/venv/bin/python bench/index_memory.py                 # every case
    /tmp/venv/bin/python bench/index_memory.py --cases pairs-1e6-T7 small-pairs-1e4
    /tmp/venv/bin/python bench/index_memory.py --root /some/other/checkout   # its dupfinder instead

Each case runs in a child process: it imports dupfinder, warms up on a tiny
input and frees a 16 MB array as a scan will have (--cold skips that; see
child()), builds the inputs (random or clumped uint64 hashes, seeded), then
resets the peak RSS (VmHWM, through /proc/self/clear_refs; ru_maxrss where
that is not possible) and times the call.  "peak MB" is the peak RSS above
the RSS once the inputs exist, so it is the call's own working memory plus
its result; "x input" is that over the inputs' size.  Small cases repeat the
call and print the best time.

Targets (a 10^6-file scan in 1 GB, 450 MB of which is other data):
find_matches 9e6 x 8e6 at T=5 within ~250 MB, find_pairs 1e6 at T=7 within ~100 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import reset_hwm

REPO = Path(__file__).resolve().parents[1]

# name: (call, sizes, threshold, words, kind, repeats)
CASES = {
    "matches-9e6x8e6-T5": ("matches", (9_000_000, 8_000_000), 5, 1, "uniform", 1),
    "matches-1e6x1e6-T5": ("matches", (1_000_000, 1_000_000), 5, 1, "uniform", 1),
    "pairs-1e6-T7": ("pairs", (1_000_000,), 7, 1, "uniform", 1),
    "pairs-1e5-T5": ("pairs", (100_000,), 5, 1, "uniform", 3),
    "pairs-1e6-T5-clumped": ("pairs", (1_000_000,), 5, 1, "clumped", 1),
    "matches-1e6x1e6-T5-clumped": ("matches", (1_000_000, 1_000_000), 5, 1, "clumped", 1),
    "matches-3e6x3e6-T5-clumped": ("matches", (3_000_000, 3_000_000), 5, 1, "clumped", 1),
    "pairs-1e5-T31-256bit": ("pairs", (100_000,), 31, 4, "uniform", 3),
    "small-pairs-1e4": ("pairs", (10_000,), 5, 1, "uniform", 20),
    "small-matches-1e4x1e5": ("matches", (10_000, 100_000), 5, 1, "uniform", 10),
}


def uniform(rng, n, words):
    return rng.integers(0, 2**64, size=(n, words) if words > 1 else n, dtype=np.uint64, endpoint=False)


def clumped(rng, n, words, share=0.10, dup_share=0.02):
    """Uniform hashes, a share of them copies of a few thousand centres with 0-8 bits flipped, plus duplicates."""
    h = uniform(rng, n, words).reshape(n, words)
    copies = int(n * share)
    rows = rng.choice(n, size=copies + int(n * dup_share), replace=False)
    rows, dups = rows[:copies], rows[copies:]
    h[rows] = h[rng.integers(0, max(1, min(3000, copies // 10)), size=copies)]
    flips = rng.integers(0, 8 * words + 1, size=copies)
    for c in range(8 * words):
        sel = rows[flips > c]
        pos = rng.integers(0, 64 * words, size=len(sel))
        h[sel, pos // 64] ^= np.uint64(1) << (pos % 64).astype(np.uint64)
    h[dups] = h[rng.integers(0, n, size=len(dups))]
    h = h[rng.permutation(n)]
    return h[:, 0].copy() if words == 1 else h


def _status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def child(name, cold=False):
    """Run one case and print a JSON line: peak bytes above the inputs, input bytes, seconds, pairs."""
    from dupfinder.index import find_matches, find_pairs

    call, sizes, threshold, words, kind, repeats = CASES[name]
    rng = np.random.default_rng(12345)
    make = uniform if kind == "uniform" else clumped
    warm = make(rng, 2000, words)
    find_pairs(warm, threshold), find_matches(warm, warm, threshold)  # lazy imports and allocator pools
    # A scan has freed big arrays before (decoding, hashing), which raises
    # glibc's dynamic mmap threshold; a fresh process has not, and then trims
    # and re-faults its heap on every MIH step (0.9-1.2 s instead of 0.7 s at
    # 10**5 256-bit hashes, old and new code alike), so do as a scan does.
    if not cold:
        warm = np.ones(16 << 20, np.uint8)
        del warm
    if kind == "clumped":  # queries and database from one clumped set, so clumps straddle them
        both = make(rng, sum(sizes), words)
        inputs = [both[: sizes[0]].copy(), both[sizes[0] :].copy()] if len(sizes) > 1 else [both]
        del both
    else:
        inputs = [make(rng, n, words) for n in sizes]
    fn = find_matches if call == "matches" else find_pairs
    base, hwm = _status("VmRSS"), reset_hwm()
    before = _status("VmHWM") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    best, pairs = float("inf"), 0
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(*inputs, threshold)
        best, pairs = min(best, time.perf_counter() - t), len(out)
        del out
    peak = _status("VmHWM") if hwm else max(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"peak": peak - base, "input": sum(a.nbytes for a in inputs), "seconds": best,
                      "pairs": pairs, "hwm": hwm}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--root", type=Path, default=REPO, help="import dupfinder from this folder")
    ap.add_argument("--cold", action="store_true", help="leave the allocator as a fresh process has it")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.cold)
    print(f"dupfinder from {args.root.resolve()}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    print(f"{'case':30} {'peak MB':>9} {'x input':>8} {'input MB':>9} {'seconds':>9} {'pairs':>9}")
    env = dict(os.environ, PYTHONPATH=str(args.root.resolve()))
    for name in args.cases:
        cmd = [sys.executable, __file__, "--child", name] + (["--cold"] if args.cold else [])
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if run.returncode:
            print(f"{name:30} failed: {run.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        note = "" if r["hwm"] else "  (ru_maxrss: a lower bound)"
        print(f"{name:30} {r['peak'] / 2**20:9.1f} {r['peak'] / r['input']:8.2f} {r['input'] / 2**20:9.1f}"
              f" {r['seconds']:9.3f} {r['pairs']:9d}{note}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
