"""Reading Danbooru metadata: both generations, plain or compressed, in line-aligned blocks.

Two layers:
- `decode_line()` turns one JSON line into a `Post` or a `BadLine` (a reason, never an exception).
  The generation is detected per line: the 2017-2020 export writes numbers as strings and tags as
  objects with a `favs` list; the 2021+/API form has typed values, `fav_count` and `tag_string_*`.
- `open_blocks()` cuts the inputs into blocks of whole lines that workers decode independently.
  A plain file becomes byte ranges that a worker reads itself (no data crosses the process pipe);
  a compressed file (.gz, .xz, .bz2, .tar.xz) is decompressed in one stream and shipped in pieces.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

import msgspec

from curate.core.errors import InputError

BLOCK_BYTES = 32 << 20  # big enough to amortise per-task cost, small enough to keep memory flat
COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2")
TAG_CATEGORIES = ("general", "character", "copyright", "artist", "meta")
# Danbooru's numeric tag categories (2017-2020 export): 0 general, 1 artist, 3 copyright, 4 character, 5 meta.
_CATEGORY_BY_CODE = {"0": "general", "1": "artist", "3": "copyright", "4": "character", "5": "meta"}
CATEGORY_CODE = {name: code for code, name in _CATEGORY_BY_CODE.items()}


class _Tag(msgspec.Struct, gc=False):
    name: str
    category: str = "0"  # a numeric string in the 2017-2020 export


class _RawPost(msgspec.Struct, gc=False):
    """The fields we read, in both generations; everything else on the line is skipped unparsed."""

    id: int | str | None = None
    created_at: str | None = None
    rating: str | None = None
    image_width: int | str | None = None
    image_height: int | str | None = None
    file_ext: str | None = None
    favs: msgspec.Raw = msgspec.Raw(b"null")  # counted, not decoded (see _count_favs)
    fav_count: int | str | None = None
    score: int | str | None = None
    md5: str | None = None
    is_deleted: bool | None = None
    is_banned: bool | None = None
    tags: msgspec.Raw = msgspec.Raw(b"null")  # decoded only for posts that reach the tag rules
    tag_string: str | None = None
    tag_string_general: str | None = None
    tag_string_character: str | None = None
    tag_string_copyright: str | None = None
    tag_string_artist: str | None = None
    tag_string_meta: str | None = None


_decoder = msgspec.json.Decoder(_RawPost)
_tags_decoder = msgspec.json.Decoder(list[_Tag])


class _TagName(msgspec.Struct, gc=False):
    name: str


_tag_names_decoder = msgspec.json.Decoder(list[_TagName])
_favs_decoder = msgspec.json.Decoder(list[str])
_NULL = b"null"
_RAW_NULL = msgspec.Raw(_NULL)
_ID_LIST_BYTES = b'0123456789",[] '


def _count_favs(raw: bytes) -> int:
    """len(favs) without building the list: exact when the list holds only numeric id strings."""
    if raw == b"[]":
        return 0
    if raw[:1] == b"[" and not raw.translate(None, _ID_LIST_BYTES):
        return raw.count(b",") + 1
    return len(_favs_decoder.decode(raw))  # anything unusual: decode it properly (may raise)


class FieldError(ValueError):
    """A field a rule needed was missing or unusable; the line counts as bad with this reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Post:
    """One decoded post: the same interface whichever generation it came from.

    Fields are converted on first use, not up front: most posts are removed by a cheap rule
    (deleted, file type, rating, size) and never need their timestamp parsed or their 30 tag
    objects decoded, which would otherwise cost more than the JSON decoding itself. A field that
    turns out missing or malformed raises FieldError (or msgspec.ValidationError for tags) when
    read. `validate()` reads them all; every post the filter keeps is validated in full.
    """

    __slots__ = ("_raw", "_created_at", "_tag_objects")

    def __init__(self, raw: _RawPost):
        self._raw = raw
        self._created_at: int | None = None
        self._tag_objects: list[_Tag] | None = None

    @property
    def raw(self) -> _RawPost:
        """The decoder's struct: present fields as given (str, int, bool); for rules that need no conversion."""
        return self._raw

    @property
    def id(self) -> int:
        return _int(self._raw.id, "id")

    @property
    def created_at(self) -> int:
        """Microseconds since the Unix epoch, UTC."""
        if self._created_at is None:
            text = self._raw.created_at
            if text is None:
                raise FieldError("missing_field", "no created_at")
            try:
                self._created_at = parse_timestamp(text)
            except ValueError:
                raise FieldError("bad_value", f"created_at={text[:40]!r} is not a timestamp") from None
        return self._created_at

    @property
    def rating(self) -> str:
        """Danbooru's letter as given: s/q/e (2017-2020) or g/s/q/e (2022+)."""
        if self._raw.rating is None:
            raise FieldError("missing_field", "no rating")
        return self._raw.rating

    @property
    def width(self) -> int:
        return _int(self._raw.image_width, "image_width")

    @property
    def height(self) -> int:
        return _int(self._raw.image_height, "image_height")

    @property
    def file_ext(self) -> str:
        return (self._raw.file_ext or "").lower()

    @property
    def favs(self) -> int:
        """Favorite count: len(favs) in the 2017-2020 export, fav_count in newer data."""
        fav_json = bytes(self._raw.favs)
        if fav_json != _NULL:
            try:
                return _count_favs(fav_json)
            except msgspec.ValidationError as e:
                raise FieldError("wrong_type", f"favs: {e}") from None
        return _int(self._raw.fav_count, "favs or fav_count")

    @property
    def score(self) -> int:
        return 0 if self._raw.score is None else _int(self._raw.score, "score")

    @property
    def deleted(self) -> bool:
        return bool(self._raw.is_deleted)

    @property
    def banned(self) -> bool:
        return bool(self._raw.is_banned)

    @property
    def md5(self) -> str | None:
        return self._raw.md5

    def _objects(self) -> list[_Tag] | None:
        """The 2017-2020 tag objects, decoded once; None for the API form."""
        if self._tag_objects is None:
            if bytes(self._raw.tags) == _NULL:
                return None
            try:
                self._tag_objects = _tags_decoder.decode(self._raw.tags)
            except msgspec.ValidationError as e:
                raise FieldError("wrong_type", f"tags: {e}") from None
        return self._tag_objects

    def flat_tags(self) -> tuple[list[str], list[str]]:
        """(names, category codes) in parallel lists; codes as in the 2017-2020 export ("0" general)."""
        raw = self._raw
        objs = self._objects()
        if objs is not None:
            return [t.name for t in objs], [t.category for t in objs]
        if raw.tag_string is None and raw.tag_string_general is None:
            raise FieldError("missing_field", "no tags or tag_string")
        names: list[str] = []
        codes: list[str] = []
        for category, text in _tag_strings(raw).items():
            split = text.split()
            names += split
            codes += [CATEGORY_CODE[category]] * len(split)
        return names, codes

    def tag_names(self) -> set[str]:
        """Every tag of the post, whatever its category."""
        if self._tag_objects is None and bytes(self._raw.tags) != _NULL:
            # names only: skipping the other fields is cheaper, and most posts need no more
            try:
                return {t.name for t in _tag_names_decoder.decode(self._raw.tags)}
            except msgspec.ValidationError as e:
                raise FieldError("wrong_type", f"tags: {e}") from None
        objs = self._objects()
        if objs is not None:
            return {t.name for t in objs}
        return set(self.flat_tags()[0])

    def has_any_tag(self, names: frozenset[str], pattern: TagNamePattern) -> bool:
        """True if one of the post's tags is in `names`; `pattern` is TagNamePattern(names).

        Same answer as `not names.isdisjoint(self.tag_names())`, usually without decoding the tags:
        when the raw tags JSON holds no backslash, its strings are byte for byte their decoded values,
        so searching it for `"name": "<tag>"` decides the question (a "name" key only occurs inside
        tag objects). With an escape anywhere it decodes, as tag_names() does.
        """
        raw = bytes(self._raw.tags)
        if self._tag_objects is None and raw != _NULL and b"\\" not in raw:
            return pattern.search(raw)
        return not names.isdisjoint(self.tag_names())

    def tags(self) -> dict[str, list[str]]:
        """Tag names by category (general, character, copyright, artist, meta)."""
        out: dict[str, list[str]] = {c: [] for c in TAG_CATEGORIES}
        for name, code in zip(*self.flat_tags()):
            out[_CATEGORY_BY_CODE.get(code, "general")].append(name)
        return out

    def row(self) -> tuple:
        """Every field, each read once: (id, created_at, rating, width, height, file_ext, favs,
        score, md5, tag names, tag codes). Raises FieldError for the first unusable one."""
        return (self.id, self.created_at, self.rating, self.width, self.height, self.file_ext,
                self.favs, self.score, self._raw.md5, *self.flat_tags())

    def validate(self) -> None:
        """Read every field once, raising FieldError for the first unusable one."""
        self.row()


