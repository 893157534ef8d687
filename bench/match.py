"""How well and how fast ``dupfinder.match`` finds copies of protected images, against ImageHash + pybktree.

Issue 6's benchmark. From a folder of photos with no near-duplicates among
them it builds, in a temporary folder, with ``bench/variants.py``:

* the *references*: a seeded half of the photos (``--seed``), copied;
* the *targets*: every reference's 28 variants (all of
  ``variants.TRANSFORMS``: resizes, recompressions, crops, mirror, quarter
  and small turns, EXIF rotation, colour edits, blur, noise, a watermark, a
  thumbnail, a 16-bit PNG, ...) plus a byte-identical copy of each; the other
  half of the photos as *negatives*; and *negative copies*: variants of the
  negatives (``--negative-transforms``, by default resized, recompressed,
  cropped, greyed, mirrored and turned ones). A negative or a negative copy
  that matches any reference is a false match.

Then, in one process run and on files already in the page cache:

1. dupfinder: ``build_reference([refs], workers=W)`` and
   ``match([targets], index, workers=W, cache=None)``, timed separately
   (the match step's targets/s is the figure; both include starting their
   worker pool). CPU seconds per target are also measured (this process and
   its reaped workers), which other load on a shared machine disturbs less.
2. The baseline, the script a user would write for the same job:
   ``imagehash.phash(Image.open(p))`` for every reference and target in one
   process, a ``pybktree.BKTree`` over the reference hashes, each target's
   hash queried within the same threshold (default 5 bits, dupfinder's
   default for 64-bit pHash), the closest reference being its answer. It
   does not try flips or turns, nor EXIF orientation.
3. The decode floor: for every target ``Image.open(p); im.draft('L', (64,
   64)); im.load()`` (a plain ``load()`` for anything but JPEG) in this
   process, as images/s, multiplied by the number of workers dupfinder used
   (``os.cpu_count()`` by default): the best a decode-bound pool could do.
   For information it is also measured in a warm ``multiprocessing.Pool`` of
   that size, which shows how far the machine really scales at that moment.

Scoring. A target counts as found when its closest reported reference is
its true original ("best"), or when any reported reference is ("any").
Precision is over reported (target, reference) pairs: a pair is false when
the target was not made from that reference (every pair of a negative is
false); it is given over every pair reported (dupfinder's JSON report: all
references within the threshold) and over the closest pair of each target
(its CSV report). Recall per transform is printed for both tools.

The reference index is also checked: ``save_reference`` then
``load_reference`` of the built index must give the same index back, and the
load is timed; the same for a synthetic index of ``--big`` (10^5) random
references, which the issue wants loaded "well under a second". Unless
``--no-big-match``, the targets are also matched against that index merged
with the real references, to show how matching scales with 10^5 references
(and that random hashes are not matched).

Goals (issue 6), printed next to the figures and marked met or MISSED:

* precision >= 0.999 (all pairs reported);
* recall >= 0.99 for every transform except crops (crop5/10/20) and small
  rotations (rot2..rot5), which have no goal but crop20 >= 0.80; recall is
  marked on "best" (the reference the CSV report names);
* dupfinder's match step >= 0.8 of the decode floor of its pool;
* loading 10^5 references in well under a second (marked against 1 s).

Run it (PHOTOS defaults to sample_images/originals)::

    /tmp/venv/bin/python bench/match.py                                 # 36 sample photos
    /tmp/venv/bin/python bench/match.py /work/shared/photos --seed 1    # the fuller figures
    /tmp/venv/bin/python bench/match.py PHOTOS --workers 2 --threshold 5 --json match.json --out /tmp/m

Timings are wall-clock seconds, the best of ``--repeat`` (default 2) runs of
each contender, interleaved, with the sets in the page cache. On a shared
machine wall time depends on what else runs: compare the ratios, measured in
the same run, and the CPU time per target, which load disturbs much less.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter, namedtuple
from collections.abc import Sequence
from multiprocessing import Pool
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Benchmark this checkout's dupfinder, not whatever copy may be installed.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _common import floor_chunk, floor_pass, in_tree, jsonable
from variants import TRANSFORMS, build_tree, list_photos

import dupfinder
from dupfinder.match import build_reference, match
from dupfinder.reference import ReferenceIndex, load_reference, merge, save_reference
from dupfinder.scan import default_threshold

DEFAULT_PHOTOS = ROOT / "sample_images" / "originals"
IDENTICAL = "identical"  # a byte-for-byte copy of a reference, besides the variants
NEGATIVE = "negative"  # an unrelated photo
DEFAULT_NEGATIVE_TRANSFORMS = ("resize_down", "jpeg_q30", "webp", "thumb", "crop10", "grey", "mirror", "rot90")

# Issue 6's goals.
PRECISION_GOAL = 0.999
RECALL_GOAL = 0.99
NO_RECALL_GOAL = ("crop5", "crop10", "crop20", "rot2", "rot3", "rot4", "rot5")
SPECIAL_RECALL_GOALS = {"crop20": 0.80}
FLOOR_GOAL = 0.8
LOAD_GOAL_SECONDS = 1.0


def recall_goal(kind: str) -> float | None:
    """The recall a kind of target must reach, or None when the issue sets none.

    >>> recall_goal("mirror"), recall_goal("crop20"), recall_goal("rot3")
    (0.99, 0.8, None)
    """
    if kind in SPECIAL_RECALL_GOALS:
        return SPECIAL_RECALL_GOALS[kind]
    return None if kind in NO_RECALL_GOAL else RECALL_GOAL


def _key(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(path))


# --- the data set ------------------------------------------------------------------------------


def build_sets(photos: list[Path], out: Path, *, seed: int, negative_transforms: Sequence[str],
               workers: int | None) -> dict:
    """Write references, targets and the truth under ``out``.

    ``out/ref/originals`` holds the references; the targets are
    ``out/ref/variants`` (the variants and identical copies) and ``out/neg``
    (negatives in ``originals``, their copies in ``variants``). The truth maps
    each target's path to ``(kind, reference path or None)``.
    """
    order = sorted(photos, key=lambda p: p.name)
    chosen = set(random.Random(f"{seed}:references").sample(range(len(order)), len(order) // 2))
    refs = [p for i, p in enumerate(order) if i in chosen]
    negs = [p for i, p in enumerate(order) if i not in chosen]
    truth: dict[str, tuple[str, str | None]] = {}

    ref_truths = build_tree(refs, out / "ref", seed=seed, variant_share=1.0, workers=workers)
    references = []
    for t in ref_truths:
        if t.is_original:
            references.append(_key(t.path))
            copy = out / "ref" / "variants" / f"{t.path.stem}_{IDENTICAL}{t.path.suffix}"
            shutil.copyfile(t.path, copy)
            truth[_key(copy)] = (IDENTICAL, _key(t.path))
        else:
            truth[_key(t.path)] = (t.transform, _key(t.original))
    for t in build_tree(negs, out / "neg", seed=seed, variant_share=1.0 if negative_transforms else 0.0,
                        transforms=list(negative_transforms), workers=workers):
        truth[_key(t.path)] = (NEGATIVE if t.is_original else f"{NEGATIVE}:{t.transform}", None)
    return {
        "reference_root": out / "ref" / "originals",
        "target_roots": [out / "ref" / "variants", out / "neg"],
        "references": sorted(references),
        "truth": truth,
        "n_refs": len(refs),
        "n_negs": len(negs),
    }


def warm(paths: Sequence[str]) -> None:
    """Read every file once, so that every contender finds them in the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


