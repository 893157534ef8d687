"""Time every dupfinder.index method on uniform and clumped random hashes.

    python bench/search.py --sizes 10000 100000 1000000 --threshold 5 --bits 64
    python bench/search.py --sizes 10000 100000 --threshold 31 --bits 256

"mih" and "auto" always run in full.  "brute" and "bktree" run in full when a
pilot says that fits in --budget seconds; otherwise they answer a random
sample of k queries with find_matches(hashes[sample], hashes) and the full
find_pairs time is extrapolated as fixed + per_query * n / 2 (find_pairs looks
at each unordered pair once; for bktree the fixed part is building the tree).
Sampled runs are checked against the full "mih" answer: the matches of the
sampled queries must be exactly the "mih" pairs that touch the sample.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from dupfinder.index import find_matches, find_pairs  # noqa: E402


def uniform(rng, n, words):
    return rng.integers(0, 2**64, size=(n, words), dtype=np.uint64, endpoint=False)


def clumped(rng, n, words, share=0.10, dup_share=0.02):
    """Uniform hashes, then share of them noisy copies of a few thousand centres, plus exact duplicates.

    A copy flips 0..8 bits per 64 (0..8*words in all); centres are drawn from
    the set itself so clumps have a real original, as photo collections do.
    """
    h = uniform(rng, n, words)
    copies = int(n * share)
    centres = max(1, min(3000, copies // 10))
    rows = rng.choice(n, size=copies + int(n * dup_share), replace=False)
    rows, dups = rows[:copies], rows[copies:]
    h[rows] = h[rng.integers(0, centres, size=copies)]
    flips = rng.integers(0, 8 * words + 1, size=copies)
    for c in range(8 * words):  # c-th flipped bit for the copies that flip more than c
        sel = rows[flips > c]
        pos = rng.integers(0, 64 * words, size=len(sel))
        h[sel, pos // 64] ^= np.uint64(1) << (pos % 64).astype(np.uint64)
    h[dups] = h[rng.integers(0, n, size=len(dups))]
    return h[rng.permutation(n)]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t, out


def sampled(hashes, threshold, method, budget, reference, rng):
    """(seconds, pairs or None, queries measured, agrees) for one capped method."""
    n = len(hashes)
    order = rng.permutation(n)
    t1, _ = timed(find_matches, hashes[order[:1]], hashes, threshold, method=method)
    k = min(n, 16)
    while True:
        tk, got = timed(find_matches, hashes[order[:k]], hashes, threshold, method=method)
        per = max(tk - t1, 1e-9) / max(k - 1, 1)
        estimate = t1 + per * n / 2
        settled = tk - t1 >= t1 / 2 or tk >= budget / 3 or k == n  # query time stands out of the noise
        if settled and estimate <= budget:  # affordable: measure the real thing
            seconds, pairs = timed(find_pairs, hashes, threshold, method=method)
            return seconds, len(pairs), n, pairs == reference
        if tk >= budget / 3 or k == n:
            break
        k = int(min(n, max(4 * k, (budget / 2 - t1) / per if settled else 0)))
    sample = order[:k]
    expect = np.isin(reference.left, sample).sum() + np.isin(reference.right, sample).sum()
    own = sample[got.left] == got.right  # each query finds itself
    agrees = int((~own).sum()) == int(expect)
    return estimate, None, k, agrees


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--threshold", type=int, default=5)
    ap.add_argument("--bits", type=int, default=64, choices=[64, 128, 256])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=6.0, help="seconds per capped (brute, bktree) run")
    ap.add_argument("--dists", nargs="+", default=["uniform", "clumped"], choices=["uniform", "clumped"])
    args = ap.parse_args(argv)
    words = args.bits // 64
    print(f"machine: {platform.platform()}, {cpu_model()}, os.cpu_count()={os.cpu_count()}, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"bits={args.bits} threshold={args.threshold} seed={args.seed} budget={args.budget}s")
    head = f"{'dist':8} {'n':>9} {'method':7} {'seconds':>9} {'pairs':>10} {'vs brute':>9}  note"
    print(head)
    print("-" * len(head))
    all_agree = True
    for dist in args.dists:
        for n in args.sizes:
            rng = np.random.default_rng([args.seed, n, dist == "clumped"])
            hashes = (uniform if dist == "uniform" else clumped)(rng, n, words)
            if words == 1:
                hashes = hashes[:, 0]
            rows = {}
            for method in ("mih", "auto"):
                seconds, pairs = timed(find_pairs, hashes, args.threshold, method=method)
                rows[method] = (seconds, len(pairs), n, None)
                if method == "mih":
                    reference = pairs
                else:
                    rows[method] = rows[method][:3] + (pairs == reference,)
            for method in ("brute", "bktree"):
                rows[method] = sampled(hashes, args.threshold, method, args.budget, reference, rng)
            brute = rows["brute"][0]
            for method in ("brute", "mih", "auto", "bktree"):
                seconds, count, measured, agrees = rows[method]
                all_agree &= agrees is not False
                note = "full run" if measured == n else f"EXTRAPOLATED from {measured} of {n} queries ({100 * measured / n:.2g}%)"
                if agrees is not None:
                    note += ", agrees with mih" if agrees else ", DISAGREES with mih"
                shown = "-" if count is None else str(count)
                print(f"{dist:8} {n:>9} {method:7} {seconds:>9.3f} {shown:>10} {brute / seconds:>8.3g}x  {note}",
                      flush=True)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("all methods agree" if all_agree else "METHODS DISAGREE")
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
