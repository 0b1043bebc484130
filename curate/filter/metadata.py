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
import contextlib
import errno
import lzma
import mmap
import os
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

import msgspec

from curate.core.errors import InputError, is_environment_error
from curate.core.location import RemotePath, as_location, is_url

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
    # Variant groups and same-picture checks (filter's one-per-family and duplicate_file rules):
    # parent_id is "0" (2017-2020) or null (API) for a post without a parent; pixel_hash (a hash of
    # the decoded pixels) is carried by newer dumps at the top level or inside media_asset, and is
    # decoded only for kept posts.
    parent_id: int | str | None = None
    pixel_hash: str | None = None
    media_asset: msgspec.Raw = msgspec.Raw(b"null")
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


class _MediaAsset(msgspec.Struct, gc=False):
    pixel_hash: str | None = None


_media_asset_decoder = msgspec.json.Decoder(_MediaAsset | None)
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
                created = parse_timestamp(text)
            except (ValueError, OverflowError):
                raise FieldError("bad_value", f"created_at={text[:40]!r} is not a timestamp") from None
            if not CREATED_MIN <= created < CREATED_MAX:
                raise FieldError("bad_value", f"created_at={text[:40]!r} is outside {_CREATED_RANGE}")
            self._created_at = created
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
            return _decoded(_count_favs, fav_json, "favs")
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

    @property
    def parent_id(self) -> int | None:
        """The post's parent in its variant group (Danbooru's parent_id), None for no parent ("0" or null)."""
        value = self._raw.parent_id
        if value is None or value == "" or value == 0 or value == "0":
            return None
        parent = _int(value, "parent_id")
        if not 0 < parent < _INT64:
            raise FieldError("bad_value", f"parent_id={_number(parent)} is not a positive 64-bit integer")
        return parent

    @property
    def pixel_hash(self) -> str | None:
        """A hash of the decoded pixels where the dump has one (top level, or media_asset.pixel_hash)."""
        if self._raw.pixel_hash is not None:
            return self._raw.pixel_hash or None
        if bytes(self._raw.media_asset) == _NULL:
            return None
        asset = _decoded(_media_asset_decoder.decode, self._raw.media_asset, "media_asset")
        return asset.pixel_hash or None if asset is not None else None

    def _objects(self) -> list[_Tag] | None:
        """The 2017-2020 tag objects, decoded once; None for the API form."""
        if self._tag_objects is None:
            if bytes(self._raw.tags) == _NULL:
                return None
            self._tag_objects = _decoded(_tags_decoder.decode, self._raw.tags, "tags")
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
            return {t.name for t in _decoded(_tag_names_decoder.decode, self._raw.tags, "tags")}
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
        score, md5, parent_id, pixel_hash, tag names, tag codes). Raises FieldError for the first unusable one."""
        row = (self.id, self.created_at, self.rating, self.width, self.height, self.file_ext,
               self.favs, self.score, self._raw.md5, self.parent_id, self.pixel_hash, *self.flat_tags())
        # Only rows that are kept get here, so the range checks cost nothing on the posts removed
        # earlier; they keep an absurd number from overflowing its column when the rows are converted.
        if not (0 < row[0] < _INT64 and 0 < row[3] < _INT32 and 0 < row[4] < _INT32
                and 0 <= row[6] < _INT32 and -_INT32 <= row[7] < _INT32):
            raise FieldError("bad_value", _out_of_range(row))
        return row

    def validate(self) -> None:
        """Read every field once, raising FieldError for the first unusable one."""
        self.row()


@dataclass(frozen=True)
class BadLine:
    """A metadata line that could not become a Post, with a reason code and detail."""

    reason: str  # malformed_json (not JSON, or not UTF-8) | wrong_type | missing_field | bad_value
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


# The values a kept row may hold: ids are positive int64, sizes and counts fit their int32 columns.
_INT64 = 1 << 63
_INT32 = 1 << 31
# created_at outside these years is a corrupt line, not a post: Danbooru opened in May 2005, and the
# bound is fixed (not "now") so that the same input always gives the same output.
CREATED_MIN = 1_104_537_600_000_000  # 2005-01-01T00:00:00Z, µs
CREATED_MAX = 4_102_444_800_000_000  # 2100-01-01T00:00:00Z, µs
_CREATED_RANGE = "2005-01-01 .. 2099-12-31 (Danbooru opened in 2005)"


def _out_of_range(row: tuple) -> str:
    """Which value of a row is outside its column's range, for the bad line's detail."""
    post_id, _, _, width, height, _, favs, score = row[:8]
    if not 0 < post_id < _INT64:
        return f"id={_number(post_id)} is not a positive 64-bit integer"
    for name, value, low in (("image_width", width, 1), ("image_height", height, 1), ("favs", favs, 0),
                             ("score", score, -_INT32)):
        if not low <= value < _INT32:
            return f"{name}={_number(value)} is outside {low}..{_INT32 - 1}"
    return "a value is out of range"


def _number(value: int) -> str:
    # a JSON integer can have any number of digits, more than str() will convert (sys.int_info)
    return str(value) if value.bit_length() < 256 else f"<a {value.bit_length()}-bit integer>"


_TOO_DEEP = "nested too deeply to decode"


def _utf8_detail(e: UnicodeDecodeError) -> str:
    return f"invalid UTF-8 ({e.reason}, byte {e.object[e.start:e.start + 1]!r})"


def _decoded(decode, raw, field: str):
    """decode(raw) for a field left raw by the line decoder; what is wrong with it as a FieldError."""
    try:
        return decode(raw)
    except msgspec.ValidationError as e:
        raise FieldError("wrong_type", f"{field}: {e}") from None
    except UnicodeDecodeError as e:
        raise FieldError("malformed_json", f"{field}: {_utf8_detail(e)}") from None
    except RecursionError:
        raise FieldError("malformed_json", f"{field}: {_TOO_DEEP}") from None


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
        if line[:3] == _BOM:  # a byte-order mark before a file's first line: the line itself may be fine
            return decode_line(line[3:])
        return BadLine("malformed_json", str(e))
    except UnicodeDecodeError as e:  # JSON is UTF-8 (RFC 8259): a string that is not is malformed
        return BadLine("malformed_json", _utf8_detail(e))
    except RecursionError:
        return BadLine("malformed_json", _TOO_DEEP)
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
_BOM = b"\xef\xbb\xbf"


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


def _named_like_metadata(name: str) -> bool:
    """Whether a folder entry's name is one a metadata file has (hidden names never are)."""
    name = name.lower()
    if name.startswith("."):
        return False
    if name.endswith(".tar.xz") or name.endswith(".tar.gz"):
        return True
    if "." not in name:
        return True  # the 2017-2020 export: metadata/2018000000000000
    return any(name.endswith(s) for s in _METADATA_SUFFIXES if s)


