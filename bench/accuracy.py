"""How well dupfinder groups near-duplicates, against ImageHash + pybktree, on a seeded variant tree.

Issue 4's benchmark. It builds a tree with ``bench/variants.py`` (every photo
copied, half of them with 28 variants each: resizes, recompressions, crops,
mirror, rotations, EXIF rotation, colour edits, blur, noise, a watermark,
a 16-bit PNG, ...; the other half alone, as distractors), then in the same
run scans it with

* dupfinder at its default settings (``dupfinder.scan([tree])``, no cache),
  and at each ``--thresholds`` value;
* a baseline script: ``imagehash.phash(Image.open(path))`` for every file in
  one process, a pybktree BK-tree over the hashes, every pair within the
  threshold, connected components as groups.

and scores each run *pairwise*. The true pairs are all pairs of files made
from one photo (the photo and its variants form one cluster); the predicted
pairs are all pairs of files in one group; precision, recall and F1 follow.
Recall per transform counts a variant as found when it is in its original's
group; since a group is a connected component, a variant may get there
through another variant (crop20 through crop10), so a second, stricter
table counts it only when its own hash is within the threshold of its
original's ("direct": for dupfinder, the pair matched when the two files
are grouped alone, with every hash it keeps; for the baseline, the hash
distance; over flips and turns when dupfinder stores their
hashes). False pairs are counted and the closest few printed, with the Hamming
distance between the two files' hashes. The photos must have no true
near-duplicates among themselves: any pair of two originals is false. The
last section lists the closest files of different photos, grouped or not:
the false pairs that a higher threshold would make first.

Reading the thresholds: a 64-bit pHash has exactly 32 bits set (bits are
"above the median of 64 values"; every hash of the 2130-file tree of the
shared photos has), so distances are even and t=4 and t=5 give the same groups.

The issue's targets are printed next to the figures and marked ``+`` (met)
or ``-`` (missed). Timings are wall-clock seconds for each run; the
baseline hashes once (one process) and groups once per threshold, so its
seconds are that hashing plus its own grouping.

Run it (PHOTOS defaults to sample_images/originals)::

    python bench/accuracy.py                                 # 36 sample photos
    python bench/accuracy.py /work/shared/photos --seed 1    # the fuller figures
    python bench/accuracy.py PHOTOS --thresholds 4 5 6 8 10 --workers 2 --out /tmp/tree --json acc.json

``--out DIR`` keeps the tree (with ``truth.csv``) for a look afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict, namedtuple
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Benchmark this checkout's dupfinder, not whatever copy may be installed.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import dupfinder  # noqa: E402
from _common import in_tree, jsonable  # noqa: E402
from dupfinder.scan import collect, group_files  # noqa: E402
from variants import TRANSFORMS, Truth, build_tree, clusters, list_photos, write_truth  # noqa: E402

DEFAULT_PHOTOS = ROOT / "sample_images" / "originals"

# The targets for dupfinder: (label, what, minimum).
PEER_TRANSFORMS = ("resize_down", "resize_up", "jpeg_q30", "png", "webp", "bright", "dark",
                   "contrast_up", "contrast_down", "grey", "blur", "noise", "thumb", "stretch")
RECALL_TARGETS = {
    **{t: 0.99 for t in ("mirror", "rot90", "rot180", "rot270", "exif_rot")},
    "crop10": 0.95,
    "crop20": 0.80,
    "rot4": 0.90,
    "watermark": 0.98,
    "png16": 1.0,
    **{t: 0.99 for t in PEER_TRANSFORMS},
}
PRECISION_TARGET = 0.998
F1_TARGET = 0.97


@dataclass
class Run:
    """One scan of the tree: its groups (lists of abspaths), hashes and time."""

    label: str
    method: str  # "dupfinder" or "baseline"
    threshold: int
    seconds: float
    groups: list[list[str]]
    hashes: dict[str, tuple[str, ...]]  # abspath -> hex as is, then under each flip/turn if known
    errors: list[tuple[str, str]] = field(default_factory=list)
    member_info: dict[str, str] = field(default_factory=dict)  # abspath -> "d=3 rot90 to kept"
    note: str = ""
    # dupfinder only: does it match these two files when they are alone (all
    # its hashes: flips and turns, crops, small turns, regions)?
    pair_match: object = None


# --- the runs --------------------------------------------------------------------------------


def run_dupfinder(tree: Path, *, label: str, threshold: int | None, workers: int | None) -> Run:
    kwargs = {} if threshold is None else {"threshold": threshold}
    started = time.perf_counter()
    result = dupfinder.scan([tree], workers=workers, cache=None, **kwargs)
    seconds = time.perf_counter() - started
    groups, info = [], {}
    for g in result.groups:
        groups.append([os.path.abspath(m.path) for m in g.members])
        for m in g.members:
            extra = f" {m.transform}" if getattr(m, "transform", "") else ""
            info[os.path.abspath(m.path)] = f"{m.distance}{extra}"
    by_path = {os.path.abspath(f.path): f for f in result.files}
    threshold_used = result.settings.threshold

    def pair_match(a: str, b: str) -> bool:
        # The two files alone, grouped exactly as scan() groups a tree.
        return bool(group_files(collect([by_path[a], by_path[b]], []), threshold_used))

    return Run(
        label, "dupfinder", result.settings.threshold, seconds, groups,
        {os.path.abspath(f.path): _with_variants(f) for f in result.files},
        [(e.path, f"{e.stage}: {e.message}") for e in result.errors], info,
        pair_match=pair_match,
    )


def _with_variants(f) -> tuple[str, ...]:
    # dupfinder may store the hashes under the 8 flips and turns (the first
    # is the hash as is); distances are then the smallest over them, as it matches.
    variants = getattr(f, "variants", "")
    n = len(f.hash)
    if not variants or len(variants) % n:
        return (f.hash,)
    return tuple(variants[k : k + n] for k in range(0, len(variants), n))


def baseline_hash(paths: Sequence[str]) -> tuple[dict[str, tuple[str, ...]], list[tuple[str, str]], float]:
    """imagehash.phash(Image.open(path)) for every path, in this process, as a plain script would."""
    import imagehash
    from PIL import Image

    hashes, errors = {}, []
    started = time.perf_counter()
    for p in paths:
        try:
            with Image.open(p) as im:
                hashes[p] = (str(imagehash.phash(im)),)
        except (OSError, ValueError, SyntaxError) as exc:
            errors.append((p, f"{type(exc).__name__}: {exc}"))
    return hashes, errors, time.perf_counter() - started


_Item = namedtuple("_Item", "bits path")


def baseline_groups(hashes: dict[str, tuple[str, ...]], threshold: int) -> list[list[str]]:
    """BK-tree over the hashes, every pair within threshold, connected components of two or more."""
    import pybktree

    items = [_Item(int(h[0], 16), p) for p, h in hashes.items()]
    tree = pybktree.BKTree(lambda a, b: pybktree.hamming_distance(a.bits, b.bits), items)
    parent = {p: p for p in hashes}

    def root(p):
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for item in items:
        for _, other in tree.find(item, threshold):
            a, b = root(item.path), root(other.path)
            if a != b:
                parent[max(a, b)] = min(a, b)
    members = defaultdict(list)
    for p in hashes:
        members[root(p)].append(p)
    return [sorted(g) for g in members.values() if len(g) > 1]


# --- scoring ---------------------------------------------------------------------------------


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def hamming_hex(a: str, b: str) -> int:
    """Bits that differ between two hex hashes.

    >>> hamming_hex("00ff", "00f0")
    4
    """
    return (int(a, 16) ^ int(b, 16)).bit_count()


def distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Smallest distance between two files' hashes over flips and turns, both ways.

    ``a[0]`` is the hash as is, ``a[k]`` the hash under the k-th flip or turn.

    >>> distance(("00ff", "0f0e"), ("0f0f",)), distance(("00ff",), ("0f0f",))
    (1, 8)
    """
    return min(min(hamming_hex(x, b[0]) for x in a), min(hamming_hex(y, a[0]) for y in b))


