"""Where a stage reads or writes: a local path, or a URL on object storage (gs://, s3://, ...).

Local paths stay `pathlib.Path`. A URL becomes a `RemotePath`, which offers the few `Path` methods the
stages' launching code uses (join, name, exists, read, write, list, stat) over Apache Beam's
`FileSystems`, so the same code plans a stage whether its workdir is a folder or a bucket. Only the
Beam engine does a stage's work on a URL (its workers read and write through FileSystems too); a
command run on the local engine refuses a URL with one line (`refuse_remote`).

Object stores have no folders and no atomic rename: `mkdir` does nothing, a "folder" exists when
something lies under it, and `write_bytes` writes a temporary object and then moves it into place,
so a reader sees the old bytes or the new ones, never a part (curate.beam.io.atomic_create).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import click

from curate.core.errors import InputError


def is_url(path: object) -> bool:
    """True for `scheme://...` (object storage); False for a local path."""
    return "://" in str(path)


def as_location(path: str | os.PathLike) -> "Path | RemotePath":
    """A `RemotePath` for a URL, else a `Path`."""
    if isinstance(path, RemotePath):
        return path
    return RemotePath(str(path)) if is_url(path) else Path(path)


def refuse_remote(path: object, what: str = "this command") -> None:
    """One line (InputError) when a URL reaches code that only reads this machine's files."""
    if is_url(path):
        raise InputError(f"{path} is on object storage, which only the Beam engine reaches: run the stage in a "
                         f"pipeline with `curate run PIPELINE --engine beam` ({what} reads local paths)")


def _filesystems():
    try:
        from apache_beam.io.filesystems import FileSystems
    except ImportError:
        raise InputError("object storage paths (gs://, s3://) need Apache Beam: pip install -e '.[beam]'") from None
    from curate.beam import s3clients

    s3clients.install()  # one S3 client per option set, not one per call

    return FileSystems


@dataclass(frozen=True)
class RemoteStat:
    st_size: int
    st_mtime_ns: int


