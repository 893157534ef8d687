"""Decode one file once and compute every fingerprint asked of it.

This is the work a worker process does per file. It is kept apart from the
pipeline so that it can be pickled by name under the ``spawn`` start method
and called directly by ``dupfinder hash``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import hashes
from .imaging import load_image
from .models import ScanError

__all__ = ["HashSpec", "Fingerprint", "fingerprint_file", "COMPAT_MODES"]

COMPAT_MODES = ("imagehash",)


@dataclass(frozen=True, slots=True)
class HashSpec:
    """What to compute for each file: algorithm, hash size and decode mode.

    Every field changes the answer, so a cache keys on all of them.

    >>> HashSpec().bits, HashSpec(hash_size=16).bits
    (64, 256)
    """

    algorithm: str = "phash"
    hash_size: int = 8
    compat: str | None = None
    orient: bool = True

    @property
    def bits(self) -> int:
        return self.hash_size * self.hash_size

    @property
    def min_size(self) -> int:
        """Smallest decoded edge the hash needs: twice its resampling grid."""
        grid = {
            "ahash": self.hash_size,
            "dhash": self.hash_size + 1,
            "phash": self.hash_size * 4,
            "whash": self.hash_size * 8,
        }.get(self.algorithm, 64)
        return 2 * grid


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A hashed file: its hex fingerprint and the size a person sees."""

    path: str
    hash: str
    width: int
    height: int


def fingerprint_file(path: str, spec: HashSpec) -> Fingerprint | ScanError:
    """Decode ``path`` once and hash it; a bad file gives a ScanError.

    >>> import tempfile
    >>> from PIL import Image
    >>> p = tempfile.mktemp(suffix=".png")
    >>> Image.linear_gradient("L").save(p)
    >>> fingerprint_file(p, HashSpec()).hash
    '8000800080008000'
    >>> fingerprint_file(p + "x", HashSpec()).stage
    'open'
    """
    # --compat imagehash hashes exactly `imagehash.<algo>(Image.open(path))`:
    # no orientation, no draft, no mode handling, so hashes that ImageHash
    # users keep in a database stay comparable.
    compat = spec.compat == "imagehash"
    decoded = load_image(
        path, min_size=spec.min_size, orient=spec.orient, grey=True, raw=compat
    )
    if isinstance(decoded, ScanError):
        return decoded
    try:
        words = hashes.compute(decoded.image, spec.algorithm, hash_size=spec.hash_size)
    except (ValueError, MemoryError) as exc:
        return ScanError(path, "hash", str(exc) or type(exc).__name__)
    return Fingerprint(path, hashes.to_hex(words), decoded.width, decoded.height)