def _words(hashes: Sequence[Sequence[str]]) -> np.ndarray:
    """(n, variants, words) uint64 from hex tuples; files with fewer variants repeat their own hash."""
    k = max(len(h) for h in hashes)
    w = len(hashes[0][0]) // 16
    out = np.empty((len(hashes), k, w), dtype=np.uint64)
    for i, h in enumerate(hashes):
        for j in range(k):
            text = h[j] if j < len(h) else h[0]
            out[i, j] = np.frombuffer(bytes.fromhex(text), dtype=">u8")
    return out


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    bits = np.unpackbits(np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8), axis=-1)
    return bits.sum(axis=-1)


def closest_foreign(run: Run, truths: Sequence[Truth], *, limit: int = 8, originals_only: bool = False) -> list[dict]:
    """The closest pairs of files made from different photos, one per pair of photos, grouped or not.

    These are the false pairs a higher threshold would make first: the
    margin between the threshold and the nearest unrelated picture.
    """
    cluster = clusters(truths)
    keep = {os.path.abspath(t.path) for t in truths if t.is_original or not originals_only}
    paths = sorted(p for p in run.hashes if p in keep)
    if len(paths) < 2:
        return []
    words = _words([run.hashes[p] for p in paths])
    plain = words[:, 0]
    label = np.array([cluster[p] for p in paths])
    best: dict[tuple[str, str], tuple[int, int, int]] = {}
    per_row = 30 * limit  # one photo has at most 29 files: enough to reach `limit` photos
    for i in range(len(paths) - 1):
        rest = slice(i + 1, None)
        there = _popcount(words[i][None, :, :] ^ plain[rest][:, None, :]).sum(axis=2).min(axis=1)
        back = _popcount(words[rest] ^ plain[i][None, None, :]).sum(axis=2).min(axis=1)
        d = np.minimum(there, back).astype(np.int64)
        d[label[rest] == label[i]] = 1 << 30
        for j in np.argsort(d, kind="stable")[:per_row]:
            if d[j] >= 1 << 30:
                break
            j = i + 1 + int(j)
            key = tuple(sorted((label[i], label[j])))
            if key not in best or (int(d[j - i - 1]), i, j) < best[key]:
                best[key] = (int(d[j - i - 1]), i, j)
    ranked = sorted(best.values())[:limit]
    return [{"distance": d, "a": paths[i], "b": paths[j]} for d, i, j in ranked]


