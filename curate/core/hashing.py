"""Content hashes of files: the one sha256 helper behind every manifest (models, packed datasets).
A file may be a local path or an object (curate.core.location.RemotePath)."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curate.core.location import RemotePath


def file_sha256(path: "str | os.PathLike | RemotePath") -> str:
    """Hex sha256 of a file (hashlib.file_digest: buffered reads, memory stays flat)."""
    return file_hash(path, "sha256").hexdigest()


def file_hash(path: "str | os.PathLike | RemotePath", algorithm: str = "sha256"):
    """The hash object of a file's bytes, to read with .hexdigest() or to keep updating."""
    from curate.core.location import RemotePath

    with (path.open("rb") if isinstance(path, RemotePath) else open(path, "rb")) as f:
        return hashlib.file_digest(f, algorithm)
