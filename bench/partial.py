"""How well ``--partial`` finds partial copies, and what it costs, on a seeded tree of real photos.

Issue 8's benchmark. From a folder of photos it builds a tree in which a
seeded share of the photos (half by default) get one file of each *kind*:

=================  ==========================================================
``crop``           an off-centre crop keeping 60-90% of the area (aspect
                   0.8-1.25 times the photo's), at a random offset, resized
                   by 0.75-1.25
``square``         the largest square times 0.9-1.0 of the short side, at a
                   random position, resized by 0.6-1.2
``canvas``         the photo (resized by 0.5-1.0) pasted at a random place on
                   a uniform canvas, the photo being 25-90% of its area
``frame``          the same with textured margins: smooth noise, blocks and
                   lines of random letters, like a web page around a picture
``collage``        a 2x2 collage (cells 0.5-1.0 of the photo's size, a gutter
                   of 0-8 px) of the photo and three *filler* tiles
=================  ==========================================================

and each of them again mirrored (``crop_mirror``, ...), all saved as JPEG
quality 90. Filler tiles are quarters of photos kept out of the tree (a
seeded 30% of the folder), each quarter used by one collage only, so that two
collages never share a picture; the rest of the folder are the *originals*,
and those without variants are distractors.

Then, in the same run, it scans the tree (no cache, the same workers) once
untimed to warm up, then at the defaults, with ``partial=True``, and both
again (to see the machine's noise), and scores the partial scan
*pairwise* like ``bench/accuracy.py``: the true pairs are the pairs of files
made from one photo; a kind counts as found when the file is grouped with
its photo, and as found *directly* when :mod:`dupfinder.partial` matches
the two files alone (with the kind and a box within ``--box-tolerance`` of
the true one, as a share of the box's size, reported separately). It prints
recall per kind, pairwise precision, the false pairs, and images/s of each
scan.

Run it (PHOTOS defaults to sample_images/originals)::

    python bench/partial.py                               # 36 sample photos
    python bench/partial.py /work/shared/photos --seed 1  # the fuller figures
"""

from __future__ import annotations

import argparse
import math
import os
import random
import string
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import dupfinder  # noqa: E402
from _common import in_tree  # noqa: E402
from variants import list_photos, load_upright  # noqa: E402

DEFAULT_PHOTOS = ROOT / "sample_images" / "originals"
BASE_KINDS = ("crop", "square", "canvas", "frame", "collage")
KINDS = tuple(k for base in BASE_KINDS for k in (base, f"{base}_mirror"))
FILLER_SHARE = 0.3
RECALL_TARGET = 0.95
PRECISION_TARGET = 0.999
SPEED_TARGET = 0.5
_JPEG = {"format": "JPEG", "quality": 90}

Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class PartialTruth:
    """One file of the tree: its photo, its kind and the true box.

    ``box`` is where the photo's content is: for a crop, the part of the photo
    it shows, in the photo's pixels; for the others, where the photo sits in
    the file, in the file's pixels (None for originals).
    """

    path: Path
    original: Path
    kind: str
    distractor: bool
    box: Box | None = None

    @property
    def expected(self) -> str:
        """The relation ``dupfinder.partial`` should report of this file to its photo."""
        base = self.kind.removesuffix("_mirror")
        return "crop" if base in ("crop", "square") else "contained"


def _rng(seed: int, photo: str, kind: str) -> random.Random:
    return random.Random(f"{seed}:{photo}:{kind}")


def _resized(img: Image.Image, factor: float) -> Image.Image:
    return img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))),
                      Image.Resampling.LANCZOS)


def off_centre_crop(img: Image.Image, rng: random.Random) -> tuple[Image.Image, Box]:
    """Keep 60-90% of the area at a random offset; the box is in the photo's pixels."""
    area = rng.uniform(0.6, 0.9)
    ratio = rng.uniform(0.8, 1.25)
    fw = min(1.0, math.sqrt(area * ratio))
    fh = min(1.0, area / fw)
    w, h = round(img.width * fw), round(img.height * fh)
    left, top = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    box = (left, top, left + w, top + h)
    return _resized(img.crop(box), rng.uniform(0.75, 1.25)), box