# --- the runs ----------------------------------------------------------------------------------


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_dupfinder(sets: dict, *, workers: int | None, threshold: int | None) -> dict:
    """build_reference then match, each timed (wall and CPU incl. reaped workers)."""
    w0, c0 = time.perf_counter(), _cpu()
    index, ref_errors = build_reference([sets["reference_root"]], workers=workers)
    w1, c1 = time.perf_counter(), _cpu()
    kwargs = {} if threshold is None else {"threshold": threshold}
    result = match(sets["target_roots"], index, workers=workers, cache=None, **kwargs)
    w2, c2 = time.perf_counter(), _cpu()
    hits = {_key(m.path): [(h.distance, _key(h.reference), h.transform) for h in m.hits] for m in result.matches}
    return {
        "index": index,
        "ref_errors": [(e.path, f"{e.stage}: {e.message}") for e in ref_errors],
        "errors": [(e.path, f"{e.stage}: {e.message}") for e in result.errors],
        "threshold": result.settings.threshold,
        "counts": dict(result.counts),
        "hits": hits,
        "build_seconds": w1 - w0,
        "build_cpu": c1 - c0,
        "match_seconds": w2 - w1,
        "match_cpu": c2 - c1,
        "match_elapsed_reported": result.elapsed,
    }


def run_big_match(sets: dict, merged: ReferenceIndex, synthetic: frozenset, truth: dict, *,
                  workers: int | None, threshold: int) -> dict:
    """match() against the real references plus the synthetic ones: time, recall and false hits."""
    started = time.perf_counter()
    result = match(sets["target_roots"], merged, workers=workers, cache=None, threshold=threshold)
    seconds = time.perf_counter() - started
    hits = {_key(m.path): [(h.distance, h.reference if h.reference in synthetic else _key(h.reference),
                            h.transform) for h in m.hits] for m in result.matches}
    sc = score(hits, truth, examples=0)
    return {"references": len(merged), "seconds": seconds, "recall_best": sc["recall_overall_best"],
            "pairs": sc["pairs"], "false_pairs": sc["false_pairs"],
            "synthetic_hits": sum(1 for v in hits.values() for _, r, _ in v if r in synthetic),
            "errors": len(result.errors), "hits": hits}


