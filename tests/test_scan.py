"""The pipeline end to end, on real photos and their variants."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from dupfinder import scan
from dupfinder.executor import InlineExecutor, ProcessExecutor
from dupfinder.models import Progress, UsageError

from .conftest import open_rgb
from .test_imaging import write_bomb_png

VARIANTS = {
    "half": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "double": lambda im: im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    "grey": lambda im: im.convert("L"),
}


def make_variants(src: Path, folder: Path) -> list[Path]:
    im = open_rgb(src)
    out = []
    for name, fn in VARIANTS.items():
        p = folder / f"{src.stem}_{name}.jpg"
        fn(im).save(p, quality=80)
        out.append(p)
    p = folder / f"{src.stem}_q30.jpg"
    im.save(p, quality=30)
    out.append(p)
    p = folder / f"{src.stem}_resaved.png"
    im.save(p)
    out.append(p)
    p = folder / f"{src.stem}_copy{src.suffix}"
    shutil.copyfile(src, p)
    out.append(p)
    return out


def group_sets(result):
    return [frozenset(Path(m.path).name for m in g.members) for g in result.groups]


def test_variants_join_their_original_and_unrelated_stay_alone(tmp_path, photos):
    originals = photos[:12]
    expected = []
    for src in originals:
        shutil.copyfile(src, tmp_path / src.name)
    for src in originals[:4]:
        made = make_variants(src, tmp_path)
        expected.append(frozenset([src.name] + [p.name for p in made]))
    result = scan([tmp_path], threshold=8, workers=0)
    assert sorted(group_sets(result), key=sorted) == sorted(expected, key=sorted)
    assert not result.errors
    for g in result.groups:
        assert g.keep.keep and sum(m.keep for m in g.members) == 1
        assert g.keep.distance == 0
        # The kept file has the most pixels: the upscaled variant.
        assert "double" in Path(g.keep.path).name


def test_unrelated_real_photos_form_no_group(photos, tmp_path):
    for src in photos:
        shutil.copyfile(src, tmp_path / src.name)
    result = scan([tmp_path], threshold=5, workers=0)
    assert result.groups == ()
    assert result.counts["hashed"] == len(photos)


def test_bad_inputs_are_error_rows_and_the_scan_finishes(tmp_path, photos):
    for src in photos[:3]:
        shutil.copyfile(src, tmp_path / src.name)
    shutil.copyfile(photos[0], tmp_path / "dup.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    jpeg = photos[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    write_bomb_png(tmp_path / "bomb.png")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    result = scan([tmp_path], workers=0, follow_symlinks=True)
    by_name = {Path(e.path).name: e for e in result.errors}
    assert set(by_name) == {"empty.jpg", "text.png", "cut.jpg", "bomb.png"}
    assert by_name["bomb.png"].message.startswith("too many pixels")
    assert result.counts["hashed"] == 4
    assert group_sets(result) == [frozenset({photos[0].name, "dup.jpg"})]


def test_file_deleted_while_the_scan_runs(tmp_path, photos):
    for src in photos[:5]:
        shutil.copyfile(src, tmp_path / src.name)
    victim = tmp_path / photos[2].name

    def on_progress(p: Progress):
        if p.stage == "hash" and p.done == 0 and victim.exists():
            victim.unlink()  # after the walk listed it, before it is decoded

    result = scan([tmp_path], workers=0, progress=on_progress)
    assert [(Path(e.path).name, e.stage) for e in result.errors] == [(victim.name, "open")]
    assert "vanished" in result.errors[0].message
    assert result.counts["hashed"] == 4


def test_pool_gives_the_same_result_as_in_process(tmp_path, photos):
    for src in photos[:6]:
        shutil.copyfile(src, tmp_path / src.name)
    make_variants(photos[0], tmp_path)
    inline = scan([tmp_path], executor=InlineExecutor())
    pool = ProcessExecutor(2)
    try:
        pooled = scan([tmp_path], executor=pool)
    finally:
        pool.close()
    assert pooled.groups == inline.groups
    assert pooled.files == inline.files


def test_spawn_start_method_works(tmp_path, photos):
    for src in photos[:3]:
        shutil.copyfile(src, tmp_path / src.name)
    shutil.copyfile(photos[0], tmp_path / "again.jpg")
    ex = ProcessExecutor(2, start_method="spawn")
    try:
        result = scan([tmp_path], executor=ex)
    finally:
        ex.close()
    assert group_sets(result) == [frozenset({photos[0].name, "again.jpg"})]


def test_progress_is_reported_as_data(tmp_path, photos):
    for src in photos[:4]:
        shutil.copyfile(src, tmp_path / src.name)
    seen: list[Progress] = []
    scan([tmp_path], workers=0, progress=seen.append)
    hashing = [p for p in seen if p.stage == "hash"]
    assert hashing[0].done == 0 and hashing[-1].done == hashing[-1].total == 4
    assert [p.done for p in hashing] == sorted(p.done for p in hashing)


def test_output_order_does_not_depend_on_discovery(tmp_path, photos):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for src in photos[:3]:
        shutil.copyfile(src, a / src.name)
        shutil.copyfile(src, b / src.name)
    one = scan([a, b], workers=0)
    two = scan([b, a], workers=0)
    assert one.groups == two.groups
    assert [g.keep.path for g in one.groups] == sorted(g.keep.path for g in one.groups)


def test_overlapping_roots_list_a_file_once(tmp_path, photos):
    sub = tmp_path / "sub"
    sub.mkdir()
    shutil.copyfile(photos[0], sub / "x.jpg")
    result = scan([tmp_path, sub], workers=0)
    assert result.counts["hashed"] == 1 and result.groups == ()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"threshold": -1}, "threshold"),
        ({"algorithm": "md5"}, "algorithm"),
        ({"hash_size": 12}, "multiple of 8"),
        ({"index": "magic"}, "index"),
    ],
)
def test_bad_settings_raise_usage_error(tmp_path, kwargs, words):
    with pytest.raises(UsageError, match=words):
        scan([tmp_path], workers=0, **kwargs)


def test_a_default_scan_imports_no_scipy(tmp_path, photos):
    # Importing scipy costs 0.1 s (a tenth of scanning 600 photos), in the
    # CLI and in every spawned worker; the default hashes do without it.
    # The worker reports its own modules: a spawned pool starts from nothing.
    import subprocess
    import sys

    tree = tmp_path / "tree"
    tree.mkdir()
    for src in photos[:3]:
        shutil.copyfile(src, tree / src.name)
    shutil.copyfile(photos[0], tree / "again.jpg")
    probe = tmp_path / "probe.py"
    probe.write_text(f"""import sys

