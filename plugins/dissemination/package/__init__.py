"""A package: the shared table as CSV plus a manifest, in an AES-256 zip.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "archive": (
        "DeflatedCsv", "Issue", "build_package", "opens_with", "write_csv",
    ),
    "digests": ("file_sha256",),
    "formulas": ("report",),
})