_Item = namedtuple("_Item", "bits path")


def run_baseline(references: Sequence[str], targets: Sequence[str], threshold: int) -> dict:
    """The ImageHash + pybktree script: hash every file in one process, query a BK-tree of references."""
    import imagehash
    import pybktree
    from PIL import Image

    def phash(p: str) -> int:
        with Image.open(p) as im:
            return int(str(imagehash.phash(im)), 16)

    errors = []
    w0, c0 = time.perf_counter(), time.process_time()
    items = []
    for p in references:
        try:
            items.append(_Item(phash(p), p))
        except (OSError, ValueError, SyntaxError) as exc:
            errors.append((p, f"{type(exc).__name__}: {exc}"))
    tree = pybktree.BKTree(lambda a, b: pybktree.hamming_distance(a.bits, b.bits), items)
    w1, c1 = time.perf_counter(), time.process_time()
    hits = {}
    for p in targets:
        try:
            h = phash(p)
        except (OSError, ValueError, SyntaxError) as exc:
            errors.append((p, f"{type(exc).__name__}: {exc}"))
            continue
        found = tree.find(_Item(h, p), threshold)  # sorted by distance
        if found:
            hits[p] = [(d, item.path, "") for d, item in sorted(found, key=lambda x: (x[0], x[1].path))]
    w2, c2 = time.perf_counter(), time.process_time()
    return {"hits": hits, "errors": errors, "threshold": threshold,
            "build_seconds": w1 - w0, "build_cpu": c1 - c0, "match_seconds": w2 - w1, "match_cpu": c2 - c1}


def best_of(runs: list[dict]) -> dict:
    """The first run's results with each timing the smallest over the runs (wall and CPU alike).

    >>> best_of([{"match_seconds": 2.0, "hits": 1}, {"match_seconds": 1.5, "hits": 1}])
    {'match_seconds': 1.5, 'hits': 1, 'repeats': 2}
    """
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, float) and (k.endswith(("seconds", "cpu")) or k in ("wall",)):
            out[k] = min(r[k] for r in runs)
    out["repeats"] = len(runs)
    return out


def floor_in_pool(paths: Sequence[str], workers: int) -> float:
    """Seconds for the floor's work spread over a warm Pool of ``workers`` processes."""
    chunks = [list(paths[k::workers]) for k in range(workers)]
    with Pool(workers) as pool:
        pool.map(floor_chunk, [c[:2] for c in chunks], chunksize=1)  # warm: imports done
        started = time.perf_counter()
        pool.map(floor_chunk, chunks, chunksize=1)
        return time.perf_counter() - started


# --- the reference index round trip ------------------------------------------------------------


def same_index(a: ReferenceIndex, b: ReferenceIndex) -> list[str]:
    """The fields in which two indexes differ (empty when equal)."""
    diff = [name for name in ("algorithm", "hash_size", "decode_mode", "labels", "digests")
            if getattr(a, name) != getattr(b, name)]
    if a.hashes.shape != b.hashes.shape or a.hashes.dtype != b.hashes.dtype or not np.array_equal(a.hashes, b.hashes):
        diff.append("hashes")
    return diff


