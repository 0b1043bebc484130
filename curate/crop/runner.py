"""Stage 2, crop, the local runner: the `Cropper` unit (curate.crop.cropper) over a process pool.

`run_crop()` reads each file and maps the unit over a process pool in order (`_CropAndWrite`: the
worker that ran the unit writes its crop files and overlay, atomically, so image bytes never cross a
pipe) and records finished work in chunks: a chunk's crop images are written first, then its rows
and counts as a part file, atomically. A killed run redoes at most the chunks in flight; the final
crops.parquet is assembled from the parts in input order, so the same input gives byte-identical
outputs.

One run at a time writes a workdir: the run holds WORKDIR/.crop.lock (curate.core.lock) and a second
one refuses with one line. A failure of the machine (a full or read-only disk, an I/O error, no file
descriptors left: curate.core.errors.is_environment_error) stops the run instead of being recorded
as the image's fault; the chunks finished before it are kept, and the same command resumes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from curate import __version__
from curate.core.atomic import atomic_path, write_bytes, write_json
from curate.core.image import DECODE_REASONS, IMAGE_EXTS, DecodeFailure, read_bytes
from curate.crop.geometry import min_source_height
from curate.core.pool import default_workers, ordered_map
from curate.core.workdir import CROPS_SCHEMA, Workdir
from curate.core.errors import InputError, environment_failure, is_environment_error
from curate.core.location import RemotePath, as_location, readable
from curate.core.lock import stage_lock
from curate.crop.cropper import CropConfig, Cropper, FACE_REASONS, ImageResult, Source

# Entries of a folder named like an image that the listing already knows cannot be read: they are
# counted by these reasons (never opened: a FIFO would block the run forever).
LISTING_REASONS: dict[str, str] = {
    "broken_link": "a symlink whose target does not exist, or a symlink loop",
    "not_a_file": "a folder, FIFO, socket or device named like an image",
}
UNREAD_REASONS = DECODE_REASONS + tuple(LISTING_REASONS)  # images that gave no pixels at all
IMAGE_REASONS = UNREAD_REASONS + ("no_face", "crop_error")
FACE_REASON_CODES = tuple(FACE_REASONS)
# What else a folder held, by kind (the stats' inputs.ignored_files); none of it is read.
IGNORED_KINDS: dict[str, str] = {
    "other_extension": "a file whose extension is not an image's",
    "hidden": "a file or folder whose name starts with '.' (not entered)",
    "folder_link": "a symlink to a folder (not followed: it could loop)",
    "broken_link": "a dangling symlink or a symlink loop",
    "not_a_file": "a FIFO, socket or device",
    "unreadable_folder": "a folder that could not be listed (permissions)",
}
CHUNK = 128  # images per part file: the unit of resumption
FAILURE_SAMPLES = 100
PARTS_DIR = ".crop-parts"
LOCK_FILE = ".crop.lock"


@dataclass
class _CropAndWrite:
    """The local runner's per-image step: read the file, run the unit, write its crops and overlay atomically."""

    cropper: Cropper
    workdir: Path
    overlays: Path | None

    def __call__(self, src: Source) -> ImageResult:
        data = read_bytes(src.path)
        if isinstance(data, DecodeFailure):
            return ImageResult(src.source, reason=data.reason, detail=data.detail)
        res = self.cropper(src, data)
        for row, crop in zip(res.rows, res.crops):
            write_bytes(self.workdir / row["file"], crop)
        if res.overlay is not None and self.overlays is not None:
            write_bytes(self.overlays / "images" / f"{src.crop_base}.jpg", res.overlay)
        res.crops, res.overlay = [], None  # written here: the bytes need not travel back to the main process
        return res


# ---- inputs -------------------------------------------------------------------------------------


_SLUG = re.compile(r"[^A-Za-z0-9]+")


def folder_crop_base(rel: str) -> str:
    """A stable, readable, unique id for an image in a plain folder: slug of its path + hash."""
    slug = _SLUG.sub("-", rel.rsplit(".", 1)[0]).strip("-")[-40:] or "image"
    return f"{slug}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def open_sources(input_path: str | os.PathLike,
                 dataset_root: str | os.PathLike | None = None) -> tuple[list[Source], dict[str, int]]:
    """The images to crop, in a deterministic order, and what else a folder held, counted by kind.

    INPUT is a folder of images, one image file, or a filtered table (with `dataset_root`).
    """
    p = as_location(input_path)
    if isinstance(p, RemotePath) and p.is_dir():
        return list_objects(p)
    if p.is_dir():
        return list_folder(p)
    if not p.exists():
        raise InputError(f"{p} does not exist; give a filtered table (.parquet), a folder of images or an image")
    if not p.is_file():
        raise InputError(f"{p} is not a regular file; give a filtered table (.parquet), a folder of images or an image")
    if p.suffix.lower() in IMAGE_EXTS:
        return [Source(str(p), p.name, folder_crop_base(p.name))], {}
    if dataset_root is None:
        raise InputError(f"{p} is read as a filtered table, which needs --dataset-root (the folder its 'path' "
                         f"column is relative to); an image must end in one of {', '.join(IMAGE_EXTS)}")
    try:
        table = pq.read_table(readable(p), columns=["id", "path"])
    except Exception as e:
        raise InputError(f"{p} is not a filtered table with id and path columns ({type(e).__name__}: {e})") from None
    root = as_location(dataset_root)
    ids = table.column("id").to_pylist()
    paths = table.column("path").to_pylist()
    return [Source(str(root / rel), rel, str(int(i)), int(i)) for i, rel in zip(ids, paths)], {}


