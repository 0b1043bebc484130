"""Files on Beam: every read and write of the Beam engine goes through Beam's FileSystems, so an input
or a workdir may be a local path or object storage (gs://, s3://, ...). Writes are whole or absent:
to a temporary name beside the target, then renamed over it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import BinaryIO, Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from curate.core.image import DecodeFailure, read_bytes


def read_image(path: str) -> bytes | DecodeFailure:
    """An image's bytes or the reader's reason: a local path through the one reader (curate.core.image),
    a URL through FileSystems, with the same reason codes."""
    if "://" not in str(path):
        return read_bytes(path)
    if not exists(path):
        return DecodeFailure("missing_file", str(path))
    try:
        with open_read(path) as f:
            data = f.read()
    except Exception as e:  # noqa: BLE001  an object store's own error types
        return DecodeFailure("unreadable", f"{path}: {e}")
    return read_bytes(data)


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a local path or a URL."""
    return FileSystems.join(str(base), *parts)


def exists(path: str) -> bool:
    return FileSystems.exists(str(path))


def size(path: str) -> int:
    """Bytes of one file."""
    return FileSystems.match([str(path)])[0].metadata_list[0].size_in_bytes


def open_read(path: str) -> BinaryIO:
    """A binary reader of the file's own bytes (never decompressed on the way: curate does that)."""
    return FileSystems.open(str(path), compression_type=CompressionTypes.UNCOMPRESSED)


def mkdirs(path: str) -> None:
    with contextlib.suppress(OSError, Exception):  # object stores have no folders; an existing one is fine
        FileSystems.mkdirs(str(path))


def _temporary(dest: str) -> str:
    head, _, name = str(dest).rpartition("/")
    return f"{head}/.{name}.tmp-{uuid.uuid4().hex}" if head else f".{name}.tmp-{uuid.uuid4().hex}"


@contextlib.contextmanager
def atomic_create(dest: str) -> Iterator[BinaryIO]:
    """A writer whose bytes appear at `dest` only when the block ends without an error."""
    dest = str(dest)
    parent = dest.rpartition("/")[0]
    if parent and "://" not in dest:
        os.makedirs(parent, exist_ok=True)
    tmp = _temporary(dest)
    f = FileSystems.create(tmp, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield f
        f.close()
        if "://" not in dest:
            os.replace(tmp, dest)  # atomic on a local disk
        else:  # object stores have no atomic rename: the copy appears whole, then the temporary goes
            if exists(dest):
                FileSystems.delete([dest])
            FileSystems.rename([tmp], [dest])
    except BaseException:
        with contextlib.suppress(Exception):
            f.close()
        with contextlib.suppress(Exception):
            FileSystems.delete([tmp])
        raise


def write_bytes_atomic(dest: str, data: bytes) -> None:
    with atomic_create(dest) as f:
        f.write(data)


def delete(path: str) -> None:
    FileSystems.delete([str(path)])


def move(src: str, dest: str) -> None:
    """Rename `src` to `dest`, replacing it (atomic on a local disk)."""
    if "://" not in str(dest):
        os.replace(src, dest)
        return
    if exists(dest):
        FileSystems.delete([str(dest)])
    FileSystems.rename([str(src)], [str(dest)])


def delete_tree(path: str) -> None:
    """Remove a folder and everything under it (a prefix, on an object store)."""
    if "://" not in str(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        parent = os.path.dirname(str(path).rstrip("/"))
        with contextlib.suppress(OSError):
            os.rmdir(parent)  # the .pack-beam folder, once its last fingerprint is gone
        return
    with contextlib.suppress(Exception):
        FileSystems.delete([str(path).rstrip("/") + "/"])