def synthetic_index(n: int, *, like: ReferenceIndex, seed: int) -> ReferenceIndex:
    """``n`` random references with path-like labels and digests, of ``like``'s algorithm and size."""
    rng = np.random.default_rng(seed)
    words = like.hashes.shape[1]
    hashes = rng.integers(0, np.iinfo(np.uint64).max, size=(n, words), dtype=np.uint64, endpoint=True)
    digest_len = max((len(d) for d in like.digests), default=32) // 2 or 16
    raw = rng.bytes(n * digest_len)
    digests = tuple(raw[i * digest_len : (i + 1) * digest_len].hex() for i in range(n))
    labels = tuple(f"/srv/archive/originals/{i // 1000:03d}/IMG_{i:06d}.jpg" for i in range(n))
    return ReferenceIndex(like.algorithm, like.hash_size, like.decode_mode, hashes, labels, digests)


def time_round_trip(index: ReferenceIndex, path: Path, *, repeat: int = 5) -> dict:
    """Save, load ``repeat`` times (best and first), and compare with the original."""
    started = time.perf_counter()
    save_reference(index, path)
    save_seconds = time.perf_counter() - started
    loads, loaded = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        loaded = load_reference(path)
        loads.append(time.perf_counter() - started)
    return {"count": len(index), "bytes": path.stat().st_size, "save_seconds": save_seconds,
            "load_first": loads[0], "load_best": min(loads), "load_all": loads,
            "differs": same_index(index, loaded)}


# --- scoring -----------------------------------------------------------------------------------


def score(hits: dict[str, list[tuple[int, str, str]]], truth: dict[str, tuple[str, str | None]],
          *, examples: int = 20) -> dict:
    """Recall per kind (best / any), precision over all pairs and over the closest pair of each target."""
    unknown = [p for p in hits if p not in truth]
    if unknown:
        msg = f"matches for files that are not targets: {unknown[:3]}"
        raise RuntimeError(msg)
    per_kind: dict[str, Counter] = {}
    pairs = false_pairs = best_pairs = false_best = 0
    false_examples = []
    negative_matched: Counter = Counter()
    for path, (kind, true_ref) in truth.items():
        c = per_kind.setdefault(kind, Counter())
        c["n"] += 1
        found = hits.get(path, [])
        if found:
            c["matched"] += 1
        if true_ref is not None:
            c["best"] += bool(found) and found[0][1] == true_ref
            c["any"] += any(r == true_ref for _, r, _ in found)
            if found and found[0][1] == true_ref:
                c[f"named:{found[0][2] or '-'}"] += 1
        elif found:
            negative_matched[kind] += 1
        for rank, (d, ref, transform) in enumerate(found):
            ok = ref == true_ref
            pairs += 1
            false_pairs += not ok
            if rank == 0:
                best_pairs += 1
                false_best += not ok
            if not ok:
                false_examples.append({"target": path, "kind": kind, "reference": ref, "distance": d,
                                       "transform": transform, "rank": rank, "true_reference": true_ref})
    recall = {k: {"n": c["n"], "best": c["best"] / c["n"], "any": c["any"] / c["n"],
                  "named": Counter({n[6:]: v for n, v in c.items() if n.startswith("named:")}).most_common(2)}
              for k, c in per_kind.items() if not k.startswith(NEGATIVE)}
    positives = [k for k in per_kind if not k.startswith(NEGATIVE)]
    n_pos = sum(per_kind[k]["n"] for k in positives)
    false_examples.sort(key=lambda e: (e["rank"] > 0, e["distance"], e["target"]))
    return {
        "recall": recall,
        "recall_overall_best": sum(per_kind[k]["best"] for k in positives) / max(n_pos, 1),
        "recall_overall_any": sum(per_kind[k]["any"] for k in positives) / max(n_pos, 1),
        "pairs": pairs,
        "false_pairs": false_pairs,
        "precision": (pairs - false_pairs) / pairs if pairs else math.nan,
        "best_pairs": best_pairs,
        "false_best_pairs": false_best,
        "precision_best": (best_pairs - false_best) / best_pairs if best_pairs else math.nan,
        "negatives": {k: {"n": c["n"], "matched": negative_matched[k]}
                      for k, c in sorted(per_kind.items()) if k.startswith(NEGATIVE)},
        "negatives_matched": sum(negative_matched.values()),
        "negatives_total": sum(c["n"] for k, c in per_kind.items() if k.startswith(NEGATIVE)),
        "false_examples": false_examples[:examples],
        "false_total": len(false_examples),
    }


# --- printing ----------------------------------------------------------------------------------


def _f(x: float | None, width: int = 6) -> str:
    return "n/a".rjust(width) if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{width}.3f}"


