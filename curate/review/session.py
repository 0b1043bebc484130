"""Stage 4, review: a person rejects bad crops by hand; every decision lands in WORKDIR/review.sqlite.

Pieces, each usable without the web server (`curate/review_app.py` is a thin layer over them):

- `CropIndex`: the crops table (and the scores table when present) loaded once into flat arrays, with
  sort orders computed once; a page is a numpy mask and a slice, so 100k crops cost a few ms.
- `DecisionStore`: the append-only decision log (curate.core.workdir.REVIEW_SQL) in SQLite WAL mode; each
  action is one transaction, committed before the caller hears back, so a killed server loses nothing.
- `ReviewSession`: the index + the store + the current status of every crop + the undo stack. An undo
  appends rows restoring the statuses an action replaced; the stack is rebuilt from the log on start.
- `ThumbnailCache` / `render_thumbnail()`: small JPEGs made on first request and kept under
  WORKDIR/.thumbs/; only crops listed in the table are ever read, never a path from a request.
- `export_rows()` and `contact_sheet()`: decisions as rows for CSV/JSON, and a static PNG sheet.
- `read_log()` and `log_failure()` (from curate.core.reviewlog, shared with pack): the log read on any
  disk (read-only media too), and a SQLite failure as one line naming the database and the cause.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.core.errors import InputError
from curate.core.reviewlog import log_failure, read_log
from curate.core.workdir import REVIEW_SQL, REVIEW_STATUSES, Workdir

SORTS = {
    "reject": "most likely rejected first (the reject model)",
    "unusual": "the score stage's rejections, then the most unusual crops, first (no decisions needed)",
    "score": "person score, lowest (most doubtful) first",
    "-score": "person score, highest first",
    "table": "crops table order",
    "group": "near-duplicate groups side by side (curate dedup: the kept crop first), then the rest",
}
# Crops the score stage kept carry no reason; these labels stand in so the filter can name them.
KEPT_LABEL, UNSCORED_LABEL = "kept", "unscored"
THUMB_SIZE = (128, 256)  # width x height: half the 256x512 crop, sharp enough for tiles up to ~192 px
UNDO_DEPTH = 1000  # actions remembered for `u`; older ones stay in the log but are not undoable
MAX_PAGE = 1000


class ReviewInputError(InputError):
    """The workdir cannot be reviewed (no crops table, missing columns): misuse, not bad data."""


def latest_statuses(db: Path) -> dict[str, str]:
    """crop_id -> its latest review status, read with `read_log` (so also from read-only media)."""
    return dict(read_log(db, "SELECT crop_id, status FROM decisions ORDER BY seq"))


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds (the log's decided_at)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class CropIndex:
    """The crops (and their scores) as flat arrays in crops-table order; built once by `load_index`."""

    crop_ids: list[str]
    files: pa.Array  # string, relative to the workdir
    post_ids: np.ndarray  # int64, -1 where null
    scores: np.ndarray  # float32 person score, NaN where unscored
    labels: np.ndarray  # int16 index into label_names: the score stage's reason, "kept" or "unscored"
    label_names: list[str]
    top_tags: pa.Array | None  # list<string> per crop, or None without a scores table
    position: dict[str, int]  # crop_id -> row
    duplicates: int  # rows dropped because their crop_id was already listed
    group_rank: np.ndarray  # int64 sort key of the "group" order: dedup's groups first, each kept crop then its twins
    token: str  # changes when crops.parquet or scores.parquet changes: a cache-busting version
    landmarks: np.ndarray | None = None  # [N, 5, 2] eyes, nose, mouth, chin as crop fractions; NaN: none

    def __len__(self) -> int:
        return len(self.crop_ids)

    def order(self, sort: str) -> np.ndarray:
        """Rows in the given sort order (computed once per sort key)."""
        cache = self.__dict__.setdefault("_orders", {})
        if sort not in cache:
            if sort == "table":
                cache[sort] = np.arange(len(self), dtype=np.int32)
            elif sort == "group":
                cache[sort] = np.argsort(self.group_rank, kind="stable").astype(np.int32)
            else:
                key = self.scores if sort == "score" else -self.scores
                # stable, and NaN (unscored) sorts last either way
                cache[sort] = np.argsort(key, kind="stable").astype(np.int32)
        return cache[sort]

    def item(self, row: int) -> dict[str, Any]:
        """What the grid shows about one crop."""
        score = float(self.scores[row])
        tags = self.top_tags[row].as_py() if self.top_tags is not None else None
        return {
            "row": int(row),
            "crop_id": self.crop_ids[row],
            "post_id": int(self.post_ids[row]) if self.post_ids[row] >= 0 else None,
            "score": None if np.isnan(score) else round(score, 4),
            "label": self.label_names[self.labels[row]],
            "top_tags": (tags or [])[:8],
            "landmarks": self._landmarks(row),
        }

    def _landmarks(self, row: int) -> list[list[float]] | None:
        if self.landmarks is None or np.isnan(self.landmarks[row]).all():
            return None
        return [[round(float(x), 4), round(float(y), 4)] for x, y in self.landmarks[row] if not np.isnan(x)]


def _table_token(*paths: Path) -> str:
    h = hashlib.sha1()
    for p in paths:
        if p.exists():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def load_index(workdir: Workdir) -> CropIndex:
    """Read the crops table and (if present) the scores table into a `CropIndex`."""
    if not workdir.crops_table.exists():
        raise ReviewInputError(f"{workdir.root} has no crops.parquet; run `curate crop` into this workdir first")
    try:
        crops = pq.read_table(workdir.crops_table, columns=["crop_id", "post_id", "file"])
    except (pa.ArrowInvalid, KeyError, OSError) as e:
        raise ReviewInputError(f"{workdir.crops_table} is not a crops table ({e})") from None
    # A crop listed twice would get two tiles and one status: keep the first, count the rest.
    ids = crops.column("crop_id").to_pylist()
    position: dict[str, int] = {}
    keep = []
    for row, cid in enumerate(ids):
        if cid is not None and cid not in position:
            position[cid] = len(keep)
            keep.append(row)
    duplicates = len(ids) - len(keep)
    if duplicates:
        crops = crops.take(pa.array(keep, pa.int64()))
        ids = [ids[r] for r in keep]

    n = crops.num_rows
    post_ids = crops.column("post_id").fill_null(-1).to_numpy().astype(np.int64)
    scores = np.full(n, np.nan, dtype=np.float32)
    label_texts: pa.Array = pa.array([UNSCORED_LABEL] * n, pa.string())
    top_tags = None
    if workdir.scores_table.exists():
        try:
            s = pq.read_table(workdir.scores_table, columns=["crop_id", "person", "top_tags", "kept", "reason"])
        except (pa.ArrowInvalid, KeyError, OSError) as e:
            raise ReviewInputError(f"{workdir.scores_table} is not a scores table ({e})") from None
        # index_in keeps crops-table order; a crop without a score row gets nulls from take().
        at = pc.index_in(crops.column("crop_id"), value_set=s.column("crop_id"))
        s = s.take(at)
        scores = s.column("person").cast(pa.float32()).fill_null(np.nan).to_numpy().astype(np.float32)
        kept = s.column("kept")
        reason = pc.if_else(pc.fill_null(kept, False), KEPT_LABEL, s.column("reason"))
        reason = pc.if_else(pc.is_null(kept), UNSCORED_LABEL, pc.fill_null(reason, "rejected"))
        label_texts = reason.combine_chunks() if isinstance(reason, pa.ChunkedArray) else reason
        top_tags = s.column("top_tags").combine_chunks()
    encoded = pc.dictionary_encode(label_texts)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    label_names = encoded.dictionary.to_pylist()
    labels = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int16)

    return CropIndex(
        landmarks=_landmark_fractions(workdir, crops, keep if duplicates else None),
        group_rank=_group_rank(workdir, ids),
        crop_ids=ids,
        files=crops.column("file").combine_chunks(),
        post_ids=post_ids,
        scores=scores,
        labels=labels,
        label_names=label_names,
        top_tags=top_tags,
        position=position,
        duplicates=duplicates,
        token=_table_token(workdir.crops_table, workdir.scores_table, workdir.dedup_table),
    )


LANDMARK_POINTS = ("left_eye", "right_eye", "nose", "mouth", "chin")


def _landmark_fractions(workdir: Workdir, crops: pa.Table, keep: list[int] | None) -> np.ndarray | None:
    """AnimeFace's points (source pixels, in crops.parquet after `--detector animeface|both`) as fractions of
    each crop, so the grid can draw them over a thumbnail; None for a table without landmarks.

    An aligned crop (crop_angle != 0) is its box turned about its centre by that angle: a point is turned
    back by it into the crop's own frame, where the eyes then lie level."""
    names = set(pq.read_schema(workdir.crops_table).names)
    wanted = [f"{p}_{a}" for p in LANDMARK_POINTS for a in "xy"]
    if not set(wanted) <= names:
        return None
    cols = ["crop_x", "crop_y", "crop_w", "crop_h", *wanted] + (["crop_angle"] if "crop_angle" in names else [])
    t = pq.read_table(workdir.crops_table, columns=cols)
    if keep is not None:
        t = t.take(pa.array(keep, pa.int64()))
    num = {c: t.column(c).cast(pa.float64()).fill_null(np.nan).to_numpy() for c in cols}
    w, h = np.maximum(num["crop_w"], 1), np.maximum(num["crop_h"], 1)
    cx, cy = num["crop_x"] + w / 2, num["crop_y"] + h / 2
    a = np.radians(np.nan_to_num(num.get("crop_angle", np.zeros(len(w)))))
    out = np.full((len(w), len(LANDMARK_POINTS), 2), np.nan, np.float32)
    for k, p in enumerate(LANDMARK_POINTS):
        dx, dy = num[f"{p}_x"] - cx, num[f"{p}_y"] - cy
        out[:, k, 0] = (dx * np.cos(a) + dy * np.sin(a)) / w + 0.5
        out[:, k, 1] = (-dx * np.sin(a) + dy * np.cos(a)) / h + 0.5
    return out