@dataclass
class InputProblem:
    """Something wrong with an input as a whole (empty, truncated, not a file, unreadable)."""

    file: str
    reason: str  # empty_file | truncated_or_corrupt | broken_link | not_a_file | unreadable
    detail: str


def _open(path: "str | os.PathLike | RemotePath") -> BinaryIO:
    """A binary reader of a local file or an object (curate.core.location)."""
    where = as_location(path)
    return where.open("rb") if isinstance(where, RemotePath) else open(where, "rb")


def _unusable(path: "Path | RemotePath") -> tuple[str, str] | None:
    """(reason, detail) if `path` is not a regular file this process can read, else None.

    Environment errors (an I/O error, no file descriptors left) are raised: they are the machine's
    fault, not the file's, and the stage must stop rather than skip the file.
    """
    if isinstance(path, RemotePath):  # an object store holds objects and prefixes, nothing else
        return None if path.is_file() else ("not_a_file", "a prefix (folder), not an object")
    try:
        st = os.stat(path)
    except OSError as e:
        if is_environment_error(e):
            raise
        if path.is_symlink():
            target = os.readlink(path)
            if e.errno == errno.ELOOP:
                return "broken_link", f"a symbolic link loop (-> {target})"
            return "broken_link", f"a symbolic link to {target}, which does not exist"
        return "unreadable", e.strerror or str(e)
    if stat.S_ISDIR(st.st_mode):
        return "not_a_file", "a folder"
    if not stat.S_ISREG(st.st_mode):
        return "not_a_file", "not a regular file (a pipe, socket or device)"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if is_environment_error(e):
            raise
        return "unreadable", e.strerror or str(e)
    os.close(fd)
    return None


