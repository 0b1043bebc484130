"""The workdir shared by crop, score, review and pack: its layout and its tables' schemas.

One place names every file a stage reads or writes, so stages agree without importing each other:

    WORKDIR/
      crops/<shard>/<crop_id>.png   512x256 portraits (PNG; JPEG q95 as an option)
      crops.parquet                 one row per crop   (CROPS_SCHEMA)       <- curate crop
      crops.stats.json              crop funnel: faces found, reasons for rejects
      scores.parquet                one row per crop   (SCORES_SCHEMA)      <- curate score
      scores.stats.json
      dedup.parquet                 one row per crop   (DEDUP_SCHEMA)       <- curate dedup
      dedup.stats.json              groups, near-duplicates, flat crops; the crops table it was made from
      review.sqlite                 decision history   (REVIEW_SQL)         <- curate review
      overlays/                     optional pictures of boxes, contact sheets

`surviving_crops()` is the rule pack applies: crops that scoring kept (when scores exist), that dedup
did not mark near_duplicate (when dedup ran) and whose latest review decision is not 'rejected'
(when a review database exists).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from curate.core.location import as_location, local_copy, readable

CROPS_SCHEMA = pa.schema(
    [
        ("crop_id", pa.string()),  # unique in the workdir: "<post id>_<face index>" for Danbooru posts
        ("post_id", pa.int64()),  # null for images from a plain folder
        ("source", pa.string()),  # the source image: relative to the dataset root (or the folder)
        ("face_index", pa.int32()),  # 0 = the most confident face of the image
        ("face_x", pa.int32()), ("face_y", pa.int32()), ("face_w", pa.int32()), ("face_h", pa.int32()),
        ("crop_x", pa.int32()), ("crop_y", pa.int32()), ("crop_w", pa.int32()), ("crop_h", pa.int32()),
        ("scale", pa.float32()),  # output height / crop height in source pixels (>1 = upscaled)
        ("confidence", pa.float32()),  # the cascade's level weight for the face (null: only AnimeFace saw it)
        ("source_width", pa.int32()), ("source_height", pa.int32()),
        ("file", pa.string()),  # the crop image, relative to the workdir
    ]
)
# With `curate crop --detector animeface|both` the crops table has these columns too (an LBP-only run's
# table is CROPS_SCHEMA alone, unchanged). Points are in source pixels; "left" is the character's left
# eye (on the image's right), as AnimeFace names it. A face AnimeFace did not see has them null.
LANDMARK_FIELDS = [
    ("found_by", pa.string()),  # "both", "animeface" or "lbp": which detectors saw the face
    ("likelihood", pa.float32()),  # AnimeFace's likelihood (0.5-1)
    ("left_eye_x", pa.float32()), ("left_eye_y", pa.float32()),  # eye centres
    ("right_eye_x", pa.float32()), ("right_eye_y", pa.float32()),
    ("nose_x", pa.float32()), ("nose_y", pa.float32()),
    ("mouth_x", pa.float32()), ("mouth_y", pa.float32()),  # mouth centre
    ("chin_x", pa.float32()), ("chin_y", pa.float32()),
    ("hair_color", pa.string()), ("skin_color", pa.string()), ("eye_color", pa.string()),  # "#rrggbb"
    ("landmark_issue", pa.string()),  # null, or curate.crop.cropper.LANDMARK_ISSUES
    # --align: the crop's rotation in degrees (the eye line's slope, positive = down to the right; 0 =
    # not rotated); crop_x/_y/_w/_h are then the box before rotation, turned about its centre by this angle
    ("crop_angle", pa.float32()),
]
CROPS_LANDMARKS_SCHEMA = pa.schema(list(CROPS_SCHEMA) + [pa.field(n, t) for n, t in LANDMARK_FIELDS])


def crops_schema(landmarks: bool) -> pa.Schema:
    """The crops table's schema: with the landmark columns or without."""
    return CROPS_LANDMARKS_SCHEMA if landmarks else CROPS_SCHEMA

SCORES_SCHEMA = pa.schema(
    [
        ("crop_id", pa.string()),
        ("scorer", pa.string()),  # "illustration2vec" or "heuristic": always recorded, never implied
        ("person", pa.float32()),  # probability-like score that the crop shows a person (see curate.score.runner)
        ("rating_safe", pa.float32()), ("rating_questionable", pa.float32()), ("rating_explicit", pa.float32()),
        ("top_tags", pa.list_(pa.string())), ("top_probs", pa.list_(pa.float32())),
        ("kept", pa.bool_()),
        ("reason", pa.string()),  # why it was rejected (null when kept)
    ]
)