def _met(ok: bool) -> str:
    return "met   " if ok else "MISSED"


def _rel(path: str | None, base: Path) -> str:
    if path is None:
        return "-"
    try:
        rel = os.path.relpath(path, base)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def machine() -> dict:
    import imagehash
    import PIL

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "pillow": PIL.__version__, "numpy": np.__version__,
            "imagehash": getattr(imagehash, "__version__", "?"), "dupfinder": dupfinder.__version__,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def print_report(doc: dict, tree: Path, *, examples: int) -> None:
    m, s, d, b, fl = doc["machine"], doc["sets"], doc["dupfinder"], doc["baseline"], doc["floor"]
    ds, bs = doc["scores"]["dupfinder"], doc["scores"]["baseline"]
    print()
    print("== Machine " + "=" * 68)
    print(f"cpus {m['cpu_count']}, {m['platform']}, Python {m['python']}, Pillow {m['pillow']}, numpy {m['numpy']}, "
          f"ImageHash {m['imagehash']}, dupfinder {m['dupfinder']}; load average at start {m['loadavg_start']}, "
          f"at end {doc['loadavg_end']}")

    print()
    print("== Throughput " + "=" * 65)
    n = s["targets"]
    workers = doc["floor_workers"]
    df_tps = n / d["match_seconds"]
    ih_tps = n / b["match_seconds"]
    floor_1 = n / fl["wall"]
    floor_w = floor_1 * workers
    print(f"best of {doc['settings']['repeat']} interleaved runs each")
    print(f"{'':52s}{'seconds':>9}{'targets/s':>11}{'CPU ms/target':>15}")
    print(f"{'dupfinder build_reference (' + str(s['references']) + ' refs)':52s}{d['build_seconds']:9.2f}"
          f"{s['references'] / d['build_seconds']:11.1f}{d['build_cpu'] / s['references'] * 1e3:15.2f}  (refs/s)")
    w_text = {None: f"{workers}, default", 0: "0, in-process"}.get(doc["settings"]["workers"], f"{workers}")
    print(f"{'dupfinder match (' + str(n) + ' targets, workers ' + w_text + ')':52s}"
          f"{d['match_seconds']:9.2f}{df_tps:11.1f}{d['match_cpu'] / n * 1e3:15.2f}")
    print(f"{'baseline: hash refs + BK-tree':52s}{b['build_seconds']:9.2f}{s['references'] / b['build_seconds']:11.1f}"
          f"{b['build_cpu'] / s['references'] * 1e3:15.2f}  (refs/s)")
    print(f"{'baseline: hash + query targets, 1 process':52s}{b['match_seconds']:9.2f}{ih_tps:11.1f}"
          f"{b['match_cpu'] / n * 1e3:15.2f}")
    print(f"{'decode floor, 1 process (open+draft+load)':52s}{fl['wall']:9.2f}{floor_1:11.1f}{fl['cpu'] / n * 1e3:15.2f}")
    print(f"{'decode floor x ' + str(workers) + ' workers (the goal reference)':52s}{'':9s}{floor_w:11.1f}")
    if doc.get("floor_pool_seconds"):
        pf = n / doc["floor_pool_seconds"]
        print(f"{'decode floor in a warm Pool(' + str(workers) + ') (information)':52s}"
              f"{doc['floor_pool_seconds']:9.2f}{pf:11.1f}   (the machine scales {pf / floor_1:.2f}x right now)")
    print(f"dupfinder match / baseline (targets/s): {df_tps / ih_tps:.2f}x;   "
          f"dupfinder match / decode floor x {workers}: {df_tps / floor_w:.2f}"
          + (f";   / floor measured in the Pool: {df_tps / (n / doc['floor_pool_seconds']):.2f}"
             if doc.get("floor_pool_seconds") else ""))
    print(f"CPU per target: dupfinder {d['match_cpu'] / fl['cpu']:.2f}x the floor's, "
          f"baseline {b['match_cpu'] / fl['cpu']:.2f}x the floor's (contention-proof; so with perfect scaling "
          f"dupfinder / floor would be {fl['cpu'] / d['match_cpu']:.2f}, dupfinder / baseline "
          f"{b['match_cpu'] / d['match_cpu'] * workers:.2f}x)")
    c = d["counts"]
    print(f"dupfinder counts: {', '.join(f'{k} {v}' for k, v in c.items())}; reference errors "
          f"{len(d['ref_errors'])}, baseline errors {len(b['errors'])}")

    print()
    print("== Recall per transform (target found: its closest reference is its original = best; any "
          "reported reference is = any)")
    print(f"{'transform':<15}{'n':>4}{'goal':>7}  {'df best':>8}{'df any':>8}  {'ih best':>8}{'ih any':>8}   dupfinder names it")
    kinds = [*TRANSFORMS, IDENTICAL]
    for kind in kinds:
        if kind not in ds["recall"]:
            continue
        r, q = ds["recall"][kind], bs["recall"][kind]
        goal = recall_goal(kind)
        mark = "" if goal is None else ("+" if r["best"] >= goal else "-")
        named = ", ".join(f"{name} x{k}" for name, k in r["named"])
        print(f"{kind:<15}{r['n']:>4}{'' if goal is None else f'>={goal:g}':>7}  {_f(r['best'], 7)}{mark:1s}"
              f"{_f(r['any'], 7)}   {_f(q['best'], 7)} {_f(q['any'], 7)}   {named}")
    print(f"{'all':<15}{sum(r['n'] for r in ds['recall'].values()):>4}{'':>7}  {_f(ds['recall_overall_best'], 7)} "
          f"{_f(ds['recall_overall_any'], 7)}   {_f(bs['recall_overall_best'], 7)} {_f(bs['recall_overall_any'], 7)}")
    print("df = dupfinder, ih = the ImageHash + pybktree baseline (no flips/turns, no EXIF orientation); "
          "+/- marks dupfinder's goal")

    print()
    print("== Precision and negatives " + "=" * 52)
    for label, sc in (("dupfinder", ds), ("baseline", bs)):
        print(f"{label:<10} all pairs {sc['pairs']:>5}, false {sc['false_pairs']:>4}, precision {_f(sc['precision'])};"
              f"   closest pair per target {sc['best_pairs']:>5}, false {sc['false_best_pairs']:>4}, "
              f"precision {_f(sc['precision_best'])};   negatives matched {sc['negatives_matched']}/{sc['negatives_total']}")
    print(f"{'negatives':<22}" + "".join(f"{k.split(':')[-1]:>12}" for k in ds["negatives"]))
    for label, sc in (("dupfinder matched", ds), ("baseline matched", bs)):
        print(f"{label:<22}" + "".join(f"{str(v['matched']) + '/' + str(v['n']):>12}" for v in sc["negatives"].values()))
    for label, sc in (("dupfinder", ds), ("baseline", bs)):
        if not sc["false_examples"]:
            continue
        print(f"{label}: false pairs (closest first; rank 0 = the target's reported best), {sc['false_total']} in all:")
        for e in sc["false_examples"][:examples]:
            t = f" {e['transform']}" if e["transform"] else ""
            print(f"    d={e['distance']:<2}{t:<11} rank {e['rank']}  {_rel(e['target'], tree)} ({e['kind']})  ->  "
                  f"{_rel(e['reference'], tree)}   [true: {_rel(e['true_reference'], tree)}]")

    print()
    print("== Reference index round trip (save_reference + load_reference) " + "=" * 15)
    for label, rt in (("built index", doc["round_trip"]), ("synthetic index", doc["round_trip_big"])):
        same = "identical" if not rt["differs"] else "DIFFERS in " + ", ".join(rt["differs"])
        print(f"{label:<16} {rt['count']:>7} refs, {rt['bytes'] / 1e6:7.2f} MB: save {rt['save_seconds'] * 1e3:8.1f} ms, "
              f"load first {rt['load_first'] * 1e3:7.1f} ms, best {rt['load_best'] * 1e3:7.1f} ms; loaded back {same}")
    if doc.get("big_match"):
        bm = doc["big_match"]
        print(f"match against {bm['references']} references (the built ones + the synthetic): {bm['seconds']:.2f} s, "
              f"{n / bm['seconds']:.1f} targets/s ({d['match_seconds'] / bm['seconds']:.2f}x the rate against "
              f"{s['references']}); recall best {_f(bm['recall_best'])}, all pairs {bm['pairs']}, "
              f"false {bm['false_pairs']} ({bm['synthetic_hits']} to synthetic references)")

    print()
    print("== Issue 6 goals, dupfinder " + "=" * 51)
    for g in doc["goals"]:
        print(f"  {_met(g['met'])}  {g['goal']:<44} {g['value']}")
    met = sum(g["met"] for g in doc["goals"])
    print(f"  {met} of {len(doc['goals'])} goals met")


