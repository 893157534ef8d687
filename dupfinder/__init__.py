"""dupfinder: find duplicate and near-duplicate images, and copies of protected ones.

>>> import dupfinder
>>> callable(dupfinder.scan)
True
"""

__version__ = "0.1.0"

from .hashes import ahash, dhash, from_hex, phash, to_hex, whash  # noqa: E402
from .index import Pairs, find_matches, find_pairs  # noqa: E402
from .models import (  # noqa: E402
    DuplicateGroup,
    DupfinderError,
    FileEntry,
    HashedFile,
    Member,
    Progress,
    ReportFormatError,
    ScanError,
    ScanResult,
    ScanSettings,
    UsageError,
)
from .report import read_csv, write_report  # noqa: E402
from .scan import scan  # noqa: E402
from .walk import walk  # noqa: E402

__all__ = [
    "__version__",
    "scan",
    "walk",
    "find_pairs",
    "find_matches",
    "Pairs",
    "ahash",
    "dhash",
    "phash",
    "whash",
    "to_hex",
    "from_hex",
    "write_report",
    "read_csv",
    "DupfinderError",
    "UsageError",
    "ReportFormatError",
    "FileEntry",
    "HashedFile",
    "ScanError",
    "Progress",
    "Member",
    "DuplicateGroup",
    "ScanSettings",
    "ScanResult",
]