DEDUP_SCHEMA = pa.schema(
    [
        ("crop_id", pa.string()),
        ("phash", pa.int64()),  # the 64-bit perceptual hash (curate.dedup.phash), null if the crop has none
        ("reason", pa.string()),  # null: kept; near_duplicate; flat or a read code: never compared
        ("twin", pa.string()),  # near_duplicate: the kept crop it duplicates
        ("distance", pa.int32()),  # near_duplicate: Hamming distance to the twin
        ("group", pa.string()),  # the kept crop of its group (the twin, or itself), null for a crop alone
    ]
)

REVIEW_STATUSES = ("pending", "accepted", "rejected")
# Every decision is a new row (an undo too); a crop's status is its latest row.
REVIEW_SQL = """
CREATE TABLE IF NOT EXISTS decisions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    crop_id    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    decided_at TEXT NOT NULL,            -- ISO 8601, UTC
    origin     TEXT NOT NULL DEFAULT ''  -- e.g. 'grid', 'undo', 'accept-page', 'import'
);
CREATE INDEX IF NOT EXISTS decisions_crop ON decisions (crop_id, seq);
"""


class _Inside:
    """A path inside the workdir, read as an attribute: `Workdir(w).crops_table` is `w/crops.parquet`."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, workdir: Workdir | None, owner: type | None = None):
        return self if workdir is None else workdir.root / self.name


@dataclass(frozen=True)
class Workdir:
    """Paths inside one workdir."""

    root: Path
    crops_dir = _Inside("crops")
    crops_table = _Inside("crops.parquet")
    scores_table = _Inside("scores.parquet")
    dedup_table = _Inside("dedup.parquet")
    dedup_stats = _Inside("dedup.stats.json")
    review_db = _Inside("review.sqlite")

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", as_location(root))  # a URL under the Beam engine (curate.core.location)

    @staticmethod
    def crop_file(crop_id: str, ext: str = "png") -> str:
        """Where a crop's image lives, relative to the workdir: 256 shards keep folders small."""
        shard = hashlib.sha1(crop_id.encode()).hexdigest()[:2]
        return f"crops/{shard}/{crop_id}.{ext}"


def latest_decisions(db: str | os.PathLike) -> dict[str, str]:
    """crop_id -> its latest review status; empty when there is no review database. Reads read-only
    media too (curate.core.reviewlog.read_log); a log that cannot be read is one line naming it."""
    from curate.core.reviewlog import read_log

    db = as_location(db)
    if not db.exists():
        return {}
    with local_copy(db) as path:  # SQLite reads files: a log on object storage is read from a copy
        return dict(read_log(path, "SELECT crop_id, status FROM decisions d WHERE seq = "
                                   "(SELECT MAX(seq) FROM decisions WHERE crop_id = d.crop_id)"))


def surviving_crops(workdir: Workdir) -> tuple[pa.Table, dict[str, int]]:
    """The crops pack should use, in crop-table order, and how many each later stage removed."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    crops = pq.read_table(readable(workdir.crops_table))
    counts = {"crops": crops.num_rows}
    if workdir.scores_table.exists():
        scores = pq.read_table(readable(workdir.scores_table), columns=["crop_id", "kept"])
        kept_ids = pc.filter(scores.column("crop_id"), scores.column("kept"))
        mask = pc.is_in(crops.column("crop_id"), value_set=kept_ids)
        counts["removed_by_score"] = crops.num_rows - pc.sum(mask).as_py()
        crops = crops.filter(mask)
    if workdir.dedup_table.exists():
        twins = near_duplicates(workdir)
        mask = pc.invert(pc.is_in(crops.column("crop_id"), value_set=twins))
        counts["removed_by_dedup"] = crops.num_rows - pc.sum(mask).as_py()
        crops = crops.filter(mask)
    rejected = [c for c, s in latest_decisions(workdir.review_db).items() if s == "rejected"]
    if rejected:
        mask = pc.invert(pc.is_in(crops.column("crop_id"), value_set=pa.array(rejected, pa.string())))
        counts["removed_by_review"] = crops.num_rows - pc.sum(mask).as_py()
        crops = crops.filter(mask)
    counts["surviving"] = crops.num_rows
    return crops, counts


def near_duplicates(workdir: Workdir) -> pa.Array:
    """The crop ids dedup marked near_duplicate; InputError when dedup.parquet was made from other crops."""
    import json

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from curate.core.errors import InputError
    from curate.core.hashing import file_sha256

    try:
        made_from = json.loads(workdir.dedup_stats.read_text()).get("crops_sha256")
    except (OSError, ValueError, AttributeError):
        made_from = None
    if made_from != file_sha256(workdir.crops_table):
        raise InputError(f"{workdir.dedup_table} was made from another crops.parquet (or its stats are missing); "
                         f"rerun 'curate dedup {workdir.root}', or delete it to keep every crop")
    table = pq.read_table(readable(workdir.dedup_table), columns=["crop_id", "reason"])
    return pc.filter(table.column("crop_id"), pc.equal(table.column("reason"), "near_duplicate"))