def _group_rank(workdir: Workdir, ids: list[str]) -> np.ndarray:
    """Each crop's place in the "group" order: dedup's groups (largest first), the kept crop of each
    first and its twins by distance; the crops in no group after them, in table order."""
    n = len(ids)
    rank = np.arange(n, dtype=np.int64) + n  # no group: after every grouped crop
    if not workdir.dedup_table.exists():
        return rank
    try:
        rows = pq.read_table(workdir.dedup_table, columns=["crop_id", "distance", "group"]).to_pylist()
    except (pa.ArrowInvalid, KeyError, OSError) as e:
        raise ReviewInputError(f"{workdir.dedup_table} is not a dedup table ({e}); rerun 'curate dedup'") from None
    members: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        if r["group"] is not None:
            members.setdefault(r["group"], []).append((-1 if r["distance"] is None else r["distance"], r["crop_id"]))
    at = {c: i for i, c in enumerate(ids)}
    place = 0
    for _, group in sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        for _, crop in sorted(group):
            if crop in at:  # a dedup table older than the crops may name crops that are gone
                rank[at[crop]] = place
                place += 1
    return rank


class DecisionStore:
    """The append-only review log in SQLite (WAL); safe to share between threads."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as e:
            raise log_failure(e, self.path) from None
        try:
            self._con.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit survives power loss too, not only a killed process; a person decides
            # a few times a second, far below what an fsync per action allows.
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.executescript(REVIEW_SQL)
        except sqlite3.Error as e:
            self._con.close()
            raise log_failure(e, self.path) from None

    def append(self, rows: Iterable[tuple[str, str]], origin: str, decided_at: str | None = None) -> str:
        """Write (crop_id, status) rows as one committed transaction; returns their timestamp.

        Raises a one-line CurateError (log_failure) when the log cannot be written, e.g. a full disk;
        nothing of the transaction is kept then, and a later append works once there is room again.
        """
        decided_at = decided_at or utc_now()
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.executemany(
                    "INSERT INTO decisions (crop_id, status, decided_at, origin) VALUES (?, ?, ?, ?)",
                    [(c, s, decided_at, origin) for c, s in rows],
                )
                self._con.execute("COMMIT")
            except BaseException as e:
                # SQLite may have rolled back already (it does on SQLITE_FULL): only end a live one.
                if self._con.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._con.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise log_failure(e, self.path) from None
                raise
        return decided_at

    def history(self) -> list[tuple[int, str, str, str, str]]:
        """Every row, oldest first: (seq, crop_id, status, decided_at, origin)."""
        with self._lock:
            try:
                return self._con.execute(
                    "SELECT seq, crop_id, status, decided_at, origin FROM decisions ORDER BY seq"
                ).fetchall()
            except sqlite3.Error as e:
                raise log_failure(e, self.path) from None

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._con.close()


@dataclass
class Action:
    """One undoable step: the crops it changed and the status each had before."""

    origin: str
    previous: list[tuple[str, str]]  # (crop_id, status before)


class ReviewSession:
    """Current statuses, paging, decisions and undo over one workdir (thread-safe)."""

    def __init__(self, workdir: Workdir, index: CropIndex | None = None):
        self.workdir = workdir
        self.index = index or load_index(workdir)
        self.store = DecisionStore(workdir.review_db)
        self.status = np.zeros(len(self.index), dtype=np.int8)  # PENDING everywhere
        self.undo_stack: list[Action] = []
        self._lock = threading.RLock()
        self._replay(self.store.history())
        # the reject model's view (curate.review.rank): p_reject per row, NaN until a model ranks it
        self.p_reject = np.full(len(self.index), np.nan, np.float32)
        self.model: dict[str, Any] | None = None  # review.rank.json of the ranking in use
        self.training = False  # a background ranker is fitting a model now
        self.model_problem: str | None = None  # why the last training failed (the page says it)
        self._reject_order: np.ndarray | None = None
        self._unusual_order: np.ndarray | None = None  # curate.review.rank's `unusual`, once ranked
        self.listeners: list = []  # called after every change of a status (the background ranker)
        self._load_ranking()

    def _load_ranking(self) -> None:
        from curate.review.rank import read_ranking, read_unusual

        p, info = read_ranking(self.workdir)
        self.set_ranking(p, info, read_unusual(self.workdir))

    def set_ranking(self, p_reject: dict[str, float], info: dict[str, Any] | None,
                    unusual: dict[str, float] | None = None) -> None:
        """Use a ranking (crop_id -> p_reject; empty: no model), the figures it came with, and each crop's
        `unusual` (empty or None: no such order yet)."""
        arr = np.full(len(self.index), np.nan, np.float32)
        for cid, p in p_reject.items():
            row = self.index.position.get(cid)
            if row is not None and p is not None:
                arr[row] = p
        order = None
        if p_reject:
            key = np.where(np.isnan(arr), np.inf, -arr)  # most likely rejected first, unranked last
            order = np.argsort(key, kind="stable").astype(np.int32)
        odd = None
        if unusual:
            u = np.full(len(self.index), np.nan, np.float32)
            for cid, v in unusual.items():
                row = self.index.position.get(cid)
                if row is not None and v is not None:
                    u[row] = v
            names = self.index.label_names
            doubted = np.array([n not in (KEPT_LABEL, UNSCORED_LABEL) for n in names], bool)[self.index.labels]
            # the score stage's rejections first, then the most unusual; crops without a value last
            odd = np.lexsort((np.where(np.isnan(u), np.inf, -u), np.isnan(u), ~doubted)).astype(np.int32)
        with self._lock:
            self.p_reject, self._reject_order, self.model = arr, order, info
            self._unusual_order = odd

    @property
    def has_model(self) -> bool:
        """Whether a reject model's ranking is in use."""
        return self._reject_order is not None

    def default_sort(self) -> str:
        """The grid's order when the page names none: the reject model's once there is one, before it the
        unusual crops first once a ranking has measured them, else the score order."""
        if self.has_model:
            return "reject"
        return "unusual" if self._unusual_order is not None else "score"

    def order(self, sort: str) -> np.ndarray:
        if sort == "reject":
            return self._reject_order if self._reject_order is not None else self.index.order("score")
        if sort == "unusual":
            return self._unusual_order if self._unusual_order is not None else self.index.order("score")
        return self.index.order(sort)

    def below(self, p: float) -> np.ndarray:
        """Rows of pending crops whose p_reject is below p (never-ranked crops are not)."""
        with self._lock:
            return np.flatnonzero((self.status == 0) & (self.p_reject < p))

    def accept_below(self, p: float) -> list[dict[str, str]]:
        """Accept every pending crop with p_reject below p: one logged decision each, one undoable action."""
        with self._lock:
            ids = [self.index.crop_ids[r] for r in self.below(p)]
            return self.decide(ids, "accepted", origin="accept-below") if ids else []

    def model_summary(self, below: float = 0.05) -> dict[str, Any]:
        """What the page's header says about the reject model."""
        info = self.model or {}
        out: dict[str, Any] = {"ready": self.has_model, "training": self.training,
                               "unusual": self._unusual_order is not None,
                               "problem": self.model_problem,
                               "decisions": info.get("decisions"), "why": info.get("why"),
                               "below": {"p": below, "crops": int(len(self.below(below)))}}
        if self.has_model and info.get("estimate"):
            out.update(auc=info["held_out"]["auc"], held_out=info["held_out"]["decisions"], estimate=info["estimate"])
        return out

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()

    def _replay(self, history: list[tuple]) -> None:
        """Rebuild statuses and the undo stack from the log: one action = rows sharing (decided_at, origin)."""
        current: dict[str, str] = {}
        group_key, group = None, []

        def close_group() -> None:
            if not group:
                return
            if group_key[1] == "undo":
                if self.undo_stack:
                    self.undo_stack.pop()
            else:
                self.undo_stack.append(Action(group_key[1], group[:]))
                del self.undo_stack[:-UNDO_DEPTH]

        for _seq, cid, status, decided_at, origin in history:
            if (decided_at, origin) != group_key:
                close_group()
                group_key, group = (decided_at, origin), []
            group.append((cid, current.get(cid, "pending")))
            current[cid] = status
        close_group()
        for cid, status in current.items():
            row = self.index.position.get(cid)
            if row is not None:
                self.status[row] = REVIEW_STATUSES.index(status)

    def counts(self) -> dict[str, int]:
        """How many crops have each status, and in all."""
        c = np.bincount(self.status, minlength=len(REVIEW_STATUSES))
        return {"total": len(self.index), **{s: int(c[i]) for i, s in enumerate(REVIEW_STATUSES)}}

    def label_counts(self) -> dict[str, int]:
        """How many crops carry each score label (reason, kept, unscored)."""
        c = np.bincount(self.index.labels, minlength=len(self.index.label_names))
        return {name: int(c[i]) for i, name in enumerate(self.index.label_names)}

    def page(self, status: str | None = None, label: str | None = None, sort: str = "score",
             start: int = 0, size: int = 200) -> dict[str, Any]:
        """The crops matching the filters from sort position `start` on, and where the neighbours start.

        Pages are addressed by sort position rather than by page number, so accepting a page while
        showing only pending crops does not make the next page skip the crops that moved up.
        """
        size = max(1, min(int(size), MAX_PAGE))
        with self._lock:
            order = self.order(sort)
            ranks = np.flatnonzero(match_mask(self.index, self.status, status, label)[order])
            k = int(np.searchsorted(ranks, max(0, int(start))))
            chosen = ranks[k:k + size]
            items = []
            for r in chosen:
                row = int(order[r])
                it = self.index.item(row)
                it["status"] = REVIEW_STATUSES[self.status[row]]
                p = float(self.p_reject[row])
                it["p_reject"] = None if np.isnan(p) else round(p, 3)
                items.append(it)
            return {
                "items": items,
                "offset": k,
                "matching": len(ranks),
                "prev_start": int(ranks[max(k - size, 0)]) if k > 0 else None,
                "next_start": int(chosen[-1]) + 1 if k + size < len(ranks) else None,
                "counts": self.counts(),
            }

    def decide(self, crop_ids: Iterable[str], status: str, origin: str = "grid") -> list[dict[str, str]]:
        """Give crops a status; writes (and commits) only real changes, as one undoable action."""
        if status not in REVIEW_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        code = REVIEW_STATUSES.index(status)
        with self._lock:
            rows = []
            for cid in dict.fromkeys(crop_ids):
                row = self.index.position[cid]  # KeyError for unknown crops: the caller validates
                if self.status[row] != code:
                    rows.append((cid, row, REVIEW_STATUSES[self.status[row]]))
            if not rows:
                return []
            self.store.append([(cid, status) for cid, _, _ in rows], origin)
            for _, row, _ in rows:
                self.status[row] = code
            self.undo_stack.append(Action(origin, [(cid, prev) for cid, _, prev in rows]))
            del self.undo_stack[:-UNDO_DEPTH]
        self._changed()
        return [{"crop_id": cid, "status": status} for cid, _, _ in rows]

    def undo(self) -> list[dict[str, str]]:
        """Revert the last action (appending rows with origin 'undo'); [] when there is none."""
        with self._lock:
            if not self.undo_stack:
                return []
            action = self.undo_stack[-1]
            self.store.append(action.previous, "undo")
            self.undo_stack.pop()
            for cid, prev in action.previous:
                row = self.index.position.get(cid)
                if row is not None:
                    self.status[row] = REVIEW_STATUSES.index(prev)
        self._changed()
        return [{"crop_id": cid, "status": prev} for cid, prev in action.previous]

    def close(self) -> None:
        """Close the decision store."""
        self.store.close()