@dataclass(frozen=True)
class BadLine:
    """A metadata line that could not become a Post, with a reason code and detail."""

    reason: str  # malformed_json | wrong_type | missing_field | bad_value
    detail: str


class TagNamePattern:
    """Finds `"name": "<tag>"` in raw 2017-2020 tags JSON, for any tag in a set (see Post.has_any_tag).

    The tags are compiled into one regex shaped as a trie (`c(?:omic|um)`), which the regex engine
    walks far faster than a flat alternation. Danbooru writes its JSON compactly, so the search first
    looks for `"name":"<tag>"` with no spaces; a miss is final only if every "name" key in the bytes
    was written that way, else the whitespace-tolerant form decides.
    """

    def __init__(self, names: frozenset[str]):
        trie = _trie(sorted({n.encode() for n in names}))
        self.compact = re.compile(rb'"name":"' + trie + rb'"')
        self.spaced = re.compile(rb'"name"[ \t\r\n]*:[ \t\r\n]*"' + trie + rb'"')

    def search(self, raw: bytes) -> bool:
        if self.compact.search(raw) is not None:
            return True
        if raw.count(b'"name"') == raw.count(b'"name":"'):
            return False
        return self.spaced.search(raw) is not None


def _trie(words: list[bytes]) -> bytes:
    """A regex matching exactly `words` (sorted, distinct), factored by common prefixes."""
    groups: dict[bytes, list[bytes]] = {}
    ends = False
    for w in words:
        if w:
            groups.setdefault(w[:1], []).append(w[1:])
        else:
            ends = True
    alternatives = [re.escape(head) + _trie(rest) for head, rest in groups.items()]
    if not alternatives:
        return b""
    if len(alternatives) == 1 and not ends:
        return alternatives[0]
    body = b"(?:" + b"|".join(alternatives) + b")"
    return body + b"?" if ends else body