def goals(doc: dict) -> list[dict]:
    """Each goal, dupfinder's value and whether it is met."""
    ds, s = doc["scores"]["dupfinder"], doc["sets"]
    out = [{"goal": f"precision (all pairs) >= {PRECISION_GOAL}", "value": _f(ds["precision"]).strip(),
            "met": not math.isnan(ds["precision"]) and ds["precision"] >= PRECISION_GOAL}]
    for kind in [*TRANSFORMS, IDENTICAL]:
        goal = recall_goal(kind)
        if goal is None or kind not in ds["recall"]:
            continue
        r = ds["recall"][kind]["best"]
        out.append({"goal": f"recall {kind} >= {goal:g}", "value": _f(r).strip(), "met": r >= goal})
    n = s["targets"]
    ratio = (n / doc["dupfinder"]["match_seconds"]) / (n / doc["floor"]["wall"] * doc["floor_workers"])
    cpu_ratio = doc["floor"]["cpu"] / doc["dupfinder"]["match_cpu"]
    out.append({"goal": f"match >= {FLOOR_GOAL} of the decode floor x {doc['floor_workers']}",
                "value": f"{ratio:.2f} (wall; by CPU per target {cpu_ratio:.2f})", "met": ratio >= FLOOR_GOAL})
    big = doc["round_trip_big"]
    out.append({"goal": f"load {big['count']} references < {LOAD_GOAL_SECONDS:g} s",
                "value": f"{big['load_first'] * 1e3:.1f} ms (first), {big['load_best'] * 1e3:.1f} ms (best)",
                "met": big["load_first"] < LOAD_GOAL_SECONDS and not big["differs"]})
    out.append({"goal": "index round trip gives the same index", "value": "yes" if not doc["round_trip"]["differs"]
                else "no: " + ", ".join(doc["round_trip"]["differs"]), "met": not doc["round_trip"]["differs"]})
    return out


