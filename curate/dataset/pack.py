"""Stage 5, pack: surviving crops (or a plain folder of images) -> multi-resolution StyleGAN TFRecords.

The format is in curate.dataset.schema.

`encode_into()` is the per-crop function: a crop (path or bytes, read through curate.core.image) ->
one framed record per level, written into a buffer (or a reason code). `RecordEncoder` is the unit
other engines call: crop bytes -> the records as bytes. `run_pack()` shuffles the surviving crops
with a fixed seed, maps encode_into over a process pool in that order (each worker fills a slot of
a shared-memory arena, so the records never cross a pipe) and appends
each crop's records to every level file, so all levels hold the same images in the same order.
The top level is the crop size `curate crop` recorded in crops.stats.json (or --size, or the most
common size among the crops); a crop of any other size is skipped as `wrong_size`, like an unreadable one.
The levels halve down to 4 pixels high (4x2 for 2:1 crops, NVlabs' 4x4 for square ones) unless --min-size.

A plain folder of same-size images (no crops.parquet: `curate pack FOLDER`, e.g. a square dataset
for NVlabs' layout) is packed the same way: its image files, by name, stand for the crops, and the
size is --size or the most common among them. With `resize`, an image of the same aspect but another
size is scaled to it (area averaging down, Lanczos up); an image of another aspect is never stretched
or padded: it is skipped as wrong_size.

Resuming: level files grow in a hidden staging folder inside the output (`.pack-staging/`). Every
`checkpoint_every` crops the files are fsynced and `progress.json` records how many crops were
consumed and records written. Every record of a level has the same size, so a rerun truncates each
file to exactly the checkpoint and carries on. Only at the end are the files renamed into place and
`dataset.json` written (last); a finished dataset whose files still match it is left untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import shutil
import stat
import time
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from curate import __version__
from curate.dataset import schema as R
from curate.core.hashing import file_sha256
from curate.core.atomic import write_bytes, write_json
from curate.core.image import IMAGE_EXTS, DecodeFailure, decode_bgr
from curate.core.pool import default_workers, ordered_map
from curate.core.workdir import Workdir, surviving_crops
from curate.core.errors import CurateError, environment_failure, is_environment_error
from curate.core.lock import stage_lock
from curate.core.location import as_location, readable
from curate.core.paths import real_location, refuse_output_among_inputs

STAGING = ".pack-staging"
SCORE_LABELS = ("person", "rating_safe", "rating_questionable", "rating_explicit")
TAG_COLUMNS = ("tags_general", "tags_character", "tags_copyright", "tags_artist", "tags_meta")
SKIPPED_SAMPLES = 100
CHUNK = 8  # crops per task sent to a worker process
SIZE_PROBES = 64  # crop headers read to find the usual crop size when the workdir does not record it
POSTS_COLUMNS = ("id", *TAG_COLUMNS)


class PackError(CurateError):
    """Misuse or unusable input that stops the stage (the CLI turns it into one line)."""


@dataclass(frozen=True)
class LabelSpec:
    """Which labels to write: kind 'scores' (from scores.parquet) or 'tags' (1/0 per tag, from --posts)."""

    kind: str
    tags: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> LabelSpec:
        """'scores' or 'tags:a,b,c'; ValueError otherwise."""
        if text == "scores":
            return cls("scores")
        if text.startswith("tags:"):
            tags = tuple(t.strip() for t in text[5:].split(",") if t.strip())
            if not tags:
                raise ValueError("give at least one tag, e.g. tags:1girl,blonde_hair")
            if len(set(tags)) != len(tags):
                raise ValueError("a tag is listed twice")
            return cls("tags", tags)
        raise ValueError(f"{text!r} is not a label source; use 'scores' or 'tags:TAG,TAG,...'")

    def names(self) -> list[str]:
        """Label column names, in order."""
        return list(SCORE_LABELS) if self.kind == "scores" else list(self.tags)

    def __str__(self) -> str:
        return "scores" if self.kind == "scores" else "tags:" + ",".join(self.tags)


@dataclass(frozen=True)
class PackConfig:
    """What to pack and how; validated by the CLI before any work."""

    name: str = "portraits"
    seed: int = R.SEED
    min_size: tuple[int, int] | None = None  # the smallest level; None = 4 high (4x2 for 2:1, 4x4 square)
    size: tuple[int, int] | None = None  # the crop size (top level); None = what the crop stage made
    resize: bool = False  # scale an image of the size's aspect but another size to it (else wrong_size)
    shard_size: int | None = None
    labels: LabelSpec | None = None
    posts: str | None = None  # FILTERED.parquet, for tag labels

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = str(self.labels) if self.labels else None
        d["min_size"] = None if self.min_size is None else list(self.min_size)
        if self.size is None:
            del d["size"]  # as before --size existed
        else:
            d["size"] = list(self.size)
        if not self.resize:
            del d["resize"]  # as before --resize existed
        return d


def default_min_size(height: int, width: int) -> tuple[int, int]:
    """The smallest level when none is asked for: 4 pixels high, the crops' aspect (4x2 for 2:1, 4x4 square)."""
    return (4, max(1, 4 * width // height)) if height >= 4 else (height, width)


# ---- the per-crop function ----------------------------------------------------------------------

@dataclass(frozen=True)
class RecordEncoder:
    """The unit: one crop image (bytes) -> (one framed record per level, None, "") or (None, reason, detail).

    Configured once with the level sizes (schema.level_sizes); picklable; never raises for a bad crop.
    """

    sizes: tuple[tuple[int, int], ...]
    resize: bool = False

    def __call__(self, data: bytes, name: str | None = None) -> tuple[list[bytes] | None, str | None, str]:
        """`name` (the crop's path) heads a reason's detail, as the local runner's does; else "crop"."""
        buf = np.empty(slot_bytes(self.sizes), np.uint8)
        reason, detail = self.into(data, buf, name)
        if reason is not None:
            return None, reason, detail
        return [bytes(buf[a:b]) for a, b in self.offsets], None, ""

    def into(self, data: bytes, out: np.ndarray, name: str | None = None) -> tuple[str | None, str]:
        """The same, into the caller's buffer of slot_bytes(sizes): level i's record is out[offsets[i]],
        for an engine that writes the records out without copying them first."""
        return encode_into(data, self.sizes, out, name, self.resize)

    @property
    def offsets(self) -> tuple[tuple[int, int], ...]:
        """(start, end) of each level's record in the buffer `into` fills."""
        return _offsets(self.sizes)


def encode_into(source: str | bytes, sizes: tuple[tuple[int, int], ...], out: np.ndarray,
                name: str | None = None, resize: bool = False) -> tuple[str | None, str]:
    """Decode one crop (path or bytes) and frame its record for every level into `out`, level after level.

    Returns (None, "") on success, else (reason code, detail) and `out` is left unspecified: the
    reader's codes (curate.core.image.REASONS) or wrong_size. With `resize`, an image of the top
    level's aspect but another size is scaled to it first; one of another aspect stays wrong_size.
    """
    img = decode_bgr(source)  # gray/alpha/16-bit -> 8-bit BGR
    name = name or (source if isinstance(source, str) else "crop")
    if isinstance(img, DecodeFailure):
        return img.reason, named_detail(name, img.detail)
    (h, w), (want_h, want_w) = img.shape[:2], sizes[0]
    if (h, w) != (want_h, want_w):
        if not (resize and h * want_w == w * want_h):
            return "wrong_size", f"{name}: {h}x{w}, expected {want_h}x{want_w}" + (
                " (another aspect: not resized)" if resize else "")
        import cv2

        img = cv2.resize(img, (want_w, want_h), interpolation=cv2.INTER_AREA if h > want_h else cv2.INTER_LANCZOS4)
    chw = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
    for (a, b), level in zip(_offsets(sizes), R.pyramid(chw, len(sizes))):
        R.write_record(out[a:b], level)
    return None, ""


def named_detail(name: str, detail: str) -> str:
    """A reason's detail headed by the crop's name (once): what a skipped crop says in dataset.json."""
    return detail if detail.startswith(name) else f"{name}: {detail}" if detail else name


@functools.lru_cache(maxsize=8)
def _offsets(sizes: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """(start, end) of each level's record inside a crop's slot."""
    out, at = [], 0
    for h, w in sizes:
        out.append((at, at + R.record_size(h, w)))
        at += R.record_size(h, w)
    return tuple(out)


def slot_bytes(sizes: tuple[tuple[int, int], ...]) -> int:
    """Bytes one crop's records take, all levels together."""
    return _offsets(sizes)[-1][1]


# The local runner's arena: a named shared-memory block. A worker frames a crop's records into its
# slot and returns only a reason, and the main process writes and hashes straight from the slot.
# Records never go through a pipe or pickle (about a third of pack's CPU time when they did). Each
# worker's SlotEncoder attaches by name on first use, so the pool may fork or spawn; nothing is inherited.
class SlotEncoder:
    """encode_into() for the local pool: called with (first slot, paths), fills consecutive slots of the arena named `arena`."""

    def __init__(self, sizes: tuple[tuple[int, int], ...], arena: str, resize: bool = False):
        self.sizes, self.arena, self.resize = sizes, arena, resize  # arena: the SharedMemory name
        self._shm: shared_memory.SharedMemory | None = None

    def __getstate__(self):
        return {**self.__dict__, "_shm": None}  # each process attaches for itself

    def __call__(self, item: tuple[int, list[str]]) -> list[tuple[str | None, str]]:
        first, paths = item
        n = slot_bytes(self.sizes)
        if self._shm is None:
            self._shm = shared_memory.SharedMemory(self.arena)
        arena = self._shm.buf
        return [encode_into(p, self.sizes, np.frombuffer(arena, np.uint8, n, (first + i) * n), resize=self.resize)
                for i, p in enumerate(paths)]

    def close(self) -> None:
        """Detach from the arena (an in-process run attaches in the main process too)."""
        if self._shm is not None:
            with contextlib.suppress(BufferError):
                self._shm.close()
            self._shm = None


def crop_size(wd: Workdir, paths: list[str], config: PackConfig) -> tuple[tuple[int, int], str]:
    """(H, W) of the crops pack expects, and where it came from.

    In order: PackConfig.size (--size); the size the crop stage recorded in crops.stats.json; else
    the most common size among the first SIZE_PROBES crop headers. Never the first crop alone: one
    odd crop must become a `wrong_size` skip, not the size of the whole dataset.
    """
    if config.size is not None:
        return tuple(config.size), "--size"
    stats = _read_json(wd.root / "crops.stats.json")
    with contextlib.suppress(AttributeError, KeyError, TypeError, ValueError):
        h, w = int(stats["config"]["out_height"]), int(stats["config"]["out_width"])
        if h > 0 and w > 0:
            return (h, w), "crops.stats.json"
    from PIL import Image

    seen: Counter = Counter()
    for p in paths[:SIZE_PROBES]:
        with contextlib.suppress(OSError, ValueError):
            if not stat.S_ISREG(os.stat(p).st_mode):  # opening a FIFO would wait forever
                continue
            with Image.open(p) as im:
                seen[im.height, im.width] += 1
    if not seen:
        raise PackError(f"none of the first {min(SIZE_PROBES, len(paths))} crop images can be opened "
                        f"(e.g. {paths[0]}); check the workdir or rerun `curate crop`")
    return seen.most_common(1)[0][0], f"the most common size of {sum(seen.values())} crops"


def shuffled_order(n: int, seed: int) -> np.ndarray:
    """The export order: NVlabs' np.random.RandomState(seed).shuffle of 0..n-1."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    return order


# ---- labels -----------------------------------------------------------------------------------

def build_labels(spec: LabelSpec, crops: pa.Table, wd: Workdir, posts: str | None) -> np.ndarray:
    """float32 [N, D] labels in crop-table order; NaN where a crop has no score or post to label it."""
    import pyarrow.parquet as pq

    ids = crops.column("crop_id").to_pylist()
    out = np.full((len(ids), len(spec.names())), np.nan, np.float32)
    if spec.kind == "scores":
        if not wd.scores_table.exists():
            raise PackError(f"--labels scores needs {wd.scores_table}; run `curate score` first")
        scores = pq.read_table(readable(wd.scores_table), columns=["crop_id", *SCORE_LABELS]).to_pydict()
        row = {c: i for i, c in enumerate(scores["crop_id"])}
        for j, col in enumerate(SCORE_LABELS):
            vals = scores[col]
            for i, c in enumerate(ids):
                v = vals[row[c]] if c in row else None
                if v is not None:
                    out[i, j] = v
        return out
    if posts is None:
        raise PackError("--labels tags:... needs --posts FILTERED.parquet (the table `curate filter` wrote)")
    table = read_posts(posts)
    wanted = set(spec.tags)
    post_tags: dict[int, set[str]] = {}
    cols = table.to_pydict()
    for k, pid in enumerate(cols["id"]):
        tags = set()
        for c in TAG_COLUMNS:
            tags.update(t for t in (cols[c][k] or ()) if t in wanted)
        post_tags[pid] = tags
    for i, pid in enumerate(crops.column("post_id").to_pylist()):
        if pid in post_tags:
            out[i] = [1.0 if t in post_tags[pid] else 0.0 for t in spec.tags]
    return out


def read_posts(posts: str | os.PathLike) -> pa.Table:
    """The id and tag columns of the filter stage's table; PackError (one line naming it) if it is not one."""
    import pyarrow.parquet as pq

    what = "give the table `curate filter` wrote"
    try:
        names = pq.read_schema(posts).names
        missing = [c for c in POSTS_COLUMNS if c not in names]
        if missing:
            raise PackError(f"--posts {posts} has no column {', '.join(missing)}: not a filtered posts table; {what}")
        return pq.read_table(posts, columns=list(POSTS_COLUMNS))
    except FileNotFoundError:
        raise PackError(f"--posts {posts} does not exist; {what}") from None
    except (pa.ArrowException, OSError) as e:
        if is_environment_error(e):
            raise
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PackError(f"--posts {posts} cannot be read as a parquet table ({cause}); {what}") from None


def read_survivors(wd: Workdir) -> tuple[pa.Table, dict[str, int]]:
    """workdir.surviving_crops(), with a workdir table that cannot be read named in one line (PackError)."""
    import sqlite3

    import pyarrow.parquet as pq

    try:
        return surviving_crops(wd)
    except (pa.ArrowException, sqlite3.Error, OSError, KeyError) as e:
        if is_environment_error(e):
            raise
        culprit = wd.review_db if isinstance(e, sqlite3.Error) else None
        for table, needs in ((wd.crops_table, ("crop_id", "post_id", "file")), (wd.scores_table, ("crop_id", "kept"))):
            if culprit is None and table.exists():
                try:
                    if not set(needs) <= set(pq.read_schema(readable(table)).names):
                        culprit = table
                except (pa.ArrowException, OSError):
                    culprit = table
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PackError(f"{culprit or wd.root} cannot be read ({cause}); rerun the stage that wrote it") from None


# ---- writing ----------------------------------------------------------------------------------

class _LevelWriter:
    """One level's staged file(s): appends records, rolls shards over, hashes as it goes."""

    def __init__(self, staging: Path, name: str, size: tuple[int, int], shard_size: int | None):
        self.staging, self.name, self.size, self.shard_size = staging, name, size, shard_size
        self.rec_size = R.record_size(*size)
        self.records = 0
        self.done_shards: list[dict[str, Any]] = []  # {staged, sha256, bytes, records}
        self.f = None
        self.hasher = None

    def staged(self, i: int) -> Path:
        return self.staging / f"{self.name}-r{R.log2(self.size[0]):02d}-{i}.part"

    def _per_shard(self) -> int:
        return self.shard_size or (1 << 62)

    def resume(self, records: int, done_shards: list[dict[str, Any]]) -> None:
        """Reopen after a kill: keep `records` records (those the checkpoint vouches for), drop the rest."""
        per = self._per_shard()
        full, rest = divmod(records, per)
        if len(done_shards) != full:
            raise ValueError("checkpoint lists a different number of finished shards")
        for s in done_shards:
            if Path(s["staged"]).stat().st_size != s["bytes"]:
                raise ValueError(f"{s['staged']} changed size since the checkpoint")
        self.done_shards, self.records = list(done_shards), records
        for p in self.staging.glob(f"{self.name}-r{R.log2(self.size[0]):02d}-*.part"):
            if int(p.stem.rsplit("-", 1)[1]) > full or (rest == 0 and int(p.stem.rsplit("-", 1)[1]) == full):
                p.unlink()
        if rest:
            path = self.staged(full)
            keep = rest * self.rec_size
            if path.stat().st_size < keep:
                raise ValueError(f"{path} is shorter than the checkpoint says")
            self.f = open(path, "r+b")
            self.f.truncate(keep)
            self.hasher = hashlib.file_digest(self.f, "sha256")
            self.f.seek(keep)

    def write(self, record: bytes) -> None:
        if self.f is None:
            self.f = open(self.staged(self.records // self._per_shard()), "wb")
            self.hasher = hashlib.sha256()
        self.f.write(record)
        self.hasher.update(record)
        self.records += 1
        if self.records % self._per_shard() == 0:
            self._close_shard()

    def _close_shard(self) -> None:
        path = Path(self.f.name)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        n = self.records - sum(s["records"] for s in self.done_shards)
        self.done_shards.append({"staged": str(path), "sha256": self.hasher.hexdigest(), "bytes": n * self.rec_size, "records": n})
        self.f = self.hasher = None

    def sync(self) -> None:
        if self.f is not None:
            self.f.flush()
            os.fsync(self.f.fileno())

    def finish(self) -> list[dict[str, Any]]:
        """Close the last shard; return every shard, with final names, in order."""
        if self.f is not None:
            self._close_shard()
        n = len(self.done_shards)
        for i, s in enumerate(self.done_shards):
            s["file"] = R.level_file(self.name, self.size[0], *((i, n) if self.shard_size else ()))
            s["log2"] = R.log2(self.size[0])
        return self.done_shards

    def close(self) -> None:
        # Only after a failure does a file remain open here: bytes past the checkpoint are dropped by
        # the resume anyway, and a full disk must not keep the other writers (and the arena) open.
        if self.f is not None:
            with contextlib.suppress(OSError):
                self.f.close()


# ---- the stage --------------------------------------------------------------------------------

def _table_hashes(wd: Workdir, posts: str | None) -> dict[str, dict[str, Any]]:
    out = {}
    for p in (wd.crops_table, wd.scores_table, wd.review_db, Path(posts) if posts else None):
        if p is not None and p.exists():
            out[p.name if p.parent == wd.root else str(p)] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
    return out


def _fingerprint(config: PackConfig, sizes, crop_ids: list[str], files: list[str], tables: dict) -> str:
    # The review database's bytes change with any decision; what matters is which crops survive.
    inputs = {k: v["sha256"] for k, v in tables.items() if k != "review.sqlite"}
    # --size only confirms or overrides the crop size, and the level sizes it gives are in the blob.
    options = {k: v for k, v in config.to_json().items() if k != "size"}
    blob = json.dumps([R.FORMAT_VERSION, options, sizes, crop_ids, files, inputs])
    return hashlib.sha256(blob.encode()).hexdigest()


def _verify(out: Path, manifest: dict) -> list[str]:
    """Names of the manifest's files that are missing or differ from it."""
    bad = []
    for name, entry in manifest["files"].items():
        p = out / name
        if not p.exists() or p.stat().st_size != entry["bytes"] or file_sha256(p) != entry["sha256"]:
            bad.append(name)
    return bad


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError, ValueError):  # absent, or not JSON (ValueError: bad UTF-8 too)
        return None


@dataclass
class PackPlan:
    """What pack will write, decided before any crop is read; the local runner and the Beam engine
    both pack from one (`prepare`), so they write the same records in the same order."""

    wd: Workdir
    out: Path
    config: PackConfig
    sizes: list[tuple[int, int]]  # the levels, largest first
    crops: pa.Table  # the surviving crops, in crops-table order
    counts: dict[str, int]  # how many each stage removed (surviving_crops)
    paths: list[str]  # each crop's file, in crops-table order
    order: np.ndarray  # the seeded export order: indices into crops
    labels: np.ndarray | None
    tables: dict[str, dict[str, Any]]  # the input tables' hashes
    fingerprint: str


def is_image_folder(path: str | os.PathLike) -> bool:
    """True for a local folder that is not a crop workdir (no crops.parquet) and holds image files."""
    p = as_location(path)
    if not isinstance(p, Path) or not p.is_dir() or Workdir(p).crops_table.exists():
        return False
    return any(_folder_images(p))


def _folder_images(folder: Path):
    """The image files directly in a folder (by name ending; hidden files left out), in name order."""
    return (e for e in sorted(os.scandir(folder), key=lambda e: e.name)
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS and e.is_file())


def _with_levels(config: PackConfig, height: int, width: int, size_from: str) -> tuple[PackConfig, list[tuple[int, int]]]:
    """The config with its min_size resolved for this size, and the level sizes (PackError if they do not halve)."""
    if config.min_size is None:
        config = dataclasses.replace(config, min_size=default_min_size(height, width))
    try:
        return config, R.level_sizes(height, width, *config.min_size)
    except ValueError as e:
        raise PackError(f"{e} (the size from {size_from}); pass --size HxW or --min-size HxW") from None


def prepare_folder(folder: Path, out: Path, config: PackConfig) -> PackPlan:
    """The plan for a plain folder of images: its files by name stand for the crops (no labels, no tables)."""
    if config.labels is not None:
        raise PackError(f"--labels needs a crop workdir; {folder} is a plain folder of images")
    if real_location(out) == real_location(folder):
        raise PackError(f"--out {out} is the image folder itself; choose a folder of its own")
    refuse_output_among_inputs(out, inputs=[folder])
    entries = list(_folder_images(folder))
    if not entries:
        raise PackError(f"{folder} holds no image files ({', '.join(IMAGE_EXTS)}) and no crops.parquet")
    names = [e.name for e in entries]
    paths = [e.path for e in entries]
    (height, width), size_from = crop_size(Workdir(folder), paths, config)
    config, sizes = _with_levels(config, height, width, size_from)
    crops = pa.table({"crop_id": names, "file": names})
    # the listing stands for the inputs' hashes: a file added, removed, replaced or touched changes it
    listing = hashlib.sha256(json.dumps([(e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries]).encode())
    tables = {"images": {"sha256": listing.hexdigest(), "files": len(names)}}
    order = shuffled_order(len(names), config.seed)
    fingerprint = _fingerprint(config, sizes, names, names, tables)
    return PackPlan(Workdir(folder), out, config, sizes, crops, {"images": len(names)}, paths, order, None, tables,
                    fingerprint)


def prepare(workdir: str | os.PathLike, out: str | os.PathLike, config: PackConfig) -> PackPlan:
    """Check the request and decide everything about the dataset but its bytes (PackError if it cannot be packed).

    `workdir` is a crop workdir, or a plain folder of images (`prepare_folder`).
    """
    wd, out = Workdir(workdir), as_location(out)
    if not wd.crops_table.exists():
        if is_image_folder(workdir):
            return prepare_folder(Path(workdir), out, config)
        raise PackError(f"{wd.crops_table} does not exist; give a workdir that `curate crop` wrote "
                        "or a folder of images")
    if real_location(out) == real_location(wd.root):
        raise PackError(f"--out {out} is the workdir itself; choose a folder of its own, e.g. {wd.root / 'dataset'}")
    refuse_output_among_inputs(out, inputs=[p for p in (wd.crops_dir, wd.crops_table, wd.scores_table, wd.review_db,
                                                        config.posts) if p is not None])
    crops, counts = read_survivors(wd)
    if crops.num_rows == 0:
        raise PackError(f"no crops survive in {workdir} ({counts}); nothing to pack")
    paths = [str(wd.root / f) for f in crops.column("file").to_pylist()]
    (height, width), size_from = crop_size(wd, paths, config)
    config, sizes = _with_levels(config, height, width, size_from)
    labels = build_labels(config.labels, crops, wd, config.posts) if config.labels else None
    crop_ids = crops.column("crop_id").to_pylist()
    order = shuffled_order(len(crop_ids), config.seed)
    tables = _table_hashes(wd, config.posts if config.labels and config.labels.kind == "tags" else None)
    fingerprint = _fingerprint(config, sizes, crop_ids, crops.column("file").to_pylist(), tables)
    return PackPlan(wd, out, config, sizes, crops, counts, paths, order, labels, tables, fingerprint)


def existing(out: Path, fingerprint: str, overwrite: bool) -> tuple[dict | None, bool]:
    """(the manifest already in `out` or None, whether it is this very dataset, complete and intact).

    PackError when `out` holds another dataset (or records without a manifest) and not `overwrite`.
    """
    old = _read_json(out / R.MANIFEST)
    if old is not None and old.get("fingerprint") == fingerprint and not _verify(out, old):
        return old, True
    if old is not None and old.get("fingerprint") != fingerprint and not overwrite:
        raise PackError(f"{out} already holds a different dataset ({old.get('name')!r}, {old.get('count')} images); "
                        "choose another --out or pass --overwrite")
    if old is None and not overwrite and out.is_dir() and any(p.suffix == ".tfrecords" for p in out.iterdir()):
        raise PackError(f"{out} holds .tfrecords files but no {R.MANIFEST}; choose another --out or pass --overwrite")
    return old, False


def run_pack(
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    config: PackConfig,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    checkpoint_every: int = 1024,
) -> dict[str, Any]:
    """Pack the surviving crops of `workdir` into `out`; return the stats (the manifest plus run figures)."""
    t0 = time.perf_counter()
    plan = prepare(workdir, out, config)
    try:
        return _pack_into(plan, workers, progress, overwrite, checkpoint_every, t0)
    except OSError as e:
        # A full, read-only or failing output is the machine's fault, not a crop's: one line naming
        # the --out folder (not a staged file's hidden name); a rerun resumes from the last checkpoint.
        if is_environment_error(e) or isinstance(e, PermissionError):
            raise environment_failure(e, plan.out) from None
        raise


def _pack_into(plan: PackPlan, workers, progress, overwrite, checkpoint_every, t0) -> dict[str, Any]:
    p = plan
    p.out.mkdir(parents=True, exist_ok=True)
    old, up_to_date = existing(p.out, p.fingerprint, overwrite)
    if up_to_date:
        return {**old, "up_to_date": True, "resumed_at": None, "seconds": round(time.perf_counter() - t0, 3)}
    staging = p.out / STAGING
    staging.mkdir(exist_ok=True)
    # stage_lock: a second live pack refuses; a lock a killed pack left behind is taken over.
    with stage_lock(staging / "lock", str(p.out)):
        return _pack_locked(p.wd, p.out, staging, p.config, p.sizes, p.crops, p.counts, p.paths, p.order, p.labels,
                            p.tables, p.fingerprint, old, workers or default_workers(), progress, checkpoint_every, t0)


def _pack_locked(wd, out, staging, config, sizes, crops, counts, paths, order, labels, tables, fingerprint, old,
                 workers, progress, checkpoint_every, t0) -> dict[str, Any]:
    prog_path = staging / "progress.json"
    state = _read_json(prog_path)
    if state is None or state.get("fingerprint") != fingerprint:
        for p in staging.iterdir():
            if p.name != "lock":
                p.unlink()
        state = {"fingerprint": fingerprint, "state": "packing", "done": 0, "records": 0, "skipped": [], "shards": {}}
    writers = [_LevelWriter(staging, config.name, s, config.shard_size) for s in sizes]
    resumed_at = state["done"] or None
    skipped: list[dict[str, str]] = state["skipped"]
    written = 0
    arena = encoder = None
    try:
        if state["state"] == "packing":
            try:
                for w in writers:
                    w.resume(state["records"], state["shards"].get(w.name + str(w.size), []))
            except (OSError, ValueError):  # the staging folder was tampered with: start over
                for w in writers:
                    w.close()
                writers = [_LevelWriter(staging, config.name, s, config.shard_size) for s in sizes]
                state.update(done=0, records=0, skipped=[], shards={})
                skipped, resumed_at = state["skipped"], None
            # Crops go to the workers in chunks (fewer hand-offs through the pool's threads and pipes).
            # ordered_map keeps at most `window` chunks unconsumed, so chunk j may use slot group
            # j % window: the chunk that used it before was consumed before chunk j was submitted.
            window, chunk_size = 2 * workers, CHUNK if workers > 1 else 1
            n, offsets = slot_bytes(tuple(sizes)), _offsets(tuple(sizes))
            arena = shared_memory.SharedMemory(create=True, size=window * chunk_size * n)
            rest = [paths[i] for i in order[state["done"]:]]
            chunks = (((j % window) * chunk_size, rest[at:at + chunk_size])
                      for j, at in enumerate(range(0, len(rest), chunk_size)))
            since = 0
            with tqdm(total=len(paths), initial=state["done"], desc="pack", unit="crop", disable=not progress,
                      dynamic_ncols=True) as bar, memoryview(arena.buf) as mv:
                encoder = SlotEncoder(tuple(sizes), arena.name, config.resize)
                results = ordered_map(encoder, chunks, workers, window=window)
                for j, chunk in enumerate(results):
                    for slot, (reason, detail) in enumerate(chunk, (j % window) * chunk_size):
                        if reason is not None:
                            skipped.append({"crop": int(order[state["done"]]), "reason": reason, "detail": detail})
                        else:
                            for w, (a, b) in zip(writers, offsets):
                                w.write(mv[slot * n + a:slot * n + b])
                            written += n
                        state["done"] += 1
                        since += 1
                        if since >= checkpoint_every and state["done"] < len(paths):
                            _checkpoint(prog_path, state, writers)
                            since = 0
                    bar.update(len(chunk))
            if writers[0].records == 0:
                why = ", ".join(f"{k} {v:,}" for k, v in Counter(s["reason"] for s in skipped).most_common())
                raise PackError(f"no crop could be packed ({why}); nothing was written")
            files = [s for w in writers for s in w.finish()]
            state["records"] = writers[0].records
            if labels is not None:
                dropped = {s["crop"] for s in skipped}
                kept = [int(i) for i in order if int(i) not in dropped]
                buf = io.BytesIO()
                np.save(buf, labels[kept].astype(np.float32))
                staged = staging / "labels.part"
                write_bytes(staged, buf.getvalue())
                files.append({"staged": str(staged), "file": R.labels_file(config.name), "log2": None,
                              "sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "bytes": len(buf.getvalue()),
                              "records": len(kept)})
            state.update(state="finalizing", files=files)
            write_json(prog_path, state)
    finally:
        for w in writers:
            w.close()
        if encoder is not None:
            encoder.close()
        if arena is not None:
            # After a failure (a full disk) its traceback may still hold a view of a slot, and close()
            # would raise over the real error: the mapping then goes with the traceback, and the
            # block itself is unlinked either way.
            with contextlib.suppress(BufferError):
                arena.close()
            arena.unlink()

    manifest = _manifest(wd, config, sizes, crops, counts, order, labels, tables, fingerprint, state)
    _finalize(out, staging, state["files"], old)
    write_json(out / R.MANIFEST, manifest)
    shutil.rmtree(staging)
    seconds = time.perf_counter() - t0
    return {**manifest, "up_to_date": False, "resumed_at": resumed_at, "seconds": round(seconds, 3),
            "crops_per_s": round((state["done"] - (resumed_at or 0)) / seconds, 1) if seconds else None,
            "workers": workers, "written_bytes": written}


def _checkpoint(prog_path: Path, state: dict, writers: list[_LevelWriter]) -> None:
    for w in writers:
        w.sync()
    state["records"] = writers[0].records
    state["shards"] = {w.name + str(w.size): w.done_shards for w in writers}
    write_json(prog_path, state)


def _finalize(out: Path, staging: Path, files: list[dict], old: dict | None) -> None:
    """Move the staged files into place; files already there with the same hash are not rewritten."""
    if old is not None:
        (out / R.MANIFEST).unlink(missing_ok=True)  # never a manifest that disagrees with the files
    for f in files:
        final, staged = out / f["file"], Path(f["staged"])
        if final.exists() and final.stat().st_size == f["bytes"] and file_sha256(final) == f["sha256"]:
            staged.unlink(missing_ok=True)
        elif staged.exists():
            os.replace(staged, final)
        else:
            raise PackError(f"{staged} vanished before it was moved to {final}; rerun to pack again")
    if old is not None:
        keep = {f["file"] for f in files}
        for name in old.get("files", {}):
            if name not in keep and "/" not in name:
                (out / name).unlink(missing_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _manifest(wd, config, sizes, crops, counts, order, labels, tables, fingerprint, state) -> dict[str, Any]:
    skipped = state["skipped"]
    skipped_idx = {s["crop"] for s in skipped}
    crop_ids = crops.column("crop_id").to_pylist()
    record_rows = [int(i) for i in order if int(i) not in skipped_idx]
    record_ids = [crop_ids[i] for i in record_rows]
    files = state["files"]
    levels = []
    for h, w in sizes:
        mine = [f for f in files if f["log2"] == R.log2(h)]
        levels.append({"log2": R.log2(h), "height": h, "width": w, "files": [f["file"] for f in mine],
                       "records": sum(f["records"] for f in mine), "bytes": sum(f["bytes"] for f in mine)})
    label_info = None
    if labels is not None:
        missing = int(np.isnan(labels[record_rows]).any(axis=1).sum())
        label_info = {"source": str(config.labels), "names": config.labels.names(),
                      "file": R.labels_file(config.name), "rows_without_label": missing}
    return {
        "format": "stylegan-tfrecords", "format_version": R.FORMAT_VERSION, "curate_version": __version__,
        "name": config.name, "channels": R.CHANNELS, "resolution": list(sizes[0]),
        "count": state["records"], "seed": config.seed,
        "shard_size": config.shard_size, "shards": len(levels[0]["files"]),
        "levels": levels, "labels": label_info,
        "source": {
            ("folder" if "images" in counts else "workdir"): str(wd.root.resolve()), "tables": tables, "counts": counts,
            "skipped": dict(Counter(s["reason"] for s in skipped)),
            "skipped_crops": [{"crop_id": crop_ids[s["crop"]], "reason": s["reason"], "detail": s["detail"]}
                              for s in skipped[:SKIPPED_SAMPLES]],
        },
        "options": config.to_json(),
        "fingerprint": fingerprint,
        "files": {f["file"]: {"sha256": f["sha256"], "bytes": f["bytes"], "records": f["records"], "log2": f["log2"]}
                  for f in files},
        "record_crop_ids": record_ids,
    }


def summary_line(stats: dict[str, Any], out: str | os.PathLike) -> str:
    """One line a person reads at the end of the stage."""
    counts = stats["source"]["counts"]
    removed = [f"{v:,} by {k.removeprefix('removed_by_')}" for k, v in counts.items() if k.startswith("removed_by_") and v]
    skipped = ", ".join(f"{k} {v:,}" for k, v in stats["source"]["skipped"].items())
    levels = stats["levels"]
    size = sum(lv["bytes"] for lv in levels)
    if "images" in counts:  # a plain folder: nothing was removed before pack
        what = f"{counts['images']:,} images in {stats['source']['folder']}" + (f" (skipped {skipped})" if skipped else "")
    else:
        what = (f"{counts['crops']:,} crops ({'removed ' + ', '.join(removed) if removed else 'none removed'}"
                f"{'; skipped ' + skipped if skipped else ''})")
    head = (f"pack: {what} -> {stats['count']:,} images x {len(levels)} levels "
            f"({levels[0]['height']}x{levels[0]['width']} .. {levels[-1]['height']}x{levels[-1]['width']}"
            f"{', ' + str(stats['shards']) + ' shards each' if stats['shard_size'] else ''}), {size / 1e6:,.1f} MB")
    if stats.get("up_to_date"):
        return f"{head}: already up to date -> {out}"
    resumed = f", resumed at crop {stats['resumed_at']:,}" if stats.get("resumed_at") else ""
    return f"{head} in {stats['seconds']:.1f}s ({stats['crops_per_s'] or 0:,.0f} crops/s{resumed}) -> {out}"