def render_thumbnail(src: Path, size: tuple[int, int] = THUMB_SIZE, quality: int = 85) -> tuple[bytes | None, str | None]:
    """A JPEG thumbnail of the image at `src` fitted in `size`, or (None, reason) when it cannot be read."""
    from PIL import Image

    from curate.core.image import DecodeFailure, decode_image

    decoded = decode_image(src, Image.MAX_IMAGE_PIXELS or 1 << 62)  # the one reader: its reason codes
    if isinstance(decoded, DecodeFailure):
        return None, decoded.reason
    im = decoded.image
    im.thumbnail(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue(), None


class ThumbnailCache:
    """Thumbnails of listed crops, made on first use and kept under WORKDIR/.thumbs/."""

    def __init__(self, workdir: Workdir, index: CropIndex, size: tuple[int, int] = THUMB_SIZE):
        self.root = workdir.root.resolve()
        self.index = index
        self.size = size
        self.dir = workdir.root / ".thumbs" / f"{size[0]}x{size[1]}"

    def source(self, row: int) -> Path | None:
        """The crop image of table row `row`, or None if the table points outside the workdir."""
        path = (self.root / self.index.files[row].as_py()).resolve()
        return path if path.is_relative_to(self.root) else None

    def get(self, row: int) -> tuple[bytes | None, str]:
        """(JPEG bytes, version tag) for table row `row`; (None, reason) when the crop cannot be shown."""
        src = self.source(row)
        if src is None:
            return None, "outside_workdir"
        try:
            st = src.stat()
        except OSError:
            return None, "missing_file"
        # The key names the crop, not only the file: distinct crops never share a cache entry, and
        # a crop re-made by a later `curate crop` run (new size or mtime) gets a new one.
        key = hashlib.sha1(
            f"{self.index.crop_ids[row]}\0{src}\0{st.st_size}\0{st.st_mtime_ns}\0{self.size}".encode()
        ).hexdigest()
        cached = self.dir / key[:2] / f"{key}.jpg"
        with contextlib.suppress(OSError):
            data = cached.read_bytes()
            if data:
                return data, key[:16]
        data, reason = render_thumbnail(src, self.size)
        if data is None:
            return None, reason
        # A cache only: on a full or read-only disk the thumbnail is still shown, just made again next time.
        with contextlib.suppress(OSError):
            self._store(cached, key, data)
        return data, key[:16]

    @staticmethod
    def _store(cached: Path, key: str, data: bytes) -> None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Atomic but not fsynced: a cache entry lost to a power cut is simply made again. mkstemp
        # gives every thread its own temporary, as two requests may render the same crop at once.
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=cached.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, cached)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def current_decisions(workdir: Workdir) -> list[dict[str, Any]]:
    """Each crop's latest decision (crop_id, status, decided_at, origin, decisions), in first-decided order."""
    rows = read_log(workdir.review_db, "SELECT crop_id, status, decided_at, origin FROM decisions ORDER BY seq")
    latest: dict[str, dict[str, Any]] = {}
    for cid, status, at, origin in rows:
        n = latest[cid]["decisions"] + 1 if cid in latest else 1
        latest[cid] = {"crop_id": cid, "status": status, "decided_at": at, "origin": origin, "decisions": n}
    return list(latest.values())


