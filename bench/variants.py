"""Build a seeded tree of near-duplicate variants of real photos, with its ground truth.

Benchmarks of near-duplicate search need files whose true relations are
known. :func:`build_tree` copies every photo into ``OUT/originals/`` (bytes
unchanged) and, for a seeded share of them (half by default), writes one file
per transform into ``OUT/variants/`` named ``<photo stem>_<transform>.<ext>``.
The other photos are *distractors*: they have no variants, so anything a
scan pairs them with is a false match. All files made from one photo, the
photo included, form one true cluster; :class:`Truth` records say which.

Every variant is made from the photo as a viewer shows it (EXIF orientation
applied, converted to RGB), and saved as JPEG quality 90 unless the transform
is about the file format. Random parameters (the upscale factor, the sign of
a small rotation, where the watermark goes, ...) come from a
``random.Random`` seeded with ``(seed, photo name, transform)``, so a tree is
reproducible and adding a transform does not change the others.

The transforms (:data:`TRANSFORMS`), and the definitions chosen:

====================  =====================================================
``resize_down``       50% of each side (Lanczos)
``resize_up``         150-200% of each side (bicubic), factor drawn
``jpeg_q30``          JPEG quality 30
``png`` / ``webp``    lossless PNG / WebP quality 80 re-save
``crop5/10/20``       centred crop removing 5/10/20% of the *area*: each side
                      keeps sqrt(1 - x) of its length, so crop20 keeps 89.4%
                      of the width and of the height (5.3% off each edge)
``mirror``            left-right flip
``rot90/180/270``     lossless quarter turns, counter-clockwise as in Pillow
                      (``rot90`` is ``Image.Transpose.ROTATE_90``)
``rot2..rot5``        rotation by 2-5 degrees (sign drawn), bicubic, without
                      expanding the canvas, then *cropped* to the largest
                      centred rectangle of the original aspect ratio that
                      holds no black corner, as re-posts usually are (rot5
                      of a 4:3 photo keeps ~81% of the area). Not resized back.
``exif_rot``          pixels stored sideways, EXIF Orientation 6 or 8
                      (drawn) so that a viewer shows the photo upright
``bright`` / ``dark`` brightness x1.20-1.30 / x0.70-0.80 (ImageEnhance)
``contrast_up/down``  contrast x1.30-1.40 / x0.65-0.75 (ImageEnhance)
``grey``              greyscale (mode L)
``blur``              Gaussian blur, radius 1.5
``noise``             Gaussian noise, sigma 8 per channel
``watermark``         a 3:1 rounded white badge at 50% opacity with a ring
                      and "(c) PHOTO" cut out of it, at a drawn position;
                      the pixels it whitens are 15% of the frame
``stretch``           width x1.25, height unchanged
``thumb``             120 px on the long side (Lanczos), JPEG quality 85
``png16``             16-bit greyscale PNG (mode ``I;16``, L values x257)
====================  =====================================================

Use it as a module (``from variants import build_tree``), or build a tree
with its truth as CSV from the command line::

    python bench/variants.py /work/shared/photos /tmp/tree --seed 1

>>> sorted(TRANSFORMS)[:4]
['blur', 'bright', 'contrast_down', 'contrast_up']
>>> len(TRANSFORMS)
28
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = [
    "TRANSFORMS",
    "IMAGE_EXTENSIONS",
    "Truth",
    "build_tree",
    "list_photos",
    "load_upright",
    "clusters",
    "write_truth",
    "read_truth",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
ORIGINAL = "original"  # the transform name of a photo's own copy

Options = dict  # Image.save keyword arguments, plus "format" and optionally "detail"
Transform = Callable[[Image.Image, random.Random], tuple[Image.Image, Options]]

_JPEG = {"format": "JPEG", "quality": 90}
_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class Truth:
    """One file of a built tree and where it came from.

    ``original`` is the path, in the tree, of the photo's own copy (equal to
    ``path`` for that copy); ``transform`` is ``"original"`` for it. A
    ``distractor`` is an original that got no variants. ``detail`` records
    the parameters drawn (``"factor=1.73"``), empty when there are none.

    >>> t = Truth(Path("t/originals/a.jpg"), Path("t/originals/a.jpg"), "original", True, Path("a.jpg"))
    >>> t.is_original, t.distractor
    (True, True)
    """

    path: Path
    original: Path
    transform: str
    distractor: bool
    source: Path
    detail: str = ""

    @property
    def is_original(self) -> bool:
        return self.transform == ORIGINAL


# --- the transforms: (upright RGB image, rng) -> (image, save options) ---------------


def _resize(img: Image.Image, factor_x: float, factor_y: float, resample) -> Image.Image:
    size = (max(1, round(img.width * factor_x)), max(1, round(img.height * factor_y)))
    return img.resize(size, resample)


def resize_down(img, rng):
    return _resize(img, 0.5, 0.5, Image.Resampling.LANCZOS), dict(_JPEG)


def resize_up(img, rng):
    f = rng.uniform(1.5, 2.0)
    return _resize(img, f, f, Image.Resampling.BICUBIC), {**_JPEG, "detail": f"factor={f:.2f}"}


def jpeg_q30(img, rng):
    return img, {"format": "JPEG", "quality": 30}


def png(img, rng):
    return img, {"format": "PNG"}


def webp(img, rng):
    return img, {"format": "WEBP", "quality": 80}


def centred_crop(img: Image.Image, area_removed: float) -> Image.Image:
    """Crop the centre so that ``area_removed`` (0..1) of the area goes, keeping the aspect ratio.

    >>> centred_crop(Image.new("RGB", (400, 300)), 0.19).size
    (360, 270)
    """
    keep = math.sqrt(1.0 - area_removed)
    w, h = round(img.width * keep), round(img.height * keep)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((left, top, left + w, top + h))


def _crop(share):
    def crop(img, rng):
        return centred_crop(img, share), dict(_JPEG)

    crop.__name__ = f"crop{round(share * 100)}"
    return crop


def mirror(img, rng):
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), dict(_JPEG)


def _quarter(name, method):
    def turn(img, rng):
        return img.transpose(method), dict(_JPEG)

    turn.__name__ = name
    return turn


def inscribed_scale(width: int, height: int, degrees: float) -> float:
    """Largest k such that a centred k*width x k*height box fits in the image turned by ``degrees``.

    >>> round(inscribed_scale(400, 300, 5), 3)
    0.899
    """
    t = math.radians(abs(degrees))
    c, s = math.cos(t), math.sin(t)
    return min(width / (width * c + height * s), height / (width * s + height * c))


def rotate_and_crop(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate by ``degrees`` (counter-clockwise) and crop away the black corners.

    >>> rotate_and_crop(Image.new("RGB", (400, 300), "white"), 5).getextrema()
    ((255, 255), (255, 255), (255, 255))
    """
    turned = img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)
    # floor, and one pixel more off each edge: bicubic blends the border in.
    k = inscribed_scale(img.width, img.height, degrees)
    w, h = math.floor(img.width * k) - 2, math.floor(img.height * k) - 2
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return turned.crop((left, top, left + w, top + h))