def list_objects(prefix: RemotePath) -> tuple[list[Source], dict[str, int]]:
    """Every image object under `prefix` (object storage has no links or pipes), sorted by name; the rest by kind."""
    sources: list[Source] = []
    ignored: Counter = Counter()
    for obj in prefix.rglob():
        rel = obj.relative_to(prefix)
        if any(part.startswith(".") for part in rel.split("/")):
            ignored["hidden"] += 1
        elif os.path.splitext(obj.name)[1].lower() in IMAGE_EXTS:
            sources.append(Source(str(obj), rel, folder_crop_base(rel)))
        else:
            ignored["other_extension"] += 1
    sources.sort(key=lambda s: s.source)
    return sources, {k: ignored[k] for k in IGNORED_KINDS if ignored[k]}


def list_folder(folder: Path) -> tuple[list[Source], dict[str, int]]:
    """Every image under `folder` (symlinked folders not followed), sorted by relative path; the rest by kind.

    Nothing is opened: an entry named like an image that is not a regular file (after its symlink) is
    a Source with a LISTING_REASONS reason, so it is counted in the funnel; anything else that is not
    an image is counted in IGNORED_KINDS. Regular files cost no stat (scandir's d_type).
    """
    sources: list[Source] = []
    ignored: Counter = Counter()
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            with os.scandir(folder / rel_dir if rel_dir else folder) as it:
                entries = list(it)
        except OSError as e:
            if is_environment_error(e) or not rel_dir:
                raise
            ignored["unreadable_folder"] += 1
            continue
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            if e.name.startswith("."):
                ignored["hidden"] += 1
                continue
            image_name = os.path.splitext(e.name)[1].lower() in IMAGE_EXTS
            if e.is_file(follow_symlinks=False):
                if image_name:
                    sources.append(Source(e.path, rel, folder_crop_base(rel)))
                else:
                    ignored["other_extension"] += 1
                continue
            if e.is_dir(follow_symlinks=False):
                pending.append(rel)  # a folder named x.jpg is still a folder: its images count
                if image_name:
                    sources.append(Source(e.path, rel, folder_crop_base(rel), reason="not_a_file", detail="a folder"))
                continue
            reason, kind, detail = _odd_entry(e)
            if image_name and reason is not None:
                sources.append(Source(e.path, rel, folder_crop_base(rel), reason=reason, detail=detail))
            elif image_name:
                sources.append(Source(e.path, rel, folder_crop_base(rel)))  # a symlink to an image
            else:
                ignored[kind] += 1
    sources.sort(key=lambda s: s.source)
    return sources, {k: ignored[k] for k in IGNORED_KINDS if ignored[k]}


def _odd_entry(e: os.DirEntry) -> tuple[str | None, str, str]:
    """(reason or None if it is a readable file, ignored kind, detail) for an entry that is not a plain file or folder."""
    link = e.is_symlink()
    try:
        st = os.stat(e.path)  # follows the symlink
    except OSError as err:
        if is_environment_error(err):
            raise
        detail = "a symlink loop" if link and err.errno == errno.ELOOP else (
            f"a symlink to {os.readlink(e.path)}, which does not exist" if link else (err.strerror or str(err)))
        return "broken_link", "broken_link", detail
    if stat.S_ISREG(st.st_mode):
        return None, "other_extension", ""
    if stat.S_ISDIR(st.st_mode):
        return "not_a_file", "folder_link", "a symlink to a folder"
    kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
    return "not_a_file", "not_a_file", kind + (" (through a symlink)" if link else "")


# ---- the run ------------------------------------------------------------------------------------


def stats_path(workdir: Workdir) -> Path:
    """WORKDIR/crops.stats.json."""
    return workdir.root / "crops.stats.json"


def chunk_key(config: CropConfig, sources: list[Source]) -> str:
    h = hashlib.sha1(config.fingerprint().encode())
    for s in sources:
        h.update(f"\0{s.source}\0{s.crop_base}\0{s.post_id}".encode())
        if s.reason is not None:  # a FIFO replaced by an image later is a new chunk
            h.update(f"\0{s.reason}".encode())
    return h.hexdigest()[:16]