def export_rows(workdir: Workdir, history: bool = False, status: str | None = None,
                every_crop: bool = False) -> list[dict[str, Any]]:
    """Decisions as flat rows: each crop's latest (or, with history, every row), with post id, file and
    the reject model's p_reject (None before a ranking). `every_crop` adds each never-decided crop of
    the crops table as `pending` (origin and decided_at empty, 0 decisions), in table order."""
    from curate.review.rank import read_ranking

    if history:
        columns = ("seq", "crop_id", "status", "decided_at", "origin")
        rows = [dict(zip(columns, r)) for r in
                read_log(workdir.review_db, f"SELECT {', '.join(columns)} FROM decisions ORDER BY seq")]
    else:
        rows = current_decisions(workdir)
    if every_crop and not history and workdir.crops_table.exists():
        seen = {r["crop_id"] for r in rows}
        for cid in pq.read_table(workdir.crops_table, columns=["crop_id"]).column("crop_id").to_pylist():
            if cid not in seen:
                seen.add(cid)
                rows.append({"crop_id": cid, "status": "pending", "decided_at": None, "origin": None, "decisions": 0})
    if status:
        rows = [r for r in rows if r["status"] == status]
    info: dict[str, tuple] = {}
    if workdir.crops_table.exists():
        try:
            t = pq.read_table(workdir.crops_table, columns=["crop_id", "post_id", "file"]).to_pydict()
        except (pa.ArrowInvalid, KeyError) as e:
            raise ReviewInputError(f"{workdir.crops_table} is not a crops table ({e})") from None
        info = {c: (p, f) for c, p, f in zip(t["crop_id"], t["post_id"], t["file"])}
    p_reject, _ = read_ranking(workdir)
    for r in rows:
        r["post_id"], r["file"] = info.get(r["crop_id"], (None, None))
        p = p_reject.get(r["crop_id"])
        r["p_reject"] = None if p is None else round(float(p), 4)
    return rows


