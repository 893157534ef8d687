"""Shared fixtures: the repository's real photos and trees built from them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
ORIGINALS = SAMPLES / "originals"


def original_photos() -> list[Path]:
    """Every real photo the repository carries, in name order."""
    return sorted(p for p in ORIGINALS.iterdir() if p.suffix.lower() in (".jpg", ".png"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder: tests never touch ~/.cache."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder / "dupfinder" / "cache.sqlite"


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    found = original_photos()
    assert len(found) >= 30, "sample_images/originals should hold the test photos"
    return found


@pytest.fixture
def photo_tree(tmp_path, photos):
    """A fresh folder with ten unrelated real photos; returns (folder, paths)."""
    folder = tmp_path / "tree"
    folder.mkdir()
    copies = []
    for src in photos[:10]:
        dst = folder / src.name
        shutil.copyfile(src, dst)
        copies.append(dst)
    return folder, copies


def open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")