def new_counts() -> dict[str, Any]:
    return {"images": 0, "decoded": 0, "images_with_faces": 0, "images_with_crops": 0, "faces": 0,
            "over_max_faces": 0, "crops": 0, "padded": 0, "aligned": 0, "reasons": Counter(), "found_by": Counter(), "failures": []}


def add_result(counts: dict[str, Any], r: ImageResult) -> None:
    counts["images"] += 1
    counts["faces"] += r.faces
    counts["images_with_faces"] += r.faces > 0
    counts["images_with_crops"] += bool(r.rows)
    counts["over_max_faces"] += r.over_max_faces
    counts["crops"] += len(r.rows)
    counts["padded"] += r.padded
    counts["aligned"] += r.aligned
    counts["reasons"].update(r.face_reasons)
    counts["found_by"].update(r.found_by)
    if r.reason is not None:
        counts["reasons"][r.reason] += 1
        if r.reason != "no_face" and len(counts["failures"]) < FAILURE_SAMPLES:
            counts["failures"].append({"source": r.source, "reason": r.reason, "detail": r.detail[:200]})
    if r.reason not in UNREAD_REASONS:
        counts["decoded"] += 1


def rows_table(rows: list[dict[str, Any]], schema: pa.Schema = CROPS_SCHEMA) -> pa.Table:
    """Crop rows as a table of the crops schema (CropConfig.table_schema: with landmark columns or not)."""
    return pa.Table.from_pylist(rows, schema=schema)


def run_crop(
    sources: list[Source],
    workdir: str | os.PathLike,
    config: CropConfig,
    workers: int | None = None,
    overlays: str | os.PathLike | None = None,
    progress: bool = True,
    inputs: dict[str, Any] | None = None,
    chunk: int = CHUNK,
) -> dict[str, Any]:
    """Crop every source into `workdir`, resuming finished chunks; return (and save) the stats.

    Holds the workdir's lock throughout (LockedError while another run writes it). An environment
    error (curate.core.errors.is_environment_error) ends the run, raised as it came: the chunks done
    before it are kept and a rerun redoes the rest.
    """
    t0 = time.perf_counter()
    wd = Workdir(workdir)
    wd.root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(stage_lock(wd.root / LOCK_FILE, f"crops into {wd.root}"))
        except OSError as e:  # a read-only workdir that exists: name it, not our lock file
            raise environment_failure(e, wd.root) from None
        stats = _run_locked(sources, wd, config, workers, overlays, progress, inputs, chunk)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return stats


def _run_locked(sources: list[Source], wd: Workdir, config: CropConfig, workers: int | None, overlays,
                progress: bool, inputs: dict[str, Any] | None, chunk: int) -> dict[str, Any]:
    parts = wd.root / PARTS_DIR / config.fingerprint()
    parts.mkdir(parents=True, exist_ok=True)
    workers = workers or default_workers()
    chunks = [sources[i:i + chunk] for i in range(0, len(sources), chunk)]
    keys = [f"{i:06d}-{chunk_key(config, c)}" for i, c in enumerate(chunks)]
    todo = [i for i, key in enumerate(keys) if not (parts / f"{key}.json").exists()]
    redo_images = sum(len(chunks[i]) for i in todo)

    # (OpenCV keeps its own threads: cv2.setNumThreads() in a forked worker deadlocks when the
    # parent had already started OpenCV's pool.)
    worker = _CropAndWrite(Cropper(config, overlays=bool(overlays)), wd.root, Path(overlays) if overlays else None)
    with tqdm(total=len(sources), initial=len(sources) - redo_images, unit="img", desc="crop",
              disable=not progress, dynamic_ncols=True) as bar:
        def stream() -> Iterator[Source]:
            for i in todo:
                for src in chunks[i]:
                    if src.reason is None:  # the listing's rejects are never opened
                        yield src

        results = ordered_map(worker, stream(), workers)
        try:
            for i in todo:
                counts, rows = new_counts(), []
                for src in chunks[i]:
                    r = next(results) if src.reason is None else ImageResult(src.source, reason=src.reason, detail=src.detail)
                    add_result(counts, r)
                    rows.extend(r.rows)
                    bar.update(1)
                # rows first, then the counts file: the counts file is the chunk's "done" mark.
                with atomic_path(parts / f"{keys[i]}.parquet") as tmp:
                    pq.write_table(rows_table(rows, config.table_schema), tmp)
                write_json(parts / f"{keys[i]}.json", counts)
        finally:
            results.close()  # shuts the pool down now (a worker's error too) rather than at garbage collection

    stats = _assemble(wd, parts, keys, config, overlays)
    stats.update({"inputs": inputs or {}, "workers": workers, "curate_version": __version__})
    write_json(stats_path(wd), stats)
    if overlays:
        from curate.crop.overlays import contact_sheet

        contact_sheet(wd, Path(overlays))
    stats["processed_now"] = redo_images
    return stats