def status_array(index: CropIndex, workdir: Workdir) -> np.ndarray:
    """Each crop's current status code, read-only from the review log (all pending without one)."""
    status = np.zeros(len(index), dtype=np.int8)
    for cid, s in latest_statuses(workdir.review_db).items():
        row = index.position.get(cid)
        if row is not None:
            status[row] = REVIEW_STATUSES.index(s)
    return status


def match_mask(index: CropIndex, status: np.ndarray, wanted: str | None, label: str | None) -> np.ndarray:
    """Boolean per table row: its status is `wanted` and its score label is `label` (None = any)."""
    mask = np.ones(len(index), dtype=bool)
    if wanted:
        mask &= status == REVIEW_STATUSES.index(wanted)
    if label:
        mask &= index.labels == (index.label_names.index(label) if label in index.label_names else -1)
    return mask


def rows_with_status(index: CropIndex, status: np.ndarray, wanted: str | None, label: str | None = None,
                     sort: str = "score", limit: int | None = None) -> list[int]:
    """Table rows whose status (and score label) match, in sort order."""
    order = index.order(sort)
    rows = order[match_mask(index, status, wanted, label)[order]]
    return [int(r) for r in (rows if limit is None else rows[:limit])]


def contact_sheet(thumbs: ThumbnailCache, rows: list[int], columns: int = 16, tile_width: int = 96,
                  caption: bool = True) -> tuple[Any, dict[str, int]]:
    """A PIL image: the crops of `rows` in a grid, each captioned with its crop id; plus counts of unreadable crops."""
    from PIL import Image

    from curate.core.grid import render_grid
    from curate.core.image import DecodeFailure

    problems: dict[str, int] = {}
    tiles = []
    for row in rows:
        data, tag = thumbs.get(row)
        if data is None:
            problems[tag] = problems.get(tag, 0) + 1
            tiles.append(DecodeFailure(tag))
        else:
            with Image.open(io.BytesIO(data)) as im:
                tiles.append(im.convert("RGB"))
    tile = (tile_width, tile_width * thumbs.size[1] // thumbs.size[0])
    captions = [thumbs.index.crop_ids[row] for row in rows] if caption else None
    sheet = render_grid(tiles, max(1, min(columns, len(rows) or 1)), tile, captions=captions,
                        gap=4, background=(32, 32, 36))
    return sheet, problems
