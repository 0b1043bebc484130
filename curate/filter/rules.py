"""Filter's per-post decisions: the rules, the per-line loop every runner shares, and the PostFilter unit.

`FilterRules.first_failure()` is the rule chain for one decoded post. `filter_lines()` is the hot
loop over a block's lines (views into its bytes, never copies) that the block runner calls;
`PostFilter` is the same loop over one line, for engines that hand over lines one at a time.
The rules that span inputs or touch the disk (duplicate ids, the image exists, an age window counted
back from the newest post) are the runner's: no single line can decide them.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from curate.filter.metadata import BadLine, FieldError, Post, TagNamePattern, decode_line, image_path
from curate.filter.tagsets import DEFAULT_EXCLUDE

# The order rules are checked in; a removed post is counted under the first rule it fails.
RULES = (
    "deleted", "banned", "file_ext", "rating", "too_small", "favs", "score",
    "since", "until", "require_tags", "any_tags", "exclude_tags",
    "max_age", "duplicate", "missing_file", "duplicate_file", "family_variant",
)
BAD_SAMPLES = 100
_US_PER_YEAR = int(365.2425 * 86400 * 1_000_000)

@dataclass(frozen=True)
class FilterRules:
    """Which posts to keep. Timestamps are microseconds since the epoch, UTC."""

    min_favs: int = 0
    min_score: int | None = None
    since: int | None = None
    until: int | None = None
    max_age_years: float | None = None
    as_of: int | None = None  # None: the newest created_at in the input
    require_tags: frozenset[str] = frozenset()
    any_tags: frozenset[str] = frozenset()
    exclude_tags: frozenset[str] = frozenset(DEFAULT_EXCLUDE)
    # Danbooru split "safe" into general and sensitive in 2022: s means safe in older dumps and
    # sensitive in newer ones, so {g, s} is "neither questionable nor explicit" in both.
    ratings: frozenset[str] = frozenset({"g", "s"})
    min_height: int = 512
    min_width: int = 256
    exts: frozenset[str] = frozenset({"jpg", "png"})
    drop_deleted: bool = True
    drop_banned: bool = True
    # Danbooru's variant groups (a parent and its children: colour variants, edits, revisions)
    # reduced to the most favourited post of each; the others count as family_variant.
    one_per_family: bool = False

    @property
    def needs_newest(self) -> bool:
        """True when the age window is anchored on the newest post, so every timestamp matters."""
        return self.max_age_years is not None and self.as_of is None

    def first_failure(self, post: Post) -> str | None:
        """The first rule (of those decidable from the post alone) that removes it, or None.

        Reads only the fields those rules need, in order; raises FieldError if one is unusable.
        """
        raw = post.raw  # the plain fields straight from the decoder: this runs for every post
        if raw.is_deleted and self.drop_deleted:
            return "deleted"
        if raw.is_banned and self.drop_banned:
            return "banned"
        if raw.file_ext not in self.exts and post.file_ext not in self.exts:  # as given, else lower-cased
            return "file_ext"
        if raw.rating not in self.ratings:
            return "rating"
        if post.height < self.min_height or post.width < self.min_width:
            return "too_small"
        if self.min_favs > 0 and post.favs < self.min_favs:  # no floor: read (and checked) only if kept
            return "favs"
        if self.min_score is not None and post.score < self.min_score:
            return "score"
        if self.since is not None and post.created_at < self.since:
            return "since"
        if self.until is not None and post.created_at >= self.until:
            return "until"
        if self.require_tags or self.any_tags:
            names = post.tag_names()
            if not self.require_tags <= names:
                return "require_tags"
            if self.any_tags and self.any_tags.isdisjoint(names):
                return "any_tags"
            if not self.exclude_tags.isdisjoint(names):
                return "exclude_tags"
        elif self.exclude_tags and post.has_any_tag(self.exclude_tags, self._exclude_pattern):
            return "exclude_tags"  # the common case, decided on the raw tag bytes (Post.has_any_tag)
        return None

    @functools.cached_property
    def _exclude_pattern(self) -> TagNamePattern:
        return TagNamePattern(self.exclude_tags)

    def age_cutoff(self, newest: int | None) -> int | None:
        """Oldest created_at kept by --max-age-years, counted back from as_of (or the newest post)."""
        if self.max_age_years is None:
            return None
        anchor = self.as_of if self.as_of is not None else newest
        if anchor is None:
            return None
        return anchor - int(self.max_age_years * _US_PER_YEAR)

    def to_json(self) -> dict[str, Any]:
        """The rules as plain JSON (sets sorted, timestamps as ISO strings)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if isinstance(v, frozenset):
                v = sorted(v)
            elif k in ("since", "until", "as_of") and v is not None:
                v = _iso(v)
            out[k] = v
        return out


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat()