def parse_timestamp(text: str) -> int:
    """Danbooru timestamp ('2008-06-10 03:08:07.34205 UTC' or ISO 8601 with offset) to epoch µs."""
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    # float seconds hold microseconds exactly up to year ~2255; round() undoes the binary fraction
    return round(dt.timestamp() * 1_000_000)


def _int(value: int | str | None, field: str) -> int:
    if value is None:
        raise FieldError("missing_field", f"no {field}")
    if value.__class__ is int:
        return value  # type: ignore[return-value]
    try:
        return int(value)
    except ValueError:
        raise FieldError("bad_value", f"{field}={value[:40]!r} is not an integer") from None


def _tag_strings(raw: _RawPost) -> dict[str, str]:
    out = {
        "general": raw.tag_string_general or "",
        "character": raw.tag_string_character or "",
        "copyright": raw.tag_string_copyright or "",
        "artist": raw.tag_string_artist or "",
        "meta": raw.tag_string_meta or "",
    }
    if raw.tag_string and not any(out.values()):
        out["general"] = raw.tag_string  # some API responses carry only tag_string
    return out


def decode_line(line: bytes | memoryview) -> Post | BadLine:
    """One metadata line to a Post, or a BadLine saying why not. Never raises.

    Catches what is wrong with the line as a whole (not JSON, wrong types, a field missing); a
    value that is present but unusable ('wide' as a width) surfaces as FieldError when it is first
    read (see Post).
    """
    try:
        raw = _decoder.decode(line)
    except msgspec.ValidationError as e:
        return BadLine("wrong_type", str(e))
    except msgspec.DecodeError as e:
        return BadLine("malformed_json", str(e))
    # Presence is cheap to check for every line; only converting values is left until needed.
    if (raw.id is None or raw.created_at is None or raw.rating is None or raw.image_width is None
            or raw.image_height is None or raw.file_ext is None):
        name = next(n for n in _REQUIRED if getattr(raw, n) is None)
        return BadLine("missing_field", f"no {name}")
    if raw.favs == _RAW_NULL and raw.fav_count is None:
        return BadLine("missing_field", "no favs or fav_count")
    if raw.tags == _RAW_NULL and raw.tag_string is None and raw.tag_string_general is None:
        return BadLine("missing_field", "no tags or tag_string")
    return Post(raw)