def _small_rotation(degrees):
    def rot(img, rng):
        angle = degrees * rng.choice((-1, 1))
        return rotate_and_crop(img, angle), {**_JPEG, "detail": f"angle={angle:+d}"}

    rot.__name__ = f"rot{degrees}"
    return rot


def exif_rot(img, rng):
    # Orientation 6: "turn 90 degrees clockwise to display", so the stored
    # pixels are the upright picture turned 90 degrees counter-clockwise.
    orientation = rng.choice((6, 8))
    stored = img.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[_ORIENTATION] = orientation
    return stored, {**_JPEG, "exif": exif, "detail": f"orientation={orientation}"}


def _enhance(name, enhancer, low, high):
    def enhance(img, rng):
        f = rng.uniform(low, high)
        return enhancer(img).enhance(f), {**_JPEG, "detail": f"factor={f:.2f}"}

    enhance.__name__ = name
    return enhance


def grey(img, rng):
    return img.convert("L"), dict(_JPEG)


def blur(img, rng):
    return img.filter(ImageFilter.GaussianBlur(1.5)), dict(_JPEG)


def noise(img, rng):
    gen = np.random.default_rng(rng.getrandbits(64))
    pixels = np.asarray(img, dtype=np.float64)
    noisy = pixels + gen.normal(0.0, 8.0, pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), img.mode), dict(_JPEG)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: a fixed small bitmap font
        return ImageFont.load_default()


