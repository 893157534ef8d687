"""What the benchmarks share: the machine they describe, and which dupfinder they measure.

A benchmark measures a snapshot of dupfinder/ taken at start, or the tree. Others may edit the working tree while a long benchmark runs; one run must
measure one version, so the benchmarks copy ``dupfinder/`` first (``--live``
measures the working tree instead) and say at the end whether it changed.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def source_digest(package: Path) -> str:
    """A short digest of every .py file under a package folder."""
    h = hashlib.sha256()
    for p in sorted(package.rglob("*.py")):
        h.update(p.relative_to(package).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def snapshot(dest: Path, live: bool) -> tuple[Path, str]:
    """Copy dupfinder/ to dest (unless live) and import from there; returns (root, a line to print)."""
    if live:
        root = REPO
    else:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(REPO / "dupfinder", dest / "dupfinder", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        root = dest
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    digest = source_digest(root / "dupfinder")
    where = "the working tree (--live)" if live else f"a snapshot of {REPO / 'dupfinder'} taken at start ({dest})"
    return root, f"dupfinder source: {where}, sources sha256 {digest}"


def live_changed_note(start_digest_line: str) -> str:
    """Whether the working tree's dupfinder/ changed since the run began."""
    now = source_digest(REPO / "dupfinder")
    was = start_digest_line.rsplit(" ", 1)[-1]
    if now == was:
        return f"dupfinder/ in the working tree is unchanged since the start ({now})"
    return f"note: dupfinder/ in the working tree changed during the run (now {now}); the figures are for {was}"


def machine_lines(*, versions: str = "") -> list[str]:
    """What a benchmark prints about the machine: CPUs, memory, platform, versions."""
    import numpy
    import PIL

    cpu_model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024} MiB RAM"
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"machine: {os.cpu_count()} CPUs ({affinity} usable){mem}; {cpu_model}",
        f"platform: {platform.platform()}",
        f"python: {platform.python_version()} ({sys.executable})",
        f"Pillow {PIL.__version__}, numpy {numpy.__version__}{versions}",
    ]


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs), so each phase gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def in_tree(parser, out, prefix: str, run):
    """``run(tree)`` in the ``--out`` folder (missing or empty; kept) or in a temporary one (removed)."""
    if out:
        tree = Path(out)
        if tree.exists() and any(tree.iterdir()):
            parser.error(f"--out {tree} is not empty")
        tree.mkdir(parents=True, exist_ok=True)
        return run(tree.resolve())
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        return run(Path(tmp).resolve())


def floor_pass(paths) -> dict:
    """Open + draft + load each image in this process: the decode a pipeline cannot avoid."""
    from PIL import Image

    start, cpu = time.perf_counter(), time.process_time()
    for p in paths:
        with Image.open(p) as im:
            if im.format == "JPEG":
                im.draft("L", (64, 64))
            im.load()
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def floor_chunk(paths) -> float:
    """floor_pass's wall time, for a Pool to map (module-level, so it pickles by name)."""
    return floor_pass(paths)["wall"]


def jsonable(x):
    """A benchmark's numbers as JSON takes them: NaN as null, keys and paths as text."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def tagged(data: bytes, tag: str) -> bytes:
    """Image bytes with ``tag`` in a comment: the same pixels, other bytes (and size).

    dupfinder decodes byte-for-byte copies once; a benchmark's files that
    stand for different photos must cost a decode each. A JPEG gets a COM
    segment after SOI, a PNG a tEXt chunk after IHDR; anything else is
    returned as it is.
    """
    text = tag.encode()
    if data[:2] == b"\xff\xd8":
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[2:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        body = b"tEXt" + b"Comment\0" + text
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        return data[:33] + chunk + data[33:]  # signature (8) + IHDR (25)
    return data


def distinct_copy(src: Path, dst: Path, tag: str) -> None:
    """Copy a photo as :func:`tagged` bytes."""
    dst.write_bytes(tagged(src.read_bytes(), tag))