from dupfinder import scan
from dupfinder.executor import ProcessExecutor


def loaded(_):
    return sorted(m for m in sys.modules if m.split(".")[0] == "scipy")


if __name__ == "__main__":
    pool = ProcessExecutor(1, start_method="spawn")
    for executor in (None, pool):
        result = scan([{str(tree)!r}], workers=0, executor=executor)
        assert len(result.groups) == 1, result.groups
    print("worker", [modules for _, modules in pool.map_unordered(loaded, [0])])
    pool.close()
    print("parent", loaded(0))
""")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["worker [[]]", "parent []"], out.stdout


def test_byte_for_byte_copies_are_decoded_once_and_hash_as_their_first(tmp_path, photos):
    from dupfinder.fingerprint import HashSpec, fingerprint_file

    for src in photos[:3]:
        shutil.copyfile(src, tmp_path / src.name)
    (tmp_path / "sub").mkdir()
    shutil.copyfile(photos[0], tmp_path / "sub" / "again.jpg")
    shutil.copyfile(photos[0], tmp_path / "sub" / "third.jpg")
    shutil.copyfile(photos[1], tmp_path / "sub" / "other.png")  # the bytes decide, not the name
    seen: list[Progress] = []
    result = scan([tmp_path], workers=0, progress=seen.append)
    assert result.counts["decoded"] == 3 and result.counts["hashed"] == 6
    # Reading the files that share a size shows as a stage of its own.
    copies = [p for p in seen if p.stage == "copies"]
    assert copies[0].done == 0 and copies[-1].done == copies[-1].total >= 3
    for row in result.files:
        alone = fingerprint_file(row.path, HashSpec())
        assert (row.hash, row.variants, row.extras) == (alone.hash, alone.variants, alone.extras), row.path
    assert sorted(len(g.members) for g in result.groups) == [2, 3]


@pytest.mark.parametrize("stage, message", [("open", "file vanished before it could be read"),
                                            ("decode", "not enough memory to decode this image")])
def test_a_copy_whose_first_file_cannot_be_read_is_read_itself(tmp_path, photos, monkeypatch, stage, message):
    # The first file vanished between its digest and its decoding, or ran out
    # of memory: neither says anything of the bytes its copy holds.
    from dupfinder import hashing
    from dupfinder.models import ScanError as Error

    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    shutil.copyfile(photos[0], tmp_path / "b.jpg")
    real = hashing.fingerprint_and_digest

    def first_unreadable(path, spec):
        if path.endswith("a.jpg"):
            digest, _ = real(path, spec)
            return (None if stage == "open" else digest), Error(path, stage, message)
        return real(path, spec)

    monkeypatch.setattr(hashing, "fingerprint_and_digest", first_unreadable)
    seen: list[Progress] = []
    result = scan([tmp_path], workers=0, progress=seen.append)
    assert [Path(e.path).name for e in result.errors] == ["a.jpg"]
    assert [Path(f.path).name for f in result.files] == ["b.jpg"]
    assert result.counts["decoded"] == 2
    # The bar counts the copy when it is read, not before: it never runs
    # backwards and is full only once both files have an answer.
    done = [p.done for p in seen if p.stage == "hash"]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 2
    assert done.index(2) == len(done) - 1


def test_copies_of_uncompressed_files_are_not_digested_first(tmp_path, photos):
    # A BMP costs about as much to read as to decode: a digest pass over
    # files of one size (a scanner's output) would double the reading.
    open_rgb(photos[0]).save(tmp_path / "a.bmp")
    shutil.copyfile(tmp_path / "a.bmp", tmp_path / "b.bmp")
    result = scan([tmp_path], workers=0)
    assert result.counts["decoded"] == 2
    assert [sorted(Path(m.path).name for m in g.members) for g in result.groups] == [["a.bmp", "b.bmp"]]


def test_a_file_digested_in_the_rename_search_is_not_digested_again(tmp_path, photos, monkeypatch):
    # a.jpg was hashed at another hash size, then moved to b.jpg with a copy
    # c.jpg: the search for renamed files digests b and c (a's size); with
    # no result at this size they are decoded, and the search for copies
    # must use those digests, not read the files again.
    from dupfinder import hashing
    from dupfinder.cache import Cache

    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    with Cache(str(tmp_path.parent / f"{tmp_path.name}.sqlite")) as cache:
        scan([tmp_path], workers=0, cache=cache, hash_size=16)
        (tmp_path / "a.jpg").rename(tmp_path / "b.jpg")
        shutil.copyfile(tmp_path / "b.jpg", tmp_path / "c.jpg")
        read: list[str] = []
        real = hashing.file_digest

        def counting(path):
            read.append(Path(path).name)
            return real(path)

        monkeypatch.setattr(hashing, "file_digest", counting)
        result = scan([tmp_path], workers=0, cache=cache)
    assert sorted(read) == ["b.jpg", "c.jpg"]
    assert result.counts["decoded"] == 1 and len(result.groups) == 1


@pytest.mark.parametrize("kwargs, says", [
    ({"threshold": "5"}, "threshold must be a whole number"),
    ({"threshold": 2.5}, "threshold must be a whole number"),
    ({"hash_size": "8"}, "hash_size must be a whole number"),
    ({"workers": "2"}, "workers must be None"),
    ({"workers": -1}, "workers must be None"),
    ({"cache": "/tmp/cache.sqlite"}, "cache must be an open dupfinder.cache.Cache"),
    ({"executor": object()}, "executor must have map_unordered"),
    ({"progress": 5}, "progress must be a callable"),
    ({"new_since": "2026-11-25"}, "new_since must be a Unix time or 'last'"),
    ({"algorithm": "whash", "hash_size": 24}, "whash needs a hash size that is a power of 2"),
])
def test_library_arguments_of_the_wrong_kind_are_usage_errors_before_any_work(tmp_path, kwargs, says):
    seen = []
    with pytest.raises(UsageError, match=says):
        scan([tmp_path], progress=kwargs.pop("progress", seen.append), **kwargs)
    assert seen == []  # nothing was walked


def test_one_path_given_as_a_string_is_one_root(tmp_path, photos):
    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    shutil.copyfile(photos[0], tmp_path / "b.jpg")
    result = scan(str(tmp_path), workers=0)
    assert result.settings.roots == (str(tmp_path),) and len(result.groups) == 1
    with pytest.raises(UsageError, match="list of paths"):
        scan(None, workers=0)


def test_numpy_integers_are_whole_numbers(tmp_path, photos):
    import numpy as np

    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    shutil.copyfile(photos[0], tmp_path / "b.jpg")
    result = scan([tmp_path], threshold=np.int64(5), hash_size=np.int32(8), workers=np.int64(0))
    assert result.settings.threshold == 5 and type(result.settings.threshold) is int
    assert len(result.groups) == 1


def test_roots_as_bytes_and_new_since_as_any_real_number(tmp_path, photos):
    import numpy as np

    from dupfinder.cache import Cache

    shutil.copyfile(photos[0], tmp_path / "a.jpg")
    shutil.copyfile(photos[0], tmp_path / "b.jpg")
    assert len(scan(os.fsencode(tmp_path), workers=0).groups) == 1
    with Cache(tmp_path / "c.sqlite") as cache:
        assert len(scan([tmp_path], workers=0, cache=cache, new_since=np.float32(0)).groups) == 1