def watermark_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """The mark as an ``L`` mask (255 where it is drawn) inside ``box``.

    A rounded plate with a ring and the text "(c) PHOTO" cut out of it, the
    way stock sites stamp a translucent badge over a photo.

    >>> m = watermark_mask((320, 240), (60, 80, 246, 142))
    >>> m.getbbox()
    (60, 80, 246, 142)
    """
    left, top, right, bottom = box
    bw, bh = right - left, bottom - top
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    draw.rounded_rectangle((left, top, right - 1, bottom - 1), radius=max(1, bh // 5), fill=255)
    pad = max(1, bh // 8)
    ring = (left + pad, top + pad, left + bh - pad, bottom - pad)
    draw.ellipse(ring, outline=0, width=max(2, bh // 9))
    text = "(c) PHOTO"
    room = bw - bh - 2 * pad
    font_size = max(6, bh // 2)
    font = _font(font_size)
    while font_size > 6:  # shrink until the text fits beside the ring
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        if x1 - x0 <= room:
            break
        font_size -= 1
        font = _font(font_size)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    tx = left + bh + (room - (x1 - x0)) // 2 - x0
    ty = top + (bh - (y1 - y0)) // 2 - y0
    draw.text((tx, ty), text, fill=0, font=font, stroke_width=max(1, font_size // 12), stroke_fill=0)
    return mask


def _badge_box(size, cover, aspect, scale=1.0):
    w, h = size
    bh = math.sqrt(cover * w * h / aspect) * scale
    bw = min(w, max(3, round(bh * aspect)))
    return bw, min(h, max(1, round(bh * aspect * bh / bw)))


def watermark(img, rng, *, cover=0.15, opacity=0.5, aspect=3.0):
    # Size the badge so that the pixels it whitens (plate minus cut-outs)
    # are `cover` of the frame: draw once, measure, scale the box.
    bw, bh = _badge_box(img.size, cover, aspect)
    drawn = np.count_nonzero(np.asarray(watermark_mask((bw, bh), (0, 0, bw, bh)))) / (bw * bh)
    bw, bh = _badge_box(img.size, cover, aspect, math.sqrt(1.0 / max(drawn, 0.5)))
    left = rng.randint(0, img.width - bw)
    top = rng.randint(0, img.height - bh)
    mask = watermark_mask(img.size, (left, top, left + bw, top + bh))
    alpha = mask.point(lambda v: round(v * opacity))
    white = Image.new("RGB", img.size, (255, 255, 255))
    marked = Image.composite(white, img.convert("RGB"), alpha)
    return marked, {**_JPEG, "detail": f"box={left},{top},{bw}x{bh}"}


def stretch(img, rng):
    return _resize(img, 1.25, 1.0, Image.Resampling.BICUBIC), dict(_JPEG)


def thumb(img, rng):
    scale = 120 / max(img.size)
    return _resize(img, scale, scale, Image.Resampling.LANCZOS), {"format": "JPEG", "quality": 85}


def png16(img, rng):
    values = np.asarray(img.convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(values), {"format": "PNG"}  # uint16 array -> mode I;16


TRANSFORMS: dict[str, Transform] = {
    "resize_down": resize_down,
    "resize_up": resize_up,
    "jpeg_q30": jpeg_q30,
    "png": png,
    "webp": webp,
    "crop5": _crop(0.05),
    "crop10": _crop(0.10),
    "crop20": _crop(0.20),
    "mirror": mirror,
    "rot90": _quarter("rot90", Image.Transpose.ROTATE_90),
    "rot180": _quarter("rot180", Image.Transpose.ROTATE_180),
    "rot270": _quarter("rot270", Image.Transpose.ROTATE_270),
    "rot2": _small_rotation(2),
    "rot3": _small_rotation(3),
    "rot4": _small_rotation(4),
    "rot5": _small_rotation(5),
    "exif_rot": exif_rot,
    "bright": _enhance("bright", ImageEnhance.Brightness, 1.20, 1.30),
    "dark": _enhance("dark", ImageEnhance.Brightness, 0.70, 0.80),
    "contrast_up": _enhance("contrast_up", ImageEnhance.Contrast, 1.30, 1.40),
    "contrast_down": _enhance("contrast_down", ImageEnhance.Contrast, 0.65, 0.75),
    "grey": grey,
    "blur": blur,
    "noise": noise,
    "watermark": watermark,
    "stretch": stretch,
    "thumb": thumb,
    "png16": png16,
}


# --- building a tree ---------------------------------------------------------------


def list_photos(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted by name.

    >>> list_photos(Path(__file__).parent.parent / "sample_images" / "originals")[0].name
    'p0001.jpg'
    """
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_upright(path: str | os.PathLike) -> Image.Image:
    """The photo as a viewer shows it: EXIF orientation applied, in RGB."""
    with Image.open(path) as im:
        im.load()
        upright = ImageOps.exif_transpose(im)
    return upright if upright.mode == "RGB" else upright.convert("RGB")


def _rng(seed: int, photo: str, transform: str) -> random.Random:
    # str seeds go through SHA-512: the same on every run and platform.
    return random.Random(f"{seed}:{photo}:{transform}")


def _save(image: Image.Image, path: Path, options: Options) -> None:
    kwargs = {k: v for k, v in options.items() if k not in ("format", "detail")}
    image.save(path, format=options["format"], **kwargs)


def _make_variants(job: tuple[Path, Path], *, out: Path, seed: int, names: Sequence[str]) -> list[Truth]:
    photo, copy = job
    upright = load_upright(photo)
    truths = []
    for name in names:
        image, options = TRANSFORMS[name](upright, _rng(seed, photo.name, name))
        path = out / "variants" / f"{photo.stem}_{name}{_EXT[options['format']]}"
        _save(image, path, options)
        truths.append(Truth(path, copy, name, False, photo, options.get("detail", "")))
    return truths


def build_tree(
    photos: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    seed: int,
    variant_share: float = 0.5,
    transforms: Iterable[str] | None = None,
    workers: int | None = None,
) -> list[Truth]:
    """Copy ``photos`` into ``out/originals`` and write variants of a seeded share of them.

    ``round(variant_share * len(photos))`` photos, drawn with ``seed``, get
    one file per transform in ``out/variants``; the rest are distractors.
    ``transforms`` narrows :data:`TRANSFORMS` (default: all of them).
    ``workers`` processes make the variants (None: one per CPU, 0: in this
    process). Returns one :class:`Truth` per file, originals first, sorted.

    >>> import tempfile
    >>> src = sorted(Path(__file__).parent.parent.joinpath("sample_images", "originals").glob("*.jpg"))[:2]
    >>> truths = build_tree(src, tempfile.mkdtemp(), seed=1, transforms=["mirror", "png16"], workers=0)
    >>> [(t.path.name, t.transform, t.distractor) for t in truths]  # doctest: +NORMALIZE_WHITESPACE
    [('p0001.jpg', 'original', True), ('p0002.jpg', 'original', False),
     ('p0002_mirror.jpg', 'mirror', False), ('p0002_png16.png', 'png16', False)]
    """
    photos = [Path(p) for p in photos]
    names = list(TRANSFORMS) if transforms is None else list(transforms)
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        msg = f"unknown transform(s) {', '.join(unknown)}; choose from {', '.join(TRANSFORMS)}"
        raise ValueError(msg)
    if not 0.0 <= variant_share <= 1.0:
        msg = f"variant_share must be between 0 and 1, not {variant_share}"
        raise ValueError(msg)
    seen: dict[str, Path] = {}
    for p in photos:
        if p.name in seen:
            msg = f"two photos share the name {p.name}: {seen[p.name]} and {p}"
            raise ValueError(msg)
        seen[p.name] = p

    out = Path(out)
    (out / "originals").mkdir(parents=True, exist_ok=True)
    (out / "variants").mkdir(exist_ok=True)
    order = sorted(photos, key=lambda p: p.name)
    chosen = set(random.Random(f"{seed}:choose").sample(range(len(order)), round(variant_share * len(order))))

    truths, jobs = [], []
    for i, photo in enumerate(order):
        copy = out / "originals" / photo.name
        shutil.copyfile(photo, copy)
        truths.append(Truth(copy, copy, ORIGINAL, i not in chosen, photo))
        if i in chosen:
            jobs.append((photo, copy))

    make = partial(_make_variants, out=out, seed=seed, names=names)
    if workers == 0 or len(jobs) < 2:
        results = map(make, jobs)
        truths.extend(t for batch in results for t in batch)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for batch in pool.map(make, jobs):
                truths.extend(batch)
    return truths


def clusters(truths: Iterable[Truth]) -> dict[str, str]:
    """Map each file (``os.path.abspath``) to its true cluster: the abspath of its original."""
    return {os.path.abspath(t.path): os.path.abspath(t.original) for t in truths}


_FIELDS = ("path", "original", "transform", "distractor", "source", "detail")


def write_truth(truths: Iterable[Truth], path: str | os.PathLike) -> None:
    """Write the truth as CSV (paths as given, ``distractor`` as 0/1)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(_FIELDS)
        for t in truths:
            w.writerow([t.path, t.original, t.transform, int(t.distractor), t.source, t.detail])


def read_truth(path: str | os.PathLike) -> list[Truth]:
    """Read what :func:`write_truth` wrote."""
    with open(path, newline="", encoding="utf-8") as f:
        return [
            Truth(Path(r["path"]), Path(r["original"]), r["transform"], r["distractor"] == "1",
                  Path(r["source"]), r["detail"])
            for r in csv.DictReader(f)
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a tree of near-duplicate variants and its truth.csv.")
    parser.add_argument("photos", help="folder of photos (no near-duplicates among them)")
    parser.add_argument("out", help="folder to create the tree in (must be empty or missing)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the choice of photos and parameters")
    parser.add_argument("--variant-share", type=float, default=0.5, help="share of photos that get variants")
    parser.add_argument("--transforms", nargs="+", choices=list(TRANSFORMS), metavar="NAME",
                        help=f"transforms to apply (default all: {', '.join(TRANSFORMS)})")
    parser.add_argument("--workers", type=int, default=None, help="processes (default one per CPU)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty")
    started = time.monotonic()
    truths = build_tree(list_photos(args.photos), out, seed=args.seed, variant_share=args.variant_share,
                        transforms=args.transforms, workers=args.workers)
    write_truth(truths, out / "truth.csv")
    print(f"{len(truths)} files in {out} ({time.monotonic() - started:.1f} s); truth in {out / 'truth.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