_REQUIRED = ("id", "created_at", "rating", "image_width", "image_height", "file_ext")


def decode_post(line: bytes) -> Post:
    """decode_line() for callers that want every field checked now: raises FieldError."""
    post = decode_line(line)
    if isinstance(post, BadLine):
        raise FieldError(post.reason, post.detail)
    post.validate()
    return post


def image_path(post_id: int, file_ext: str) -> str:
    """Where Danbooru's layout keeps a post's original: original/<id % 1000, 4 digits>/<id>.<ext>."""
    return f"original/{post_id % 1000:04d}/{post_id}.{file_ext}"


# --------------------------------------------------------------------------------------------------
# Inputs and blocks

_METADATA_SUFFIXES = ("", ".json", ".jsonl", ".ndjson") + tuple(
    s + c for s in ("", ".json", ".jsonl") for c in COMPRESSED_SUFFIXES
)


def _looks_like_metadata(p: Path) -> bool:
    name = p.name.lower()
    if name.startswith(".") or not p.is_file():
        return False
    if name.endswith(".tar.xz") or name.endswith(".tar.gz"):
        return True
    if "." not in name:
        return True  # the 2017-2020 export: metadata/2018000000000000
    return any(name.endswith(s) for s in _METADATA_SUFFIXES if s)


def expand_inputs(paths: list[str | os.PathLike]) -> list[Path]:
    """Files named directly, plus the metadata files in named directories (a dump root's metadata/)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError(f"{p}: no such file or directory; pass metadata files or a folder holding them")
        if p.is_dir():
            folder = p / "metadata" if (p / "metadata").is_dir() else p
            found = sorted(f for f in folder.iterdir() if _looks_like_metadata(f))
            if not found:
                raise InputError(f"{p}: no metadata files in this folder (expected JSON lines, .json, .gz, .xz)")
            out.extend(found)
        else:
            out.append(p)
    return out


@dataclass
class Block:
    """A run of whole lines from one source: a byte range of a plain file, or shipped bytes."""

    source: str
    index: int  # position of this block within its source
    disk_bytes: int  # bytes of the on-disk input this block accounts for (progress)
    path: str | None = None
    start: int = 0
    end: int = 0
    data: bytes | None = None

    def read(self) -> bytes:
        """This block's bytes: shipped, or read from the plain file's byte range."""
        if self.data is not None:
            return self.data
        with open(self.path, "rb") as f:  # type: ignore[arg-type]
            f.seek(self.start)
            return f.read(self.end - self.start)


@dataclass
class InputProblem:
    """Something wrong with an input as a whole (empty, truncated, not an archive)."""

    file: str
    reason: str
    detail: str


def _plain_blocks(path: Path, block_bytes: int) -> Iterator[Block]:
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        while cuts[-1] + block_bytes < size:
            f.seek(cuts[-1] + block_bytes)
            f.readline()  # move to the start of the next whole line
            pos = f.tell()
            if pos >= size:
                break
            cuts.append(pos)
    cuts.append(size)
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        yield Block(str(path), i, b - a, path=str(path), start=a, end=b)


class _CountingReader:
    """Wraps a raw file so progress can report compressed bytes consumed."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self.consumed += len(b)
        return b

    def readable(self) -> bool:
        return True

    def __getattr__(self, name):
        return getattr(self._f, name)


