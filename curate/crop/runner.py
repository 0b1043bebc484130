"""Stage 2, crop, the local runner: the `Cropper` unit (curate.crop.cropper) over a process pool.

`run_crop()` reads each file and maps the unit over a process pool in order (`_CropAndWrite`: the
worker that ran the unit writes its crop files and overlay, atomically, so image bytes never cross a
pipe) and records finished work in chunks: a chunk's crop images are written first, then its rows
and counts as a part file, atomically. A killed run redoes at most the chunks in flight; the final
crops.parquet is assembled from the parts in input order, so the same input gives byte-identical
outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
from curate.core.image import DECODE_REASONS, DecodeFailure, read_bytes
from curate.crop.geometry import min_source_height
from curate.core.pool import default_workers, ordered_map
from curate.core.workdir import CROPS_SCHEMA, Workdir
from curate.core.errors import InputError
from curate.crop.cropper import CropConfig, Cropper, FACE_REASONS, ImageResult, Source

IMAGE_REASONS = DECODE_REASONS + ("no_face", "crop_error")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
CHUNK = 128  # images per part file: the unit of resumption
FAILURE_SAMPLES = 100
PARTS_DIR = ".crop-parts"


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


def open_sources(input_path: str | os.PathLike, dataset_root: str | os.PathLike | None = None) -> tuple[list[Source], int]:
    """The images to crop, in a deterministic order, and how many files a folder had that are not images."""
    p = Path(input_path)
    if p.is_dir():
        sources, ignored = [], 0
        for f in sorted(p.rglob("*"), key=lambda q: q.relative_to(p).as_posix()):
            if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                continue
            if f.suffix.lower() not in IMAGE_EXTS:
                ignored += 1
                continue
            rel = f.relative_to(p).as_posix()
            sources.append(Source(str(f), rel, folder_crop_base(rel)))
        return sources, ignored
    if not p.is_file():
        raise InputError(f"{p} does not exist; give a filtered table (.parquet) or a folder of images")
    if dataset_root is None:
        raise InputError("a filtered table needs --dataset-root (the folder its 'path' column is relative to)")
    try:
        table = pq.read_table(p, columns=["id", "path"])
    except Exception as e:
        raise InputError(f"{p} is not a filtered table with id and path columns ({type(e).__name__}: {e})") from None
    root = Path(dataset_root)
    ids = table.column("id").to_pylist()
    paths = table.column("path").to_pylist()
    return [Source(str(root / rel), rel, str(int(i)), int(i)) for i, rel in zip(ids, paths)], 0


# ---- the run ------------------------------------------------------------------------------------


def stats_path(workdir: Workdir) -> Path:
    """WORKDIR/crops.stats.json."""
    return workdir.root / "crops.stats.json"


def _chunk_key(config: CropConfig, sources: list[Source]) -> str:
    h = hashlib.sha1(config.fingerprint().encode())
    for s in sources:
        h.update(f"\0{s.source}\0{s.crop_base}\0{s.post_id}".encode())
    return h.hexdigest()[:16]


def _new_counts() -> dict[str, Any]:
    return {"images": 0, "decoded": 0, "images_with_faces": 0, "images_with_crops": 0, "faces": 0,
            "over_max_faces": 0, "crops": 0, "padded": 0, "reasons": Counter(), "failures": []}


def _add(counts: dict[str, Any], r: ImageResult) -> None:
    counts["images"] += 1
    counts["faces"] += r.faces
    counts["images_with_faces"] += r.faces > 0
    counts["images_with_crops"] += bool(r.rows)
    counts["over_max_faces"] += r.over_max_faces
    counts["crops"] += len(r.rows)
    counts["padded"] += r.padded
    counts["reasons"].update(r.face_reasons)
    if r.reason is not None:
        counts["reasons"][r.reason] += 1
        if r.reason != "no_face" and len(counts["failures"]) < FAILURE_SAMPLES:
            counts["failures"].append({"source": r.source, "reason": r.reason, "detail": r.detail[:200]})
    if r.reason not in DECODE_REASONS:
        counts["decoded"] += 1


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=CROPS_SCHEMA)


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
    """Crop every source into `workdir`, resuming finished chunks; return (and save) the stats."""
    t0 = time.perf_counter()
    wd = Workdir(workdir)
    wd.root.mkdir(parents=True, exist_ok=True)
    parts = wd.root / PARTS_DIR / config.fingerprint()
    parts.mkdir(parents=True, exist_ok=True)
    workers = workers or default_workers()
    chunks = [sources[i:i + chunk] for i in range(0, len(sources), chunk)]
    keys = [f"{i:06d}-{_chunk_key(config, c)}" for i, c in enumerate(chunks)]
    todo = [i for i, key in enumerate(keys) if not (parts / f"{key}.json").exists()]
    redo_images = sum(len(chunks[i]) for i in todo)

    # (OpenCV keeps its own threads: cv2.setNumThreads() in a forked worker deadlocks when the
    # parent had already started OpenCV's pool.)
    worker = _CropAndWrite(Cropper(config, overlays=bool(overlays)), wd.root, Path(overlays) if overlays else None)
    with tqdm(total=len(sources), initial=len(sources) - redo_images, unit="img", desc="crop",
              disable=not progress, dynamic_ncols=True) as bar:
        def stream() -> Iterator[Source]:
            for i in todo:
                yield from chunks[i]

        results = ordered_map(worker, stream(), workers)
        for i in todo:
            counts, rows = _new_counts(), []
            for _ in chunks[i]:
                r = next(results)
                _add(counts, r)
                rows.extend(r.rows)
                bar.update(1)
            # rows first, then the counts file: the counts file is the chunk's "done" mark.
            with atomic_path(parts / f"{keys[i]}.parquet") as tmp:
                pq.write_table(_rows_table(rows), tmp)
            write_json(parts / f"{keys[i]}.json", counts)
        results.close()  # shuts the pool down now rather than at garbage collection

    stats = _assemble(wd, parts, keys, config, overlays)
    stats.update({"inputs": inputs or {}, "workers": workers, "curate_version": __version__})
    write_json(stats_path(wd), stats)
    if overlays:
        from curate.crop.overlays import contact_sheet

        contact_sheet(wd, Path(overlays))
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    stats["processed_now"] = redo_images
    return stats


def _assemble(wd: Workdir, parts: Path, keys: list[str], config: CropConfig, overlays) -> dict[str, Any]:
    """The final table and funnel from the parts, in input order; stale parts and crop files removed."""
    total = _new_counts()
    tables = []
    for key in keys:
        c = json.loads((parts / f"{key}.json").read_text())
        for k in ("images", "decoded", "images_with_faces", "images_with_crops", "faces", "over_max_faces", "crops", "padded"):
            total[k] += c[k]
        total["reasons"].update(c["reasons"])
        total["failures"].extend(c["failures"][: FAILURE_SAMPLES - len(total["failures"])])
        tables.append(pq.read_table(parts / f"{key}.parquet", schema=CROPS_SCHEMA))
    table = pa.concat_tables(tables) if tables else CROPS_SCHEMA.empty_table()
    with atomic_path(wd.crops_table) as tmp:
        pq.write_table(table, tmp)
    _sweep(wd, parts, set(keys), set(table.column("file").to_pylist()))

    reasons = total["reasons"]
    return {
        "stage": "crop",
        "output": str(wd.crops_table),
        "config": {k: v for k, v in asdict(config).items() if k != "cascade"} | {
            "cascade": Path(config.cascade).name, "detect_reduction": round(config.detect_reduction, 4),
            "face_floor": config.face_floor, "min_source_height": min_source_height(config.out_height, config.max_upscale),
        },
        "images": total["images"],
        "decode_failures": {r: reasons[r] for r in DECODE_REASONS if reasons[r]},
        "decoded": total["decoded"],
        "no_face": reasons["no_face"],
        "images_with_faces": total["images_with_faces"],
        "faces": total["faces"],
        "over_max_faces": total["over_max_faces"],
        "rejected_faces": {r: reasons[r] for r in FACE_REASONS},
        "crops": total["crops"],
        "images_with_crops": total["images_with_crops"],
        "padded_crops": total["padded"],
        "reasons": {r: reasons[r] for r in IMAGE_REASONS + FACE_REASONS},
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


def summary_line(stats: dict[str, Any]) -> str:
    """One line: the funnel and where the table went."""
    failed = sum(stats["decode_failures"].values())
    rejected = ", ".join(f"{k} {v:,}" for k, v in stats["rejected_faces"].items() if v)
    done_now = stats.get("processed_now", stats["images"])
    errors = stats["reasons"].get("crop_error", 0)
    return (
        f"crop: {stats['images']:,} images ({failed:,} unreadable, {stats['no_face']:,} without a face"
        + (f", {errors:,} failed with an error: see failures in the stats" if errors else "") + ") -> "
        f"{stats['faces']:,} faces -> {stats['crops']:,} crops"
        + (f" (rejected: {rejected})" if rejected else "")
        + f"; {done_now:,} images processed now in {stats.get('seconds', 0):.1f}s -> {stats['output']}"
    )