def score(run: Run, truths: Sequence[Truth], *, examples: int) -> dict:
    """Pairwise precision/recall/F1, recall per transform, and the false pairs of one run."""
    cluster = clusters(truths)
    transform_of = {os.path.abspath(t.path): t.transform for t in truths}
    true_pairs = sum(_pairs(n) for n in Counter(cluster.values()).values())
    group_of: dict[str, int] = {}
    predicted = tp = 0
    false_pairs = []  # (distance or None, a, b)
    mixed = []  # groups holding files of two or more photos
    for gi, members in enumerate(run.groups):
        unknown = [p for p in members if p not in cluster]
        if unknown:
            msg = f"{run.label} grouped files that are not in the tree's truth: {unknown[:3]}"
            raise RuntimeError(msg)
        for p in members:
            group_of[p] = gi
        predicted += _pairs(len(members))
        per_photo = Counter(cluster[p] for p in members)
        tp += sum(_pairs(n) for n in per_photo.values())
        if len(per_photo) > 1:
            kinds = Counter(transform_of[p] for p in members)
            mixed.append({
                "files": len(members),
                "false_pairs": _pairs(len(members)) - sum(_pairs(n) for n in per_photo.values()),
                "photos": sorted(Path(c).name for c in per_photo),
                "transforms": dict(kinds.most_common()),
            })
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if cluster[a] != cluster[b]:
                    d = distance(run.hashes[a], run.hashes[b]) if a in run.hashes and b in run.hashes else None
                    false_pairs.append((d, *sorted((a, b))))
    precision = tp / predicted if predicted else math.nan
    recall = tp / true_pairs if true_pairs else math.nan
    f1 = 2 * precision * recall / (precision + recall) if predicted and tp else 0.0

    found, direct, total = Counter(), Counter(), Counter()
    for t in truths:
        if t.is_original:
            continue
        p, o = os.path.abspath(t.path), os.path.abspath(t.original)
        total[t.transform] += 1
        if p in group_of and group_of.get(o) == group_of[p]:
            found[t.transform] += 1
        if run.pair_match is not None:
            if p in run.hashes and o in run.hashes and run.pair_match(p, o):
                direct[t.transform] += 1
        elif p in run.hashes and o in run.hashes and distance(run.hashes[p], run.hashes[o]) <= run.threshold:
            direct[t.transform] += 1
    by_transform = {name: found[name] / total[name] for name in TRANSFORMS if total[name]}
    direct_by_transform = {name: direct[name] / total[name] for name in TRANSFORMS if total[name]}

    originals = {os.path.abspath(t.path) for t in truths if t.is_original}
    distractors = {os.path.abspath(t.path) for t in truths if t.distractor}
    confused = Counter(tuple(sorted((Path(cluster[a]).name, Path(cluster[b]).name))) for _, a, b in false_pairs)
    false_pairs.sort(key=lambda x: (math.inf if x[0] is None else x[0], x[1], x[2]))
    return {
        "label": run.label,
        "method": run.method,
        "threshold": run.threshold,
        "seconds": round(run.seconds, 3),
        "errors": len(run.errors),
        "groups": len(run.groups),
        "true_pairs": true_pairs,
        "predicted_pairs": predicted,
        "true_positive_pairs": tp,
        "false_pairs": len(false_pairs),
        "false_pairs_within_threshold": sum(1 for d, _, _ in false_pairs if d is not None and d <= run.threshold),
        "false_original_pairs": sum(1 for _, a, b in false_pairs if a in originals and b in originals),
        "distractors_grouped": sum(1 for p in distractors if p in group_of),
        "distractors": len(distractors),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "recall_by_transform": by_transform,
        "direct_recall_by_transform": direct_by_transform,
        "mixed_groups": sorted(mixed, key=lambda g: (-g["false_pairs"], g["photos"])),
        "confused_photo_pairs": {f"{a} ~ {b}": n for (a, b), n in sorted(confused.items())},
        "false_examples": [
            {"distance": d, "a": a, "b": b, "a_in_group": run.member_info.get(a, ""),
             "b_in_group": run.member_info.get(b, "")}
            for d, a, b in false_pairs[:examples]
        ],
    }