@dataclass
class BlockResult:
    """What one block contributed: counts, the first bad lines, and the kept rows as columns."""

    source: str
    index: int
    disk_bytes: int
    lines: int = 0
    blank: int = 0
    posts: int = 0
    newest: int | None = None
    removed: Counter = field(default_factory=Counter)
    bad: Counter = field(default_factory=Counter)
    bad_samples: list[tuple[int, str, str]] = field(default_factory=list)  # (line in block, reason, detail)
    kept: pa.Table | None = None  # built in the worker: Arrow conversion is the costly part of output


_SCALARS = ("id", "path", "width", "height", "favs", "score", "created_at", "rating", "file_ext", "md5",
            "parent_id", "pixel_hash")


def _append_row(rows: dict[str, list], row: tuple) -> None:
    post_id, created_at, rating, width, height, file_ext, favs, score, md5, parent_id, pixel_hash, names, codes = row
    rows["id"].append(post_id)
    rows["path"].append(image_path(post_id, file_ext))
    rows["width"].append(width)
    rows["height"].append(height)
    rows["favs"].append(favs)
    rows["score"].append(score)
    rows["created_at"].append(created_at)
    rows["rating"].append(rating)
    rows["file_ext"].append(file_ext)
    rows["md5"].append(md5)
    rows["parent_id"].append(parent_id)
    rows["pixel_hash"].append(pixel_hash)
    rows["tag_names"].append(names)
    rows["tag_codes"].append(codes)


_WHITESPACE = (32, 9, 13)  # space, tab, carriage return


def filter_lines(data: bytes, rules: FilterRules, res: BlockResult, rows: dict[str, list],
                 start: int = 0, end: int | None = None) -> None:
    """The per-line loop of filter_block over data[start:end]: lines are views into `data` (bytes, or
    an mmap of the input file), never copies."""
    view = memoryview(data)
    end = len(data) if end is None else end
    newest = None
    track_newest = rules.needs_newest
    first_failure = rules.first_failure
    find = data.find
    removed: dict[str, int] = {}
    pos, i, posts = start, 0, 0
    while pos < end:
        nl = find(b"\n", pos, end)
        if nl < 0:
            nl = end
        line = view[pos:nl]
        pos = nl + 1
        i += 1
        if not line or (line[0] in _WHITESPACE and not bytes(line).strip()):
            res.blank += 1
            continue
        post = decode_line(line)
        if post.__class__ is BadLine:
            _bad(res, i - 1, post.reason, post.detail)  # type: ignore[union-attr]
            continue
        try:
            failed = first_failure(post)  # type: ignore[arg-type]
            row = post.row() if failed is None else None  # type: ignore[union-attr]  # kept: check all
            if track_newest:
                created = post.created_at  # type: ignore[union-attr]
                if newest is None or created > newest:
                    newest = created
        except FieldError as e:
            _bad(res, i - 1, e.reason, e.detail)
            continue
        posts += 1
        if failed:
            removed[failed] = removed.get(failed, 0) + 1
        else:
            _append_row(rows, row)  # type: ignore[arg-type]
    res.posts += posts
    res.removed.update(removed)
    res.lines = i
    res.newest = newest