def _decompressor(name: str, raw: _CountingReader) -> BinaryIO:
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    if name.endswith(".xz"):
        return lzma.LZMAFile(raw, "rb")  # type: ignore[arg-type]
    return bz2.BZ2File(raw, "rb")  # type: ignore[arg-type]


def _stream_pieces(
    stream: BinaryIO, source: str, counter: _CountingReader, block_bytes: int, problems: list[InputProblem]
) -> Iterator[Block]:
    """Cut a decompressed stream into whole-line pieces; a broken stream ends with a problem.

    Reads in small steps: a read that hits a truncation raises and loses what it decompressed,
    so a small step keeps all but the last megabyte before the damage.
    """
    step = min(block_bytes, 1 << 20)
    pending: list[bytes] = []
    size = 0
    index = 0
    reported = counter.consumed  # a tar's members share one counter
    while True:
        try:
            chunk = stream.read(step)
        except (EOFError, OSError, lzma.LZMAError) as e:  # truncated or corrupt compressed data
            problems.append(InputProblem(source, "truncated_or_corrupt", str(e) or type(e).__name__))
            chunk = b""
        if chunk:
            pending.append(chunk)
            size += len(chunk)
            if size < block_bytes:
                continue
        data = b"".join(pending)
        cut = len(data) if not chunk else data.rfind(b"\n") + 1
        if cut or not chunk:
            yield Block(source, index, counter.consumed - reported, data=data[:cut])
            reported = counter.consumed
            index += 1
        pending, size = ([data[cut:]], len(data) - cut) if chunk else ([], 0)
        if not chunk:
            return


def open_blocks(
    files: list[Path], problems: list[InputProblem], block_bytes: int = BLOCK_BYTES
) -> tuple[int, Iterator[Block]]:
    """(total on-disk bytes, iterator of blocks in input order). Whole-input problems go to `problems`."""
    total = sum(f.stat().st_size for f in files)

    def blocks() -> Iterator[Block]:
        for path in files:
            name = path.name.lower()
            if path.stat().st_size == 0:
                problems.append(InputProblem(str(path), "empty_file", "the file has no bytes"))
                continue
            if not (name.endswith(COMPRESSED_SUFFIXES)):
                yield from _plain_blocks(path, block_bytes)
                continue
            with open(path, "rb") as f:
                counter = _CountingReader(f)
                if name.endswith((".tar.xz", ".tar.gz")):
                    yield from _tar_blocks(path, counter, block_bytes, problems)
                else:
                    yield from _stream_pieces(
                        _decompressor(name, counter), str(path), counter, block_bytes, problems
                    )

    return total, blocks()


def _tar_blocks(
    path: Path, counter: _CountingReader, block_bytes: int, problems: list[InputProblem]
) -> Iterator[Block]:
    mode = "r|xz" if path.name.lower().endswith(".xz") else "r|gz"
    try:
        with tarfile.open(fileobj=counter, mode=mode) as tar:  # type: ignore[call-overload]
            for member in tar:
                if not member.isfile() or not _looks_like_member(member.name):
                    continue
                f = tar.extractfile(member)
                if f is not None:
                    yield from _stream_pieces(f, f"{path}:{member.name}", counter, block_bytes, problems)
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError) as e:
        problems.append(InputProblem(str(path), "truncated_or_corrupt", str(e) or type(e).__name__))


def _looks_like_member(name: str) -> bool:
    base = name.rsplit("/", 1)[-1].lower()
    return bool(base) and not base.startswith(".") and ("." not in base or base.endswith((".json", ".jsonl")))