def expand_inputs(paths: list[str | os.PathLike], problems: list[InputProblem] | None = None) -> list[Path]:
    """Files named directly, plus the metadata files in named directories (a dump root's metadata/).

    A file named directly that cannot be read stops the stage with one line (InputError). In a folder,
    an entry named like metadata that is not a readable file (a dangling link, a folder or pipe named
    x.json, a file without read permission) is recorded in `problems` as broken_link, not_a_file or
    unreadable, and the others are read. Hidden entries, other names and plain subfolders are not
    metadata and are passed over.
    """
    out: list[Path] = []
    for raw in paths:
        p = as_location(raw)
        if not p.exists():
            if p.is_symlink():
                raise InputError(f"{p}: a symbolic link to {os.readlink(p)}, which does not exist")
            raise InputError(f"{p}: no such file or directory; pass metadata files or a folder holding them")
        if p.is_dir():
            folder = p / "metadata" if (p / "metadata").is_dir() else p
            found: list[Path] = []
            skipped: list[InputProblem] = []
            for f in sorted(folder.iterdir()):
                if not _named_like_metadata(f.name):
                    continue
                problem = _unusable(f)
                if problem is None:
                    found.append(f)
                elif not (problem[0] == "not_a_file" and f.is_dir() and "." not in f.name):
                    skipped.append(InputProblem(str(f), *problem))  # a plain subfolder is not a problem
            if not found:
                why = f" ({skipped[0].file}: {skipped[0].detail})" if skipped else ""
                raise InputError(f"{p}: no readable metadata files in this folder{why}; "
                                 "expected JSON lines, .json, .gz, .xz")
            if problems is not None:
                problems.extend(skipped)
            out.extend(found)
        else:
            problem = _unusable(p)
            if problem is not None:
                raise InputError(f"{p}: {problem[1]}; pass a readable metadata file")
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
        with _open(self.path) as f:  # type: ignore[arg-type]
            f.seek(self.start)
            return f.read(self.end - self.start)

    @contextlib.contextmanager
    def mapped(self) -> Iterator[tuple[bytes | mmap.mmap, int, int]]:
        """(buffer, start, end): this block is buffer[start:end]. A plain file's range is mapped, not
        read: the lines are then views of the page cache, and 32 MB are neither copied nor zeroed."""
        if self.data is not None:
            yield self.data, 0, len(self.data)
            return
        if self.end <= self.start:
            yield b"", 0, 0
            return
        if is_url(self.path):  # an object: one ranged read
            data = self.read()
            yield data, 0, len(data)
            return
        try:
            with open(self.path, "rb") as f:  # type: ignore[arg-type]
                m = mmap.mmap(f.fileno(), self.end, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:  # a file system that cannot map files: read the range instead
            if isinstance(e, OSError) and is_environment_error(e):
                raise
            m = None
        if m is None:
            data = self.read()
            yield data, 0, len(data)
            return
        try:
            with contextlib.suppress(AttributeError, OSError):  # read ahead: the block is read in order
                m.madvise(mmap.MADV_SEQUENTIAL, self.start - self.start % mmap.PAGESIZE,
                          self.end - (self.start - self.start % mmap.PAGESIZE))
            yield m, self.start, self.end
        finally:
            with contextlib.suppress(BufferError):  # a view still alive somewhere: unmapped when it goes
                m.close()


def _plain_blocks(path: Path, block_bytes: int) -> Iterator[Block]:
    size = path.stat().st_size
    cuts = [0]
    with _open(path) as f:
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


_CODEC_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


class _Decompressed:
    """A .gz, .xz or .bz2 stream, decompressed as it is read, that keeps every byte before damage.

    The stdlib's GzipFile, LZMAFile and BZ2File raise when a stream is truncated and drop what that
    read had decompressed: with reads of a megabyte, a small damaged file gave nothing at all. Here a
    read returns what has decompressed so far, and only the read after it raises (EOFError for a
    truncated stream, the codec's error for a corrupt one). Concatenated streams (pigz, pbzip2, xz
    -T) are read one after another, as those classes do, and zero padding between them is skipped.
    """

    _CHUNK = 1 << 16  # compressed bytes per decompress call: bounds the memory one call can take

    def __init__(self, raw: BinaryIO, kind: str):
        self._raw = raw
        self._kind = kind
        self._codec = self._new()
        self._streams = 0  # streams finished
        self._fed = False  # whether the current stream has been given any bytes
        self._buf = b""
        self._pos = 0
        self._done = False
        self._error: BaseException | None = None

    def _new(self):
        if self._kind == "gz":
            return zlib.decompressobj(wbits=31)  # the gzip wrapper, its CRC checked at each member's end
        if self._kind == "xz":
            return lzma.LZMADecompressor()
        return bz2.BZ2Decompressor()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        while self._pos >= len(self._buf) and not self._done:
            self._refill()
        data = self._buf[self._pos:self._pos + n]
        self._pos += len(data)
        if not data and self._error is not None:
            error, self._error = self._error, None  # raised once; later reads see the end
            raise error
        return data

    def _refill(self) -> None:
        """Decompress the next piece into the buffer, or mark the end (and any damage) of the data."""
        if self._codec.eof:  # a stream ended: another may follow it in the same file
            pending = self._codec.unused_data
            self._codec = self._new()
            self._streams += 1
            self._fed = False
        else:
            pending = b""
        chunk = pending or self._raw.read(self._CHUNK)
        if not chunk:
            self._done = True
            if self._fed:
                self._error = EOFError("compressed data ends before the end of the stream (truncated)")
            return
        if self._streams and not self._fed:
            chunk = chunk.lstrip(b"\0")
            if not chunk:
                return  # padding between streams: read on
        self._fed = True
        try:
            out = self._codec.decompress(chunk)
        except _CODEC_ERRORS as e:
            if is_environment_error(e):
                raise
            self._done = True
            self._error = e
            return
        self._buf, self._pos = out, 0


def _stream_pieces(
    stream: BinaryIO, source: str, counter: _CountingReader, block_bytes: int, problems: list[InputProblem]
) -> Iterator[Block]:
    """Cut a decompressed stream into whole-line pieces; a broken stream ends with a problem.

    A damaged stream keeps every line before the damage: `_Decompressed` returns all it could
    decompress before it raises. (A tar member's reads go through tarfile, which drops the read that
    meets the damage: small reads keep that loss under one step.)
    """
    step = min(block_bytes, 1 << 16)
    pending: list[bytes] = []
    size = 0
    index = 0
    reported = counter.consumed  # a tar's members share one counter
    while True:
        try:
            chunk = stream.read(step)
        except (*_CODEC_ERRORS, tarfile.TarError) as e:  # truncated or corrupt compressed data
            if is_environment_error(e):
                raise
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


def _kind(name: str) -> str:
    return "gz" if name.endswith(".gz") else "xz" if name.endswith(".xz") else "bz2"


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
            with _open(path) as f:
                counter = _CountingReader(f)
                stream = _Decompressed(counter, _kind(name))
                if name.endswith((".tar.xz", ".tar.gz")):
                    yield from _tar_blocks(path, stream, counter, block_bytes, problems)
                else:
                    yield from _stream_pieces(stream, str(path), counter, block_bytes, problems)

    return total, blocks()


def _tar_blocks(
    path: Path, stream: _Decompressed, counter: _CountingReader, block_bytes: int, problems: list[InputProblem]
) -> Iterator[Block]:
    before = len(problems)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                if not member.isfile() or not _looks_like_member(member.name):
                    continue
                f = tar.extractfile(member)
                if f is not None:
                    yield from _stream_pieces(f, f"{path}:{member.name}", counter, block_bytes, problems)
    except (*_CODEC_ERRORS, tarfile.TarError) as e:
        if is_environment_error(e):
            raise
        if len(problems) == before:  # a damaged member already said so
            problems.append(InputProblem(str(path), "truncated_or_corrupt", str(e) or type(e).__name__))


def _looks_like_member(name: str) -> bool:
    base = name.rsplit("/", 1)[-1].lower()
    return bool(base) and not base.startswith(".") and ("." not in base or base.endswith((".json", ".jsonl")))