def _assemble(wd: Workdir, parts: Path, keys: list[str], config: CropConfig, overlays) -> dict[str, Any]:
    """The final table and funnel from the parts, in input order; stale parts and crop files removed."""
    total = new_counts()
    tables = []
    for key in keys:
        add_chunk(total, json.loads((parts / f"{key}.json").read_text()))
        tables.append(pq.read_table(parts / f"{key}.parquet", schema=config.table_schema))
    table = pa.concat_tables(tables) if tables else config.table_schema.empty_table()
    with atomic_path(wd.crops_table) as tmp:
        pq.write_table(table, tmp)
    _sweep(wd, parts, set(keys), set(table.column("file").to_pylist()))
    return funnel(wd.crops_table, total, config)


def add_chunk(total: dict[str, Any], c: dict[str, Any]) -> None:
    """Add one chunk's counts to the running total (the failure samples stay the first in input order)."""
    for k in ("images", "decoded", "images_with_faces", "images_with_crops", "faces", "over_max_faces", "crops", "padded"):
        total[k] += c[k]
    total["reasons"].update(c["reasons"])
    total["found_by"].update(c.get("found_by", {}))
    total["aligned"] += c.get("aligned", 0)
    total["failures"].extend(c["failures"][: FAILURE_SAMPLES - len(total["failures"])])


def funnel(output: str | os.PathLike, total: dict[str, Any], config: CropConfig) -> dict[str, Any]:
    """The stage's stats from the summed counts: every engine writes these keys."""
    reasons = total["reasons"]
    return {
        "stage": "crop",
        "output": str(output),
        "config": {k: v for k, v in asdict(config).items() if k != "cascade"} | {
            "cascade": Path(config.cascade).name, "detect_reduction": round(config.detect_reduction, 4),
            "face_floor": config.face_floor, "min_source_height": min_source_height(config.out_height, config.max_upscale),
        },
        "images": total["images"],
        "decode_failures": {r: reasons[r] for r in UNREAD_REASONS if reasons[r]},
        "decoded": total["decoded"],
        "no_face": reasons["no_face"],
        "images_with_faces": total["images_with_faces"],
        "faces": total["faces"],
        "over_max_faces": total["over_max_faces"],
        "rejected_faces": {r: reasons[r] for r in FACE_REASON_CODES},
        "crops": total["crops"],
        "images_with_crops": total["images_with_crops"],
        "padded_crops": total["padded"],
        # with --detector animeface|both: faces by which detectors saw them (both, animeface, lbp)
        "found_by": {k: total["found_by"][k] for k in ("both", "animeface", "lbp") if total["found_by"][k]}
        if config.landmarks else {},
        "aligned_crops": total["aligned"],  # rotated by --align
        "reasons": {r: reasons[r] for r in IMAGE_REASONS + FACE_REASON_CODES},
        "failures": total["failures"],
    }


def _sweep(wd: Workdir, parts: Path, keep_keys: set[str], keep_files: set[str]) -> None:
    """Remove parts of other inputs or settings, crop files no row points to (a changed input) and temporaries."""
    import shutil

    for p in parts.iterdir():
        if p.name.split(".")[0] not in keep_keys:
            p.unlink(missing_ok=True)
    for other in parts.parent.iterdir():
        if other != parts and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
    if wd.crops_dir.is_dir():
        for shard in wd.crops_dir.iterdir():
            if not shard.is_dir():
                continue
            for f in shard.iterdir():
                # every worker is done, so a hidden temporary here is a killed run's leftover
                if f"crops/{shard.name}/{f.name}" not in keep_files:
                    f.unlink(missing_ok=True)


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def summary_line(stats: dict[str, Any]) -> str:
    """One line: the funnel and where the table went."""
    failed = sum(stats["decode_failures"].values())
    rejected = ", ".join(f"{k} {v:,}" for k, v in stats["rejected_faces"].items() if v)
    done_now = stats.get("processed_now", stats["images"])
    errors = stats["reasons"].get("crop_error", 0)
    return (
        f"crop: {_n(stats['images'], 'image')} ({failed:,} unreadable, {stats['no_face']:,} without a face"
        + (f", {errors:,} failed with an error: see failures in the stats" if errors else "") + ") -> "
        f"{_n(stats['faces'], 'face')} -> {_n(stats['crops'], 'crop')}"
        + (f" (rejected: {rejected})" if rejected else "")
        + f"; {_n(done_now, 'image')} processed now in {stats.get('seconds', 0):.1f}s -> {stats['output']}"
    )