# --- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("photos", nargs="?", default=str(DEFAULT_PHOTOS),
                        help=f"folder of photos with no near-duplicates among them (default {DEFAULT_PHOTOS})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the reference choice and the variants (default 1)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for dupfinder and for building the sets (default one per CPU)")
    parser.add_argument("--threshold", type=int, default=None,
                        help="bits, for dupfinder and the baseline (default dupfinder's: 5 for 64-bit pHash)")
    parser.add_argument("--negative-transforms", nargs="*", choices=list(TRANSFORMS), metavar="NAME",
                        default=list(DEFAULT_NEGATIVE_TRANSFORMS),
                        help=f"variants made of each negative (default {' '.join(DEFAULT_NEGATIVE_TRANSFORMS)}; "
                             "none: only the negatives themselves)")
    parser.add_argument("--big", type=int, default=100_000, help="references in the synthetic index (default 10^5)")
    parser.add_argument("--no-big-match", action="store_true",
                        help="do not match the targets against the synthetic index as well")
    parser.add_argument("--no-pool-floor", action="store_true", help="skip the floor measured in a Pool")
    parser.add_argument("--repeat", type=int, default=2,
                        help="timed runs of each contender, interleaved; the best time is kept (default 2)")
    parser.add_argument("--examples", type=int, default=8, help="false pairs to print per tool (default 8)")
    parser.add_argument("--out", help="build the sets in this folder (empty or missing) and keep them")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    args = parser.parse_args(argv)

    photos = list_photos(args.photos)
    if len(photos) < 2:
        parser.error(f"fewer than 2 photos in {args.photos}")
    return in_tree(parser, args.out, "dupfinder-match-", lambda tree: _run(args, photos, tree))