def check_targets(s: dict) -> list[dict]:
    """Each of the issue's targets with the run's value and whether it is met."""
    rows = [{"target": "pairwise precision", "minimum": PRECISION_TARGET, "value": s["precision"]}]
    for name, minimum in RECALL_TARGETS.items():
        if name in s["recall_by_transform"]:
            rows.append({"target": f"recall {name}", "minimum": minimum, "value": s["recall_by_transform"][name],
                         "direct": s["direct_recall_by_transform"][name]})
    rows.append({"target": "pairwise F1", "minimum": F1_TARGET, "value": s["f1"]})
    for r in rows:
        r["met"] = not math.isnan(r["value"]) and r["value"] >= r["minimum"]
    return rows


# --- printing --------------------------------------------------------------------------------


def _f(x: float, width: int = 6) -> str:
    return "n/a".rjust(width) if x is None or math.isnan(x) else f"{x:{width}.3f}"


def _mark(value: float, minimum: float | None) -> str:
    if minimum is None:
        return " "
    return "+" if not math.isnan(value) and value >= minimum else "-"


def _rel(path: str, tree: Path) -> str:
    try:
        return os.path.relpath(path, tree)
    except ValueError:
        return path


def print_report(scores: list[dict], tree: Path, *, columns: dict[str, str], examples: int,
                 margins: dict[str, list[dict]]) -> None:
    print()
    print("== Pairwise scores " + "=" * 60)
    print(f"{'run':<11}{'t':>3}{'seconds':>9}{'groups':>7}{'pairs':>8}{'true+':>7}{'false':>7}"
          f"{'precision':>10}{'recall':>8}{'F1':>8}{'F1/base':>8}{'targets':>9}")
    base_f1 = {s["threshold"]: s["f1"] for s in scores if s["method"] == "baseline"}
    for s in scores:
        ratio = ""
        if s["method"] == "dupfinder" and s["threshold"] in base_f1 and base_f1[s["threshold"]]:
            ratio = f"{s['f1'] / base_f1[s['threshold']]:.3f}"
            s["f1_ratio_to_baseline"] = s["f1"] / base_f1[s["threshold"]]
        met = sum(r["met"] for r in s["targets"])
        print(f"{s['label']:<11}{s['threshold']:>3}{s['seconds']:>9.2f}{s['groups']:>7}{s['predicted_pairs']:>8}"
              f"{s['true_positive_pairs']:>7}{s['false_pairs']:>7}"
              f"{_f(s['precision'], 9)}{_mark(s['precision'], PRECISION_TARGET)}"
              f"{_f(s['recall'], 7)} {_f(s['f1'], 6)}{_mark(s['f1'], F1_TARGET)}{ratio:>8}"
              f"{met:>5}/{len(s['targets']):<3}")
    print(f"targets: precision >= {PRECISION_TARGET}, F1 >= {F1_TARGET}; true pairs in the tree: "
          f"{scores[0]['true_pairs']}. F1/base: dupfinder's F1 over the baseline's at the same threshold.")

    by_label = {s["label"]: s for s in scores}
    tables = {
        "recall_by_transform": "Recall per transform: the variant is in its original's group (+ target met, - missed)",
        "direct_recall_by_transform": "Direct recall: the variant matches its original when the two are alone, no chain "
                                      "through other variants",
    }
    for key, title in tables.items():
        print()
        print(f"== {title}")
        print(f"{'transform':<14}{'target':>7} " + "".join(f"{c:>8}" for c in columns))
        for name in TRANSFORMS:
            if not any(name in s[key] for s in scores):
                continue
            minimum = RECALL_TARGETS.get(name)
            cells = []
            for label in columns:
                r = by_label[label][key].get(name, math.nan)
                cells.append(f"{_f(r, 7)}{_mark(r, minimum)}")
            target = f">={minimum:g}" if minimum is not None and minimum < 1 else ("=1" if minimum else "")
            print(f"{name:<14}{target:>7} " + "".join(cells))
    print("columns: " + ", ".join(f"{c} = {d}" for c, d in columns.items()))
    print("A group is a connected component, so in this tree a variant can join its original through another")
    print("variant (crop20 through crop10, rot5 through rot4): 'direct' is the stricter figure for one copy alone.")

    print()
    print("== Issue 4 targets, dupfinder at default settings " + "=" * 28)
    default = scores[0]
    missed = [r for r in default["targets"] if not r["met"]]
    for r in default["targets"]:
        direct = f"   direct {_f(r['direct'])}{_mark(r['direct'], r['minimum'])}" if "direct" in r else ""
        target = f"(target >= {r['minimum']:g})"
        print(f"  {'met   ' if r['met'] else 'MISSED'}  {r['target']:<22} {_f(r['value'])}  {target:<18}{direct}")
    print(f"  {len(default['targets']) - len(missed)} of {len(default['targets'])} targets met")

    print()
    print("== False pairs (files from different photos in one group) " + "=" * 19)
    previous: dict[str, tuple] = {}
    for s in scores:
        same = (s["false_pairs"], s["mixed_groups"], s["false_examples"][:examples])
        if previous.get(s["method"], (None, None))[1] == same:
            print(f"{s['label']} (t={s['threshold']}): the same false pairs as {previous[s['method']][0]}")
            continue
        previous[s["method"]] = (s["label"], same)
        print(f"{s['label']} (t={s['threshold']}): {s['false_pairs']} false pairs, "
              f"{s['false_pairs_within_threshold']} of them within the threshold by hash distance, "
              f"{s['false_original_pairs']} between two originals; "
              f"{s['distractors_grouped']}/{s['distractors']} distractors grouped; {s['errors']} unreadable")
        for g in s["mixed_groups"][:3]:
            photos = ", ".join(Path(p).stem for p in g["photos"][:8]) + (" ..." if len(g["photos"]) > 8 else "")
            kinds = ", ".join(f"{k} x{n}" for k, n in g["transforms"].items())
            print(f"    group of {g['files']} files from {len(g['photos'])} photos ({photos}): {kinds}")
        if len(s["mixed_groups"]) > 3:
            print(f"    ... and {len(s['mixed_groups']) - 3} more mixed groups")
        for e in s["false_examples"][:examples]:
            d = "?" if e["distance"] is None else e["distance"]
            extra = ""
            if e["a_in_group"] or e["b_in_group"]:
                extra = f"   [distance to kept: {e['a_in_group'] or '-'} / {e['b_in_group'] or '-'}]"
            print(f"    d={d:<3} {_rel(e['a'], tree)}  ~  {_rel(e['b'], tree)}{extra}")

    # Which photos dupfinder confuses, and at which thresholds (the baseline's are in --json).
    ours = [c for c in columns if by_label[c]["method"] == "dupfinder"]
    confused = sorted({k for c in ours for k in by_label[c]["confused_photo_pairs"]},
                      key=lambda k: ([-(k in by_label[c]["confused_photo_pairs"]) for c in columns], k))
    print()
    print("== Photo pairs dupfinder confuses (false pairs between their files, per run) ==")
    if not confused:
        print("none")
    else:
        print(f"{'photos':<26}" + "".join(f"{c:>8}" for c in columns))
        limit = 40
        for k in confused[:limit]:
            print(f"{k:<26}" + "".join(f"{by_label[c]['confused_photo_pairs'].get(k, '.'):>8}" for c in columns))
        if len(confused) > limit:
            print(f"... and {len(confused) - limit} more photo pairs (all in --json)")
    others = {k for c in columns if c not in ours for k in by_label[c]["confused_photo_pairs"]} - set(confused)
    if others:
        print(f"(the baseline confuses {len(others)} other photo pairs; see its mixed groups above)")

    print()
    print("== Closest files of different photos: the false pairs a higher threshold makes first")
    titles = {
        "dupfinder_files": "dupfinder, any two files (the closest per pair of photos; over flips and turns)",
        "dupfinder_originals": "dupfinder, originals only",
        "baseline_originals": "baseline, originals only",
    }
    for key, title in titles.items():
        print(f"{title}:")
        for e in margins.get(key, [])[:examples]:
            print(f"    d={e['distance']:<3} {_rel(e['a'], tree)}  ~  {_rel(e['b'], tree)}")