class SameFile:
    """The duplicate_file rule over the posts that reached it, in input order: a post whose md5 an
    earlier one had is a copy; then, of the others, one whose pixel_hash an earlier one had.

    Two steps, not one union of both keys, so that each engine can decide it by grouping on one key
    at a time (curate.beam.filter does: by md5, then by pixel_hash) and both keep the same posts.
    """

    def __init__(self) -> None:
        self.md5s: set[str] = set()
        self.pixels: set[str] = set()

    def is_copy(self, md5: str | None, pixel_hash: str | None) -> bool:
        if md5:
            if md5 in self.md5s:
                return True
            self.md5s.add(md5)
        if pixel_hash:
            if pixel_hash in self.pixels:
                return True
            self.pixels.add(pixel_hash)
        return False


def family_winners(ids, parents, favs):
    """--one-per-family: the ids kept of posts (ids, parent ids or None, favourites), one per family.

    A family is a parent and its children (family id: the parent_id, or the post's own id when it has
    none); its most favourited post is kept, a tie going to the lowest id (usually the parent, the
    first upload). Danbooru groups are one level deep; a grandchild counts with its own parent.
    Pure NumPy over arrays, so an engine can decide one family or a whole table the same way.
    """
    import numpy as np

    ids = np.asarray(ids, dtype=np.int64)
    parents = np.asarray([0 if p is None else p for p in parents], dtype=np.int64)
    favs = np.asarray(favs, dtype=np.int64)
    family = np.where(parents > 0, parents, ids)
    order = np.lexsort((ids, -favs, family))  # by family, then most favourited, then lowest id
    first = np.ones(len(order), dtype=bool)
    first[1:] = family[order][1:] != family[order][:-1]
    return ids[order][first]


def _bad(res: BlockResult, i: int, reason: str, detail: str) -> None:
    res.bad[reason] += 1
    if len(res.bad_samples) < BAD_SAMPLES:
        res.bad_samples.append((i, reason, detail[:200]))




ROW_KEYS = _SCALARS + ("tag_names", "tag_codes")


class PostFilter:
    """The per-post unit: one metadata line (bytes) -> (row, None, "") if kept, else (None, reason, detail).

    The row is the block path's: the scalar columns plus `tag_names` / `tag_codes`, which the runner
    splits per category. The reason is the first rule that removed the post (RULES), a bad line's
    reason (malformed_json, wrong_type, missing_field, bad_value) or "blank". An age window with a
    fixed anchor (`as_of`) is applied too; duplicates, missing images and an age window anchored on
    the newest post need the whole input and stay with the runner. Never raises for a bad line.
    """

    def __init__(self, rules: FilterRules):
        self.rules = rules
        self.cutoff = None if rules.needs_newest else rules.age_cutoff(None)

    def __call__(self, line: bytes) -> tuple[dict[str, Any] | None, str | None, str]:
        row, reason, detail, _ = self.verdict(line)
        return row, reason, detail

    def verdict(self, line: bytes) -> tuple[dict[str, Any] | None, str | None, str, int | None]:
        """__call__'s answer plus the post's created_at when the rules track the newest post (else None):
        what an engine needs to anchor an age window on the newest post of the whole input."""
        data = bytes(line)
        nl = data.find(b"\n")
        if nl >= 0:
            if data[nl + 1:].strip():
                return None, "malformed_json", "more than one line", None
            data = data[:nl]
        if not data.strip():
            return None, "blank", "", None
        res = BlockResult("", 0, len(data))
        rows: dict[str, list] = {k: [] for k in ROW_KEYS}
        filter_lines(data, self.rules, res, rows)  # the block path's own loop, over one line
        if res.bad_samples:
            _, reason, detail = res.bad_samples[0]
            return None, reason, detail, None
        if res.removed:
            return None, next(iter(res.removed)), "", res.newest
        row = {k: v[0] for k, v in rows.items()}
        if self.cutoff is not None and row["created_at"] < self.cutoff:
            return None, "max_age", "", res.newest
        return row, None, "", res.newest