def square_crop(img: Image.Image, rng: random.Random) -> tuple[Image.Image, Box]:
    """The largest square (times 0.9-1.0) at a random position, resized as social networks do."""
    side = round(min(img.size) * rng.uniform(0.9, 1.0))
    left, top = rng.randint(0, img.width - side), rng.randint(0, img.height - side)
    box = (left, top, left + side, top + side)
    return _resized(img.crop(box), rng.uniform(0.6, 1.2)), box


def _canvas_size(pw: int, ph: int, share: float, rng: random.Random) -> tuple[int, int]:
    # Margins so that the picture is `share` of the canvas: kx * ky = 1 / share, both >= 1.
    total = 1.0 / share
    kx = math.exp(rng.uniform(0.0, math.log(total)))
    return max(pw, round(pw * kx)), max(ph, round(ph * total / kx))


def texture(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Margins like a web page's: smooth noise, blocks and lines of random letters."""
    gen = np.random.default_rng(rng.getrandbits(64))
    w, h = size
    small = gen.integers(150, 256, size=(max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    page = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    page = page.filter(ImageFilter.GaussianBlur(4))
    draw = ImageDraw.Draw(page)
    for _ in range(rng.randint(3, 8)):
        x, y = rng.randrange(w), rng.randrange(h)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.rectangle((x, y, x + rng.randint(20, 160), y + rng.randint(10, 60)), fill=colour)
    for y in range(rng.randint(0, 12), h, rng.randint(12, 20)):
        words = " ".join("".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(2, 9)))
                         for _ in range(40))
        draw.text((rng.randint(0, 20), y), words, fill=(rng.randrange(80),) * 3)
    return page


def on_canvas(img: Image.Image, rng: random.Random, *, textured: bool) -> tuple[Image.Image, Box]:
    """Paste the photo (resized by 0.5-1.0) on a canvas; it covers 25-90% of it."""
    pic = _resized(img, rng.uniform(0.5, 1.0))
    cw, ch = _canvas_size(pic.width, pic.height, rng.uniform(0.25, 0.9), rng)
    if textured:
        canvas = texture((cw, ch), rng)
    else:
        canvas = Image.new("RGB", (cw, ch), tuple(rng.randrange(256) for _ in range(3)))
    left, top = rng.randint(0, cw - pic.width), rng.randint(0, ch - pic.height)
    canvas.paste(pic, (left, top))
    return canvas, (left, top, left + pic.width, top + pic.height)


def _cover(tile: Image.Image, size: tuple[int, int]) -> Image.Image:
    # Crop the tile to the cell's aspect, centred, then resize: no bars.
    w, h = size
    scale = max(w / tile.width, h / tile.height)
    tw, th = min(tile.width, math.ceil(w / scale)), min(tile.height, math.ceil(h / scale))
    left, top = (tile.width - tw) // 2, (tile.height - th) // 2
    return tile.crop((left, top, left + tw, top + th)).resize(size, Image.Resampling.LANCZOS)


def collage(img: Image.Image, fillers: Sequence[Image.Image], rng: random.Random) -> tuple[Image.Image, Box]:
    """A 2x2 collage of the photo and three filler tiles, with a gutter of 0-8 px."""
    cell = _resized(img, rng.uniform(0.5, 1.0))
    gap = rng.randint(0, 8)
    cw, ch = cell.size
    sheet = Image.new("RGB", (2 * cw + 3 * gap, 2 * ch + 3 * gap), (255, 255, 255))
    where = rng.randrange(4)
    tiles = iter(fillers)
    box = None
    for slot in range(4):
        x, y = gap + (slot % 2) * (cw + gap), gap + (slot // 2) * (ch + gap)
        if slot == where:
            sheet.paste(cell, (x, y))
            box = (x, y, x + cw, y + ch)
        else:
            sheet.paste(_cover(next(tiles), (cw, ch)), (x, y))
    return sheet, box


def _mirror_box(box: Box, width: int) -> Box:
    left, top, right, bottom = box
    return (width - right, top, width - left, bottom)


def make_kind(kind: str, img: Image.Image, rng: random.Random, fillers: Sequence[Image.Image]):
    """One variant of the photo and its true box (see :class:`PartialTruth`)."""
    base = kind.removesuffix("_mirror")
    if base == "crop":
        out, box = off_centre_crop(img, rng)
    elif base == "square":
        out, box = square_crop(img, rng)
    elif base in ("canvas", "frame"):
        out, box = on_canvas(img, rng, textured=base == "frame")
    else:
        out, box = collage(img, fillers, rng)
    if kind.endswith("_mirror"):
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if base not in ("crop", "square"):  # the box is in the file's pixels: mirror it too
            box = _mirror_box(box, out.width)
    return out, box


def filler_tiles(photos: Sequence[Path]) -> list[Image.Image]:
    """The quarters of the filler photos, each to be used once."""
    tiles = []
    for p in photos:
        img = load_upright(p)
        w, h = img.size
        for left, top in ((0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2)):
            tiles.append(img.crop((left, top, left + w // 2, top + h // 2)))
    return tiles


def build_tree(photos: Sequence[Path], out: Path, *, seed: int, variant_share: float = 0.5,
               kinds: Sequence[str] = KINDS) -> list[PartialTruth]:
    """Copy the originals into ``out/originals``, write variants into ``out/variants``; the truth."""
    order = sorted(photos, key=lambda p: p.name)
    pick = random.Random(f"{seed}:fillers")
    n_fill = round(FILLER_SHARE * len(order))
    filler_idx = set(pick.sample(range(len(order)), n_fill))
    fillers = [p for i, p in enumerate(order) if i in filler_idx]
    originals = [p for i, p in enumerate(order) if i not in filler_idx]
    chosen = set(random.Random(f"{seed}:choose").sample(range(len(originals)),
                                                        round(variant_share * len(originals))))
    tiles = filler_tiles(fillers)
    random.Random(f"{seed}:tiles").shuffle(tiles)
    need = 3 * len(chosen) if any(k.startswith("collage") for k in kinds) else 0
    if need > len(tiles):
        msg = f"{len(tiles)} filler tiles for {need} collage cells: use more photos or a smaller --variant-share"
        raise ValueError(msg)
    (out / "originals").mkdir(parents=True, exist_ok=True)
    (out / "variants").mkdir(exist_ok=True)
    truths: list[PartialTruth] = []
    next_tile = 0
    for i, photo in enumerate(originals):
        copy = out / "originals" / photo.name
        copy.write_bytes(photo.read_bytes())
        truths.append(PartialTruth(copy, copy, "original", i not in chosen))
        if i not in chosen:
            continue
        upright = load_upright(photo)
        own_tiles = tiles[next_tile:next_tile + 3]  # the collage and its mirror share them
        next_tile += 3
        for kind in kinds:
            image, box = make_kind(kind, upright, _rng(seed, photo.name, kind), own_tiles)
            path = out / "variants" / f"{photo.stem}_{kind}.jpg"
            image.save(path, **_JPEG)
            truths.append(PartialTruth(path, copy, kind, False, box))
    return truths


# --- scoring -----------------------------------------------------------------------------


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _box_error(box, truth) -> float:
    """Largest edge error as a share of the true box's width or height."""
    w, h = truth[2] - truth[0], truth[3] - truth[1]
    return max(abs(box[0] - truth[0]) / w, abs(box[2] - truth[2]) / w,
               abs(box[1] - truth[1]) / h, abs(box[3] - truth[3]) / h)


def score_groups(groups: Sequence[Sequence[str]], truths: Sequence[PartialTruth]) -> dict:
    """Pairwise precision and recall of a scan's groups, recall per kind, and the false pairs."""
    cluster = {os.path.abspath(t.path): os.path.abspath(t.original) for t in truths}
    true_pairs = sum(_pairs(n) for n in Counter(cluster.values()).values())
    group_of: dict[str, int] = {}
    predicted = tp = 0
    false = []
    for gi, members in enumerate(groups):
        for p in members:
            group_of[p] = gi
        predicted += _pairs(len(members))
        per_photo = Counter(cluster[p] for p in members)
        tp += sum(_pairs(n) for n in per_photo.values())
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if cluster[a] != cluster[b]:
                    false.append((a, b))
    found, total = Counter(), Counter()
    for t in truths:
        if t.kind == "original":
            continue
        total[t.kind] += 1
        p, o = os.path.abspath(t.path), os.path.abspath(t.original)
        if p in group_of and group_of.get(o) == group_of[p]:
            found[t.kind] += 1
    return {
        "precision": tp / predicted if predicted else math.nan,
        "recall": tp / true_pairs if true_pairs else math.nan,
        "predicted_pairs": predicted, "true_pairs": true_pairs, "false_pairs": false,
        "recall_by_kind": {k: found[k] / total[k] for k in KINDS if total[k]},
        "distractors_grouped": sum(1 for t in truths if t.distractor and os.path.abspath(t.path) in group_of),
    }


def score_direct(matches, paths: Sequence[str], truths: Sequence[PartialTruth], tolerance: float) -> dict:
    """Each variant against its own photo, with dupfinder.partial alone: found, right kind, right box."""
    from dupfinder.partial import relations

    where = {os.path.abspath(p): i for i, p in enumerate(paths)}
    rel = relations(matches)
    cluster = {os.path.abspath(t.path): os.path.abspath(t.original) for t in truths}
    false = [(paths[m.a], paths[m.b]) for m in matches
             if cluster[os.path.abspath(paths[m.a])] != cluster[os.path.abspath(paths[m.b])]]
    found, right, boxed, total = Counter(), Counter(), Counter(), Counter()
    errors: dict[str, list[float]] = {}
    misses = []
    for t in truths:
        if t.kind == "original":
            continue
        total[t.kind] += 1
        o, v = where[os.path.abspath(t.original)], where[os.path.abspath(t.path)]
        got = rel.get((o, v))
        if got is None:
            misses.append(t.path.name)
            continue
        found[t.kind] += 1
        expected = t.expected + ("+mirror" if t.kind.endswith("_mirror") else "")
        if got[0] != expected:
            misses.append(f"{t.path.name} ({got[0]})")
            continue
        right[t.kind] += 1
        err = _box_error(got[1], t.box)
        errors.setdefault(t.kind, []).append(err)
        if err <= tolerance:
            boxed[t.kind] += 1
    return {
        "edges": len(matches), "false_edges": false,
        "found": {k: found[k] / total[k] for k in KINDS if total[k]},
        "right_kind": {k: right[k] / total[k] for k in KINDS if total[k]},
        "right_box": {k: boxed[k] / total[k] for k in KINDS if total[k]},
        "median_box_error": {k: float(np.median(v)) for k, v in errors.items()},
        "misses": misses,
        "total": dict(total),
    }


# --- the alternatives it was measured against (--compare) --------------------------------

# Window sides (as a share of each side) and offsets of the region-hash grid:
# a crop keeping 60-90% of the area keeps 77-95% of each side.
GRID_SIDES = (0.95, 0.9, 0.85, 0.8, 0.75)
GRID_STEPS = 5


def _upright_grey(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("L")


def grid_hashes(img: Image.Image) -> np.ndarray:
    """pHashes of a grid of windows: each side of GRID_SIDES, at GRID_STEPS x GRID_STEPS offsets."""
    from dupfinder.hashes import phash

    w, h = img.size
    out = []
    for side in GRID_SIDES:
        for i in range(GRID_STEPS):
            for j in range(GRID_STEPS):
                left, top = (1 - side) * w * i / (GRID_STEPS - 1), (1 - side) * h * j / (GRID_STEPS - 1)
                out.append(phash(img.crop((round(left), round(top), round(left + side * w), round(top + side * h)))))
    return np.concatenate(out)


def trimmed(img: Image.Image, tolerance: int = 12) -> Image.Image:
    """The image less uniform margins (the colour of its top-left pixel, within ``tolerance``)."""
    from PIL import ImageChops

    background = Image.new("L", img.size, img.getpixel((0, 0)))
    diff = ImageChops.difference(img, background).point(lambda v: 255 if v > tolerance else 0)
    box = diff.getbbox()
    return img.crop(box) if box else img


def compare_alternatives(truths: Sequence[PartialTruth], threshold: int = 5) -> dict:
    """Recall per kind and false pairs of two hash-only designs, on the same tree.

    * ``grid``: each file's whole pHash (as is and mirrored) against the
      pHashes of a grid of windows of every other file (125 per file);
    * ``trim``: pHash of each file with its uniform margins trimmed, as is
      and mirrored, against the others' (trimmed too).
    """
    from dupfinder.hashes import phash
    from dupfinder.index import find_matches

    paths = [t.path for t in truths]
    started = time.perf_counter()
    whole, grids, trims = [], [], []
    for p in paths:
        img = _upright_grey(p)
        flipped = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        whole.append(np.concatenate([phash(img), phash(flipped)]))
        grids.append(grid_hashes(img))
        t = trimmed(img)
        trims.append(np.concatenate([phash(t), phash(t.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]))
    hashing = time.perf_counter() - started
    per = len(grids[0])
    out = {}
    for name, queries, q_per, db, d_per in (
        ("grid", np.concatenate(whole), 2, np.concatenate(grids), per),
        ("trim", np.concatenate(trims), 2, np.concatenate([t[:1] for t in trims]), 1),
    ):
        m = find_matches(queries, db, threshold)
        a, b = np.asarray(m.left) // q_per, np.asarray(m.right) // d_per
        keep = a != b
        out[name] = {tuple(sorted(x)) for x in zip(a[keep].tolist(), b[keep].tolist())}
    cluster = [t.original for t in truths]
    where = {t.path: i for i, t in enumerate(truths)}
    result = {"hash_seconds": hashing}
    for name, pairs in out.items():
        found, total = Counter(), Counter()
        for t in truths:
            if t.kind != "original":
                total[t.kind] += 1
                found[t.kind] += tuple(sorted((where[t.path], where[t.original]))) in pairs
        result[name] = {
            "recall": {k: found[k] / total[k] for k in KINDS if total[k]},
            "false": sum(1 for i, j in pairs if cluster[i] != cluster[j]),
            "pairs": len(pairs),
        }
    return result


# --- runs --------------------------------------------------------------------------------


def timed_scan(tree: Path, *, workers: int | None, partial: bool):
    started = time.perf_counter()
    result = dupfinder.scan([tree], workers=workers, cache=None, partial=partial)
    return result, time.perf_counter() - started


def _mark(value: float, minimum: float) -> str:
    return "+" if not math.isnan(value) and value >= minimum else "-"


def _rel(path: str, tree: Path) -> str:
    try:
        return str(Path(path).relative_to(tree))
    except ValueError:
        return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("photos", nargs="?", default=str(DEFAULT_PHOTOS),
                        help=f"folder of photos with no near-duplicates among them (default {DEFAULT_PHOTOS})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the tree (default 1)")
    parser.add_argument("--out", help="build the tree in this folder (empty or missing) and keep it")
    parser.add_argument("--workers", type=int, default=None, help="processes for the scans (default one per CPU)")
    parser.add_argument("--variant-share", type=float, default=0.5,
                        help="share of the originals that get variants (default 0.5)")
    parser.add_argument("--box-tolerance", type=float, default=0.03,
                        help="largest box edge error, as a share of the box's size, that counts as right")
    parser.add_argument("--examples", type=int, default=8, help="misses and false pairs to print (default 8)")
    parser.add_argument("--camera", type=int, default=0, metavar="N",
                        help="also time both scans on N camera-size (12 MP) JPEGs made from the photos")
    parser.add_argument("--compare", action="store_true",
                        help="also measure two hash-only designs: a grid of window hashes, and margin trimming")
    args = parser.parse_args(argv)
    photos = list_photos(args.photos)
    if len(photos) < 4:
        parser.error(f"need at least 4 photos in {args.photos}")
    return in_tree(parser, args.out, "dupfinder-partial-", lambda tree: _run(args, photos, tree))


def _run(args, photos: list[Path], tree: Path) -> int:
    import cv2

    from dupfinder.executor import make_executor
    from dupfinder.partial import features_for, find_partial

    print(f"dupfinder {dupfinder.__version__} from {Path(dupfinder.__file__).parent}, OpenCV {cv2.__version__}")
    started = time.perf_counter()
    truths = build_tree(photos, tree, seed=args.seed, variant_share=args.variant_share)
    n_var = sum(1 for t in truths if t.kind == "original" and not t.distractor)
    n_orig = sum(1 for t in truths if t.kind == "original")
    print(f"tree: {len(photos)} photos from {args.photos}: {len(photos) - n_orig} kept out as collage fillers, "
          f"{n_var} with {len(KINDS)} variants each, {n_orig - n_var} distractors; {len(truths)} files, "
          f"seed {args.seed}; built in {time.perf_counter() - started:.1f} s")

    # A first, untimed scan pays for imports and page-cache misses; then the
    # default and --partial scans alternate, twice, on the same warm tree.
    print("warm-up scan (not timed) ...", flush=True)
    timed_scan(tree, workers=args.workers, partial=False)
    runs = []
    for label, partial in (("default", False), ("--partial", True), ("default", False), ("--partial", True)):
        print(f"scan, {label} ...", flush=True)
        result, seconds = timed_scan(tree, workers=args.workers, partial=partial)
        runs.append((label, result, seconds))
    partial_result = runs[1][1]
    groups = [[os.path.abspath(m.path) for m in g.members] for g in partial_result.groups]
    s = score_groups(groups, truths)
    plain = score_groups([[os.path.abspath(m.path) for m in g.members] for g in runs[0][1].groups], truths)

    print("dupfinder.partial alone, every file (for the direct figures) ...", flush=True)
    paths = [str(t.path) for t in truths]
    executor = make_executor(args.workers, jobs=len(paths))
    try:
        features = features_for(paths, executor=executor, workers=getattr(executor, "workers", 1))
        started = time.perf_counter()
        direct = find_partial(features, executor=executor)
        pooled_seconds = time.perf_counter() - started
    finally:
        executor.close()
    started = time.perf_counter()
    inline = find_partial(features)
    inline_seconds = time.perf_counter() - started
    assert inline == direct, "the pool and this process verified different pairs"
    d = score_direct(direct, paths, truths, args.box_tolerance)

    print()
    print("recall per kind (share of the variants of each kind)")
    print(f"  {'kind':<16}{'default':>9}{'--partial':>11}{'direct':>8}{'kind ok':>9}{'box ok':>8}"
          f"{'box err':>9}   target {RECALL_TARGET} (--partial)")
    for k in KINDS:
        v = s["recall_by_kind"][k]
        print(f"  {k:<16}{plain['recall_by_kind'][k]:9.3f}{v:11.3f}{d['found'][k]:8.3f}{d['right_kind'][k]:9.3f}"
              f"{d['right_box'][k]:8.3f}{d['median_box_error'].get(k, math.nan):9.4f}   {_mark(v, RECALL_TARGET)}")
    print("  (direct: the variant and its photo matched by dupfinder.partial alone; kind ok: as crop or "
          "contained, mirrored or not, as made;")
    print(f"   box ok: every edge within {args.box_tolerance:.0%} of the true box's size; box err: median "
          "of the largest edge error, as a share)")
    print()
    print("pairwise, --partial scan: "
          f"precision {s['precision']:.4f} {_mark(s['precision'], PRECISION_TARGET)} (target {PRECISION_TARGET}), "
          f"recall {s['recall']:.4f}; {s['predicted_pairs']} pairs grouped, {s['true_pairs']} true, "
          f"{len(s['false_pairs'])} false; {s['distractors_grouped']} distractors grouped")
    print(f"pairwise, default scan:   precision {plain['precision']:.4f}, recall {plain['recall']:.4f}")
    print(f"dupfinder.partial alone: {d['edges']} verified pairs, {len(d['false_edges'])} between different photos; "
          f"find_partial {pooled_seconds:.2f} s with the scans' workers, {inline_seconds:.2f} s in one process "
          f"({inline_seconds / pooled_seconds:.2f}x)")
    for a, b in (s["false_pairs"] + d["false_edges"])[: args.examples]:
        print(f"    false: {_rel(a, tree)}  ~  {_rel(b, tree)}")
    if d["misses"]:
        print(f"  direct misses ({len(d['misses'])}): {', '.join(d['misses'][: args.examples * 3])}")
    print()
    n = len(runs[0][1].files)
    print(f"speed ({n} files, workers={args.workers or os.cpu_count()}, no cache, wall clock):")
    for label, result, seconds in runs:
        print(f"  {label:<14} {seconds:7.2f} s  {len(result.files) / seconds:8.1f} images/s")
    default_seconds = runs[0][2] + runs[2][2]
    partial_seconds = runs[1][2] + runs[3][2]
    ratio = default_seconds / partial_seconds
    print(f"  --partial images/s / default images/s (each summed over its two runs): {ratio:.2f} "
          f"{_mark(ratio, SPEED_TARGET)} (target {SPEED_TARGET})")
    if args.camera:
        from hashing import build_camera  # bench/hashing.py: the same 12 MP JPEGs it times

        camera = tree / "camera"
        started = time.perf_counter()
        build_camera(photos, camera, args.camera, args.workers or os.cpu_count() or 1)
        print(f"\n{args.camera} camera JPEGs (12 MP, quality 90) made in {time.perf_counter() - started:.0f} s; "
              "speed on them:")
        timed_scan(camera, workers=args.workers, partial=False)
        seconds = {False: 0.0, True: 0.0}
        for partial in (False, True, False, True):
            result, took = timed_scan(camera, workers=args.workers, partial=partial)
            seconds[partial] += took
            label = "--partial" if partial else "default"
            print(f"  {label:<14} {took:7.2f} s  {len(result.files) / took:8.1f} images/s")
        ratio = seconds[False] / seconds[True]
        print(f"  --partial images/s / default images/s: {ratio:.2f} {_mark(ratio, SPEED_TARGET)} "
              f"(target {SPEED_TARGET})")
    if args.compare:
        print()
        print("hash-only alternatives, direct recall per kind (pHash, threshold 5, one process):")
        c = compare_alternatives(truths)
        print(f"  {'kind':<16}{'grid':>8}{'trim':>8}{'partial':>9}")
        for k in KINDS:
            print(f"  {k:<16}{c['grid']['recall'][k]:8.3f}{c['trim']['recall'][k]:8.3f}{d['found'][k]:9.3f}")
        print(f"  pairs between different photos: grid {c['grid']['false']}, trim {c['trim']['false']}, "
              f"partial {len(d['false_edges'])}; hashing both took {c['hash_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