# --- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("photos", nargs="?", default=str(DEFAULT_PHOTOS),
                        help=f"folder of photos with no near-duplicates among them (default {DEFAULT_PHOTOS})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the variant tree (default 1)")
    parser.add_argument("--thresholds", type=int, nargs="+", default=[4, 5, 6, 8, 10], metavar="BITS",
                        help="thresholds to run dupfinder and the baseline at (default 4 5 6 8 10)")
    parser.add_argument("--out", help="build the tree in this folder (empty or missing) and keep it")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for building the tree and for dupfinder (default one per CPU)")
    parser.add_argument("--variant-share", type=float, default=0.5, help="share of photos that get variants")
    parser.add_argument("--transforms", nargs="+", choices=list(TRANSFORMS), metavar="NAME",
                        help="only these transforms (default all)")
    parser.add_argument("--examples", type=int, default=5, help="false pairs to print per run (default 5)")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    args = parser.parse_args(argv)

    photos = list_photos(args.photos)
    if not photos:
        parser.error(f"no photos in {args.photos}")
    return in_tree(parser, args.out, "dupfinder-accuracy-", lambda tree: _run(args, photos, tree))


def _run(args, photos: list[Path], tree: Path) -> int:
    print(f"dupfinder {dupfinder.__version__} from {Path(dupfinder.__file__).parent}")
    started = time.perf_counter()
    truths = build_tree(photos, tree, seed=args.seed, variant_share=args.variant_share,
                        transforms=args.transforms, workers=args.workers)
    build_seconds = time.perf_counter() - started
    if args.out:
        write_truth(truths, tree / "truth.csv")
    n_var = sum(1 for t in truths if t.is_original and not t.distractor)
    print(f"tree: {len(photos)} photos from {args.photos}, {n_var} with variants, {len(photos) - n_var} "
          f"distractors, {len(truths)} files, seed {args.seed}; built in {build_seconds:.1f} s in {tree}")

    runs: list[Run] = []
    print("dupfinder, default settings ...", flush=True)
    runs.append(run_dupfinder(tree, label="df", threshold=None, workers=args.workers))
    default_t = runs[0].threshold
    for t in args.thresholds:
        print(f"dupfinder, threshold {t} ...", flush=True)
        runs.append(run_dupfinder(tree, label=f"df{t}", threshold=t, workers=args.workers))

    print("baseline: imagehash.phash(Image.open(path)) in one process ...", flush=True)
    paths = [os.path.abspath(t.path) for t in truths]
    b_hashes, b_errors, b_seconds = baseline_hash(paths)
    for t in sorted(set(args.thresholds) | {default_t}):
        started = time.perf_counter()
        groups = baseline_groups(b_hashes, t)
        grouping = time.perf_counter() - started
        runs.append(Run(f"ih{t}", "baseline", t, b_seconds + grouping, groups, b_hashes, b_errors,
                        note=f"hashing {b_seconds:.2f} s once + grouping {grouping:.2f} s"))
    print(f"baseline hashing took {b_seconds:.2f} s (one process, shared by every threshold)")

    scores = []
    for run in runs:
        s = score(run, truths, examples=max(args.examples, 20))
        s["targets"] = check_targets(s)
        s["note"] = run.note
        scores.append(s)

    columns = {"df": f"dupfinder default (t={default_t})"}
    columns.update({f"df{t}": f"dupfinder t={t}" for t in args.thresholds})
    columns.update({r.label: f"baseline t={r.threshold}" for r in runs if r.method == "baseline"})
    baseline = next(r for r in runs if r.method == "baseline")
    margins = {
        "dupfinder_files": closest_foreign(runs[0], truths),
        "dupfinder_originals": closest_foreign(runs[0], truths, originals_only=True),
        "baseline_originals": closest_foreign(baseline, truths, originals_only=True),
    }
    print_report(scores, tree, columns=columns, examples=args.examples, margins=margins)

    if args.json:
        doc = {
            "settings": {"photos": str(args.photos), "seed": args.seed, "thresholds": args.thresholds,
                         "workers": args.workers, "variant_share": args.variant_share,
                         "transforms": args.transforms or list(TRANSFORMS)},
            "tree": {"path": str(tree), "kept": bool(args.out), "photos": len(photos),
                     "with_variants": n_var, "files": len(truths), "build_seconds": round(build_seconds, 3)},
            "targets": {"precision": PRECISION_TARGET, "f1": F1_TARGET, "recall": RECALL_TARGETS},
            "runs": scores,
            "closest_foreign": margins,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(jsonable(doc), f, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
