"""Content hashes of files: the one sha256 helper behind every manifest (models, packed datasets)."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (hashlib.file_digest: buffered reads, memory stays flat)."""
    return file_hash(path, "sha256").hexdigest()


def file_hash(path: str | os.PathLike, algorithm: str = "sha256"):
    """The hash object of a file's bytes, to read with .hexdigest() or to keep updating."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm)