class RemotePath:
    """A file or "folder" at a URL, with the `Path` methods curate's launching code needs."""

    __slots__ = ("url",)

    def __init__(self, url: str):
        scheme, sep, rest = str(url).partition("://")
        if not sep or not rest.strip("/"):
            raise InputError(f"{url}: a URL needs a bucket, e.g. gs://my-bucket/work")
        object.__setattr__(self, "url", f"{scheme}://{rest.rstrip('/')}")

    def __setattr__(self, name, value):
        raise AttributeError("RemotePath is immutable")

    def __reduce__(self):
        return RemotePath, (self.url,)

    # ---- names ----------------------------------------------------------------------------------

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: "RemotePath") -> bool:
        return self.url < other.url

    def __truediv__(self, part: str | os.PathLike) -> "RemotePath":
        return RemotePath(f"{self.url}/{str(part).strip('/')}")

    def joinpath(self, *parts: str) -> "RemotePath":
        out = self
        for p in parts:
            out = out / p
        return out

    @property
    def name(self) -> str:
        return self.url.rpartition("/")[2]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def parent(self) -> "RemotePath":
        head = self.url.rpartition("/")[0]
        return self if head.endswith(":/") else RemotePath(head)  # a bucket is its own parent, as "/" is

    def with_name(self, name: str) -> "RemotePath":
        return self.parent / name

    def resolve(self) -> "RemotePath":
        return self

    def is_relative_to(self, other: object) -> bool:
        return isinstance(other, RemotePath) and (self == other or self.url.startswith(other.url + "/"))

    def relative_to(self, other: "RemotePath") -> str:
        if not self.is_relative_to(other):
            raise ValueError(f"{self} is not inside {other}")
        return self.url[len(other.url) + 1:]

    # ---- what is there ------------------------------------------------------------------------------

    def _match(self, pattern: str, limit: int | None = None) -> list:
        fs = _filesystems()
        try:
            result = fs.match([pattern], limits=[limit] if limit else None)[0]
        except Exception:  # noqa: BLE001  Beam raises BeamIOError when nothing matches
            return []
        return result.metadata_list

    def is_file(self) -> bool:
        return _filesystems().exists(self.url)

    def is_dir(self) -> bool:
        return bool(self._match(self.url + "/**", limit=1))

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def is_symlink(self) -> bool:
        return False

    def stat(self) -> RemoteStat:
        found = [m for m in self._match(self.url) if m.path == self.url]
        if not found:
            raise FileNotFoundError(f"{self}: no such object")
        return RemoteStat(found[0].size_in_bytes, int(found[0].last_updated_in_seconds * 1e9))

    def rglob(self, pattern: str = "*") -> Iterator["RemotePath"]:
        """Every object below this prefix whose name matches `pattern`, in name order."""
        import fnmatch

        for m in sorted(self._match(self.url + "/**"), key=lambda m: m.path):
            if fnmatch.fnmatch(m.path.rpartition("/")[2], pattern):
                yield RemotePath(m.path)

    def iterdir(self) -> Iterator["RemotePath"]:
        """The objects and "folders" directly below this prefix."""
        names = {m.path[len(self.url) + 1:].partition("/")[0] for m in self._match(self.url + "/**")}
        for name in sorted(n for n in names if n):
            yield self / name

    # ---- reading and writing ------------------------------------------------------------------------

    def open(self, mode: str = "rb") -> IO[bytes]:
        from apache_beam.io.filesystem import CompressionTypes

        fs = _filesystems()
        if mode == "rb":
            if not fs.exists(self.url):  # as open() says it, which callers expect (object stores differ)
                raise FileNotFoundError(2, "no such object", self.url)
            return fs.open(self.url, compression_type=CompressionTypes.UNCOMPRESSED)
        if mode == "wb":
            return fs.create(self.url, mime_type="application/octet-stream",
                             compression_type=CompressionTypes.UNCOMPRESSED)
        raise ValueError(f"RemotePath.open: mode {mode!r} (only 'rb' and 'wb')")

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """Whole or absent (curate.beam.io.atomic_create)."""
        from curate.beam.io import write_bytes_atomic

        write_bytes_atomic(self.url, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: object stores have no folders."""

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.is_file():
            return
        _filesystems().delete([self.url])


def readable(path: "Path | RemotePath") -> "Path | IO[bytes]":
    """What pyarrow and friends can read: the path itself, or an open reader for a URL."""
    return path.open("rb") if isinstance(path, RemotePath) else path


@contextlib.contextmanager
def local_copy(path: "Path | RemotePath") -> Iterator[Path]:
    """A local file with the bytes of `path` (itself when it is local): for readers that need a real
    file, such as SQLite; the copy is removed afterwards."""
    if not isinstance(path, RemotePath):
        yield Path(path)
        return
    fd, name = tempfile.mkstemp(prefix="curate-", suffix=f"-{path.name}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(path.read_bytes())
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)



class LocationType(click.ParamType):
    """A click parameter type: a local path, checked as `click.Path(path_type=Path, **options)` checks
    it; or, when the command runs on the Beam engine, a URL (a `RemotePath`; `exists` checked too)."""

    name = "path"

    def __init__(self, **options):
        self.options = options
        self.local = click.Path(path_type=Path, **options)

    def convert(self, value, param, ctx):
        if not is_url(value):
            return self.local.convert(value, param, ctx)
        from curate.core.engine import current_engine

        if current_engine().name != "beam":
            self.fail(f"{value} is on object storage, which only the Beam engine reaches: "
                      "run the stage in a pipeline with `curate run PIPELINE --engine beam`", param, ctx)
        try:
            remote = as_location(value)
            missing = self.options.get("exists") and not remote.exists()
        except InputError as e:
            self.fail(str(e), param, ctx)
        if missing:
            self.fail(f"{value} does not exist", param, ctx)
        return remote