def _run(args, photos: list[Path], tree: Path) -> int:
    doc: dict = {"machine": machine()}
    print(f"dupfinder {dupfinder.__version__} from {Path(dupfinder.__file__).parent}")
    started = time.perf_counter()
    sets = build_sets(photos, tree / "sets", seed=args.seed, negative_transforms=args.negative_transforms,
                      workers=args.workers)
    truth = sets["truth"]
    targets = sorted(truth)
    references = sets["references"]
    kinds = Counter(k if not k.startswith(NEGATIVE + ":") else "negative copy" for k, _ in truth.values())
    print(f"sets: {len(photos)} photos from {args.photos}, seed {args.seed}: {len(references)} references; "
          f"{len(targets)} targets = {sum(v for k, v in kinds.items() if not k.startswith(NEGATIVE))} copies of "
          f"references ({len(TRANSFORMS)} transforms + identical), {kinds[NEGATIVE]} negatives, "
          f"{kinds['negative copy']} negative copies ({', '.join(args.negative_transforms) or 'none'}); "
          f"built in {time.perf_counter() - started:.1f} s in {tree}", flush=True)
    warm([*references, *targets])

    threshold = args.threshold if args.threshold is not None else default_threshold("phash", 8)
    workers_used = args.workers if args.workers is not None else (os.cpu_count() or 1)
    floor_workers = max(1, workers_used)

    d_runs, b_runs, f_runs, pool_runs, big_runs = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="dupfinder-match-index-") as tmpdir:
        merged = rt = rt_big = None
        for r in range(args.repeat):
            # Interleaved, so that a burst of load from others falls on one repeat, not on one contender.
            tag = f" (repeat {r + 1}/{args.repeat})" if args.repeat > 1 else ""
            print(f"dupfinder: build_reference + match{tag} ...", flush=True)
            d_runs.append(run_dupfinder(sets, workers=args.workers, threshold=args.threshold))
            print(f"  build {d_runs[-1]['build_seconds']:.2f} s, match {d_runs[-1]['match_seconds']:.2f} s",
                  flush=True)
            if merged is None:
                index = d_runs[0]["index"]
                rt = time_round_trip(index, Path(tmpdir) / "refs.dfi")
                big = synthetic_index(args.big, like=index, seed=args.seed)
                rt_big = time_round_trip(big, Path(tmpdir) / "big.dfi")
                # Match with indexes as loaded from disk, as `dupfinder match --reference X.dfi` does.
                merged = merge([load_reference(Path(tmpdir) / "refs.dfi"), load_reference(Path(tmpdir) / "big.dfi")])
            if not args.no_big_match:
                print(f"dupfinder: match against {len(merged)} references{tag} ...", flush=True)
                big_runs.append(run_big_match(sets, merged, frozenset(big.labels), truth, workers=args.workers,
                                              threshold=d_runs[0]["threshold"]))
                print(f"  match {big_runs[-1]['seconds']:.2f} s", flush=True)
            print(f"baseline: imagehash.phash + pybktree, one process{tag} ...", flush=True)
            b_runs.append(run_baseline(references, targets, threshold))
            print(f"  references {b_runs[-1]['build_seconds']:.2f} s, targets {b_runs[-1]['match_seconds']:.2f} s",
                  flush=True)
            print(f"decode floor{tag} ...", flush=True)
            f_runs.append(floor_pass(targets))
            if not args.no_pool_floor and floor_workers > 1:
                pool_runs.append(floor_in_pool(targets, floor_workers))
    d, b, fl = best_of(d_runs), best_of(b_runs), best_of(f_runs)
    big_match = best_of(big_runs) if big_runs else None
    pool_seconds = min(pool_runs) if pool_runs else None
    if d["threshold"] != threshold:
        print(f"note: dupfinder used threshold {d['threshold']}, the baseline {threshold}")
    for label, runs in (("dupfinder", d_runs), ("baseline", b_runs), ("dupfinder (10^5)", big_runs)):
        if any(r["hits"] != runs[0]["hits"] for r in runs[1:]):
            print(f"WARNING: {label} reported different matches in different repeats (scored: the first)")
    d.pop("index")
    if big_match:
        big_match.pop("hits")

    doc.update(
        settings={"photos": str(args.photos), "seed": args.seed, "workers": args.workers, "threshold": threshold,
                  "repeat": args.repeat,
                  "negative_transforms": list(args.negative_transforms), "big": args.big},
        sets={"references": len(references), "targets": len(targets), "kinds": dict(kinds), "path": str(tree),
              "kept": bool(args.out)},
        dupfinder={k: v for k, v in d.items() if k != "hits"},
        baseline={k: v for k, v in b.items() if k != "hits"},
        floor=fl, floor_workers=floor_workers, floor_pool_seconds=pool_seconds,
        scores={"dupfinder": score(d["hits"], truth), "baseline": score(b["hits"], truth)},
        round_trip=rt, round_trip_big=rt_big, big_match=big_match,
        loadavg_end=[round(x, 2) for x in os.getloadavg()],
    )
    doc["goals"] = goals(doc)
    print_report(doc, tree / "sets", examples=args.examples)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(jsonable(doc), f, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
