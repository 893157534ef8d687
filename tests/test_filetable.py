"""FileTable: the columnar store a scan keeps gives back exactly the records it was given."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupfinder import scan
from dupfinder.cluster import is_low_information
from dupfinder.filetable import FileTable, TableBuilder, low_information_mask, same_content_pairs
from dupfinder.models import HashedFile

HEX = "0123456789abcdef"


def hexes(n_digits):
    return st.text(HEX, min_size=n_digits, max_size=n_digits)


@st.composite
def record_lists(draw):
    words = draw(st.sampled_from([1, 4]))
    n_var = draw(st.sampled_from([0, 8]))
    n_ext = draw(st.sampled_from([0, 3])) if n_var else 0
    digests = draw(st.lists(hexes(32), min_size=1, max_size=3))  # few, so that some repeat
    out = []
    for i in range(draw(st.integers(0, 40))):
        out.append(HashedFile(
            path=draw(st.text(min_size=1, max_size=12)) + f"/{i}",
            size=draw(st.integers(0, 2**62)),
            mtime_ns=draw(st.integers(-(2**62), 2**62) | st.sampled_from([10**19, 2**63, -(2**63) - 1])),
            width=draw(st.integers(1, 70000)),
            height=draw(st.integers(1, 70000)),
            hash=draw(hexes(16 * words)),
            digest=draw(st.sampled_from(["", *digests])),
            # Some records without variants or extras (an old cache row): given back as they were.
            variants=draw(hexes(16 * words * n_var) | st.just("")),
            quality=draw(st.integers(0, 100)),
            extras=draw(hexes(16 * words * n_ext) | st.just("")),
        ))
    return out


@settings(max_examples=80, deadline=None)
@given(record_lists(), st.integers(1, 7))
def test_table_gives_back_the_records_sorted_by_path(records, block):
    builder = TableBuilder(capacity=1)
    builder.BLOCK = block  # blocks and growth at odd sizes
    for r in records:
        builder.add(r)
    table = builder.finish()
    expected = sorted(records, key=lambda r: r.path)
    assert list(table) == expected
    assert table == expected and len(table) == len(expected)
    if expected:
        assert table[-1] == expected[-1] and table[1:3] == tuple(expected[1:3])


@settings(max_examples=80, deadline=None)
@given(record_lists())
def test_vectorised_checks_agree_with_the_per_record_ones(records):
    table = FileTable.from_records(records)
    rows = list(table)
    assert low_information_mask(table).tolist() == [is_low_information(f) for f in rows]
    a, b = same_content_pairs(table)
    la, lb = same_content_pairs(rows)  # the per-record version
    assert sorted(zip(a.tolist(), b.tolist())) == sorted(zip(la.tolist(), lb.tolist()))


def test_grouping_arrays_for_files_without_them_compare_as_is():
    full = HashedFile("a", 1, 0, 64, 64, "0" * 16, variants="1" * 128, extras="2" * 48)
    bare = HashedFile("b", 1, 0, 64, 64, "00000000000000ff")
    assert FileTable.from_records([full]).variants.shape == (1, 8, 1)
    assert FileTable.from_records([full]).extras.shape == (1, 3, 1)
    mixed = FileTable.from_records([full, bare])
    assert list(mixed) == [full, bare]
    # The file without them compares as it is: its hash in every orientation, crop and turn.
    assert mixed.variants[1, :, 0].tolist() == [255] * 8 and mixed.extras[1, :, 0].tolist() == [255] * 3
    assert FileTable.from_records([bare]).variants is None


def test_a_damaged_list_of_variants_counts_as_none():
    good = HashedFile("a", 1, 0, 64, 64, "0" * 16, variants="1" * 128)
    damaged = HashedFile("b", 1, 0, 64, 64, "0" * 16, variants="1" * 120)
    table = FileTable.from_records([good, damaged])
    assert list(table) == [good, HashedFile("b", 1, 0, 64, 64, "0" * 16)]
    assert table.variants[1].tolist() == [[0]] * 8  # stand-ins: its own hash, compared as it is


@pytest.mark.parametrize("bad", [
    HashedFile("b", 1, 0, 64, 64, "0" * 32),  # a longer hash than the first
    HashedFile("b", 1, 0, 64, 64, "0" * 16, digest="ab"),
])
def test_records_that_do_not_fit_are_refused(bad):
    good = HashedFile("a", 1, 0, 64, 64, "0" * 16, variants="1" * 128)
    with pytest.raises(ValueError):
        FileTable.from_records([good, bad])


def test_words_are_the_hashes_as_numbers():
    r = HashedFile("a", 1, 0, 64, 64, "00000000000000ff" + "8000000000000001", variants="", extras="")
    table = FileTable.from_records([r])
    assert table.words.tolist() == [[255, 0x8000000000000001]]
    assert table.variants is None and table.extras is None


def test_a_scan_keeps_its_files_in_a_table(tmp_path):
    from PIL import Image

    img = Image.effect_mandelbrot((128, 96), (-2, -1, 1, 1), 60)
    img.save(tmp_path / "b.png")
    img.resize((64, 48)).save(tmp_path / "a.png")
    result = scan([tmp_path], workers=0)
    assert isinstance(result.files, FileTable)
    assert [f.path.rsplit("/", 1)[-1] for f in result.files] == ["a.png", "b.png"]
    # The arrays grouping used are the records' hashes.
    assert result.files.words[:, 0].tolist() == [int(f.hash, 16) for f in result.files]
    assert result.files.extras is not None and np.any(result.files.extras)
    # Stored hash kind first and contiguous, so the crop search takes a view, not a copy.
    assert result.files.extras.transpose(1, 0, 2).flags["C_CONTIGUOUS"]
    assert [m.path for m in result.groups[0].members] == [str(tmp_path / "b.png"), str(tmp_path / "a.png")]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=2, max_size=2), max_size=30), st.booleans())
def test_unique_rows_is_numpys_unique(values, big):
    from dupfinder.cluster import _unique_rows

    rows = np.array(values, np.uint64).reshape(-1, 2)
    if big:
        rows = rows << np.uint64(62)  # high bits, where a weak mix would collide
    reps, inverse = _unique_rows(rows)
    expected, expected_inverse = np.unique(rows, axis=0, return_inverse=True)
    assert rows[reps].tolist() == expected.tolist()
    assert inverse.tolist() == expected_inverse.reshape(-1).tolist()
