"""Features of many files in flat arrays, saved once to a folder that worker processes memory-map.

Verifying partial copies is spread over the worker pool. A task names pairs
of files by index; the worker reads their features from the folder (the
page cache shares it between processes) instead of receiving them pickled,
50 KB a file for every pair it takes part in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .partial_features import Features

__all__ = ["FeatureTable", "mapped", "writing_to"]

_FIELDS = ("offsets", "points", "descriptors", "mirrored", "thumb_offsets", "thumb_shapes", "thumbs",
           "sizes", "scales", "present")


@dataclass(frozen=True, eq=False)
class FeatureTable:
    """The features of ``n`` files: file ``i``'s keypoints are rows ``offsets[i]:offsets[i + 1]``.

    ``table[i]`` is a :class:`Features` of views into the arrays (no copy),
    or None for a file that has none.

    >>> import tempfile
    >>> from PIL import Image
    >>> from dupfinder.partial_features import image_features
    >>> f = image_features(Image.effect_mandelbrot((320, 240), (-2, -1.5, 1, 1.5), 100))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     FeatureTable.pack([None, f]).save(folder)
    ...     table = FeatureTable.load(folder)
    ...     table[0], bool((table[1].descriptors == f.descriptors).all()), table[1].thumb.shape == f.thumb.shape
    (None, True, True)
    """

    offsets: np.ndarray  # (n + 1,) int64
    points: np.ndarray  # (rows, 2) float32
    descriptors: np.ndarray  # (rows, 32) uint8
    mirrored: np.ndarray  # (rows, 32) uint8
    thumb_offsets: np.ndarray  # (n + 1,) int64, into thumbs
    thumb_shapes: np.ndarray  # (n, 2) int64
    thumbs: np.ndarray  # (pixels,) uint8
    sizes: np.ndarray  # (n, 2) int64: width, height
    scales: np.ndarray  # (n,) float64
    present: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return len(self.present)

    def __getitem__(self, i: int) -> Features | None:
        if not self.present[i]:
            return None
        lo, hi = self.offsets[i], self.offsets[i + 1]
        t0, t1 = self.thumb_offsets[i], self.thumb_offsets[i + 1]
        return Features("", int(self.sizes[i, 0]), int(self.sizes[i, 1]), float(self.scales[i]),
                        self.points[lo:hi], self.descriptors[lo:hi], self.mirrored[lo:hi],
                        self.thumbs[t0:t1].reshape(self.thumb_shapes[i]))

    def owners(self) -> tuple[np.ndarray, np.ndarray]:
        """For each keypoint row, its file and its index among that file's keypoints.

        >>> t = FeatureTable(np.array([0, 2, 2, 3]), *([None] * 8), np.ones(3, bool))  # 3 files: 2, 0, 1 keypoints
        >>> [a.tolist() for a in t.owners()]
        [[0, 0, 2], [0, 1, 0]]
        """
        owner = np.repeat(np.arange(len(self)), np.diff(self.offsets))
        return owner, np.arange(len(owner)) - self.offsets[owner]

    @classmethod
    def pack(cls, features: Sequence[Features | None]) -> FeatureTable:
        """The features of a list of files (None where a file has none) in flat arrays."""
        have = [f for f in features if f is not None]
        counts = np.array([len(f) if f is not None else 0 for f in features], np.int64)
        pixels = np.array([f.thumb.size if f is not None else 0 for f in features], np.int64)

        def joined(parts, empty_shape, dtype):
            return np.concatenate(parts) if parts else np.zeros(empty_shape, dtype)

        return cls(
            offsets=np.r_[0, np.cumsum(counts)].astype(np.int64),
            points=joined([f.points for f in have], (0, 2), np.float32),
            descriptors=joined([f.descriptors for f in have], (0, 32), np.uint8),
            mirrored=joined([f.mirrored for f in have], (0, 32), np.uint8),
            thumb_offsets=np.r_[0, np.cumsum(pixels)].astype(np.int64),
            thumb_shapes=np.array([f.thumb.shape if f is not None else (0, 0) for f in features],
                                  np.int64).reshape(-1, 2),
            thumbs=joined([f.thumb.ravel() for f in have], (0,), np.uint8),
            sizes=np.array([(f.width, f.height) if f is not None else (0, 0) for f in features],
                           np.int64).reshape(-1, 2),
            scales=np.array([f.scale if f is not None else 0.0 for f in features], np.float64),
            present=np.array([f is not None for f in features], bool),
        )

    def save(self, folder: str | os.PathLike) -> None:
        """Write each array to ``folder`` as a ``.npy`` file."""
        for name in _FIELDS:
            np.save(os.path.join(folder, f"{name}.npy"), getattr(self, name))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> FeatureTable:
        """The table :meth:`save` wrote, memory-mapped read-only."""
        # Plain ndarray views of the maps: np.memmap's subclass hooks cost
        # more than the arithmetic on the small slices verification takes.
        return cls(**{name: mapped(os.path.join(folder, f"{name}.npy")) for name in _FIELDS})


def mapped(path: str | os.PathLike) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped read-only, as a plain ndarray view.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     np.save(os.path.join(folder, "a.npy"), np.arange(3))
    ...     a = mapped(os.path.join(folder, "a.npy"))
    ...     type(a).__name__, a.tolist(), a.flags.writeable
    ('ndarray', [0, 1, 2], False)
    """
    array = np.load(path, mmap_mode="r")
    return array.view(np.ndarray) if isinstance(array, np.memmap) else array


@contextmanager
def writing_to(folder: str):
    """Turn a failed write of features into an error that names the folder and the way out.

    >>> with writing_to("/tmp/x"):
    ...     raise OSError("5648832 requested and 679808 written")
    Traceback (most recent call last):
    OSError: cannot write the local features of --partial to /tmp/x (5648832 requested and 679808 written): is the temporary folder full? Set TMPDIR to a folder with room (about 80 KB a file)
    """
    try:
        yield
    except OSError as exc:
        msg = (f"cannot write the local features of --partial to {folder} ({exc}): is the temporary "
               "folder full? Set TMPDIR to a folder with room (about 80 KB a file)")
        raise OSError(msg) from exc
