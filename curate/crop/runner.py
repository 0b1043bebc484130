"""Stage 2, crop: find anime faces and cut a 512x256 (height x width) portrait around each.

`Cropper` is the per-image unit: configured once with a `CropConfig`, called with one `Source` and
the image's bytes, it returns an `ImageResult` (crop rows, each crop's encoded image bytes, reason
codes) and never raises for bad input; it writes nothing. It decodes
the image reduced for the detector (faces too small to give a usable crop need not be found, so the
detector works on a fraction of the pixels), runs the cascade, places a portrait box per face
(curate.crop.geometry), and only then decodes the full image to cut, resize and encode the crops.

`run_crop()` reads each file and maps the unit over a process pool (`_CropAndWrite`: the worker that
ran the unit writes its crop files and overlay, atomically, so image bytes never cross a pipe) in order and records finished work in chunks: a chunk's
crop images are written first, then its rows and counts as a part file, atomically. A killed run
redoes at most the chunks in flight; the final crops.parquet is assembled from the parts in input
order, so the same input gives byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from curate import __version__
from curate.core.atomic import atomic_path, write_bytes, write_json
from curate.core.image import DECODE_REASONS, Decoded, DecodeFailure, decode_image, read_bytes
from curate.crop.geometry import Box, Portrait, min_source_height, portrait_box, scale_box, smallest_useful_face
from curate.core.pool import default_workers, ordered_map
from curate.core.workdir import CROPS_SCHEMA, Workdir
from curate.core.errors import InputError

FACE_REASONS = ("too_small", "does_not_fit")
IMAGE_REASONS = DECODE_REASONS + ("no_face", "crop_error")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
CHUNK = 128  # images per part file: the unit of resumption
CROP_OVERSAMPLE = 2.0  # a reduced decode for cutting crops keeps at least this x the output's height
FAILURE_SAMPLES = 100
PARTS_DIR = ".crop-parts"


@dataclass(frozen=True)
class CropConfig:
    """Everything that decides the crops; its fingerprint keys the resumable parts."""

    cascade: str  # path of the cascade XML
    cascade_sha256: str
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 24  # detector window floor, in detector pixels
    min_face: int | None = None  # smallest face to look for, source pixels (None: the smallest useful one)
    k: float = 2.5  # crop width / face width: whole head and bust (chosen on overlay sheets, docs/crop-geometry.md)
    min_k: float = 1.75  # much below this the hair is cut off
    pad: bool = False
    out_height: int = 512
    out_width: int = 256
    max_upscale: float = 2.0
    max_faces: int = 3
    fmt: str = "png"
    max_pixels: int = 89_478_485  # Pillow's own default limit
    png_compression: int = 3

    @property
    def face_floor(self) -> int:
        """The smallest face (source pixels) the detector must find."""
        return self.min_face or smallest_useful_face(self.out_height, self.max_upscale, self.k)

    @property
    def detect_reduction(self) -> float:
        """Detector image size / source size: the window floor then matches the smallest useful face."""
        return min(1.0, self.min_size / self.face_floor)

    def fingerprint(self) -> str:
        """A short hash of every setting that changes the output (not the cascade's path)."""
        d = asdict(self)
        d.pop("cascade")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Source:
    """One source image: its path on disk, its name in the tables, and its post id (None for a folder)."""

    path: str
    source: str
    crop_base: str  # crop ids are f"{crop_base}_{face_index}"
    post_id: int | None = None


@dataclass
class Face:
    """A detected face in source pixels, with the cascade's level weight as confidence."""

    box: Box
    confidence: float


@dataclass
class ImageResult:
    """What one image gave: crop rows and their encoded images, its own reason (a decode failure or no_face), per-face reasons."""

    source: str
    reason: str | None = None
    detail: str = ""
    faces: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    face_reasons: Counter = field(default_factory=Counter)
    over_max_faces: int = 0
    padded: int = 0
    crops: list[bytes] = field(default_factory=list)  # the encoded crop of each row, in order
    overlay: bytes | None = None  # the JPEG overlay sheet of this image, when asked for


def detect_faces(classifier, gray: np.ndarray, scale_factor: float, min_neighbors: int, min_size: int) -> list[tuple[Box, float]]:
    """Faces in an equalised greyscale image, most confident first (ties: top-left first)."""
    rects, _levels, weights = classifier.detectMultiScale3(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size),
        outputRejectLevels=True,
    )
    faces = [(Box(*map(int, r)), float(w)) for r, w in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1))]
    faces.sort(key=lambda f: (-f[1], f[0].y, f[0].x, f[0].w))
    return faces


def detector_input(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """RGB image -> greyscale at `size` (area-averaged), histogram-equalised: what the cascade sees."""
    import cv2

    gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
    if (gray.shape[1], gray.shape[0]) != size:
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(gray)


class Cropper:
    """The per-image unit: (Source, image bytes) -> ImageResult. Picklable; writes nothing; the cascade loads lazily per process."""

    def __init__(self, config: CropConfig, overlays: bool = False):
        self.config = config
        self.overlays = overlays  # also draw each image's overlay (ImageResult.overlay)
        self._classifier = None
        self._pid = None

    def __getstate__(self):
        # cv2.CascadeClassifier does not pickle; each process loads its own.
        state = self.__dict__.copy()
        state["_classifier"] = None
        state["_pid"] = None
        return state

    @property
    def classifier(self):
        """The cascade, loaded once in this process."""
        if self._classifier is None or self._pid != os.getpid():
            from curate.crop.cascades import load_cascade

            self._classifier = load_cascade(self.config.cascade)
            self._pid = os.getpid()
        return self._classifier

    def __call__(self, src: Source, data: bytes) -> ImageResult:
        """Detect, place and cut every face of one image, given its bytes (`src` names it; its path is not read).

        Bad input has its own reason codes (curate.core.image). Anything else that goes wrong with one
        image (a file that defeats the decoder in a new way, or a bug) becomes reason `crop_error` with
        the exception in the detail and no crops, so one image never costs the run. The cascade is
        loaded outside this guard: a broken cascade is the run's problem, not an image's.
        """
        self.classifier  # noqa: B018
        try:
            return self._crop(src, data)
        except Exception as e:  # noqa: BLE001
            return ImageResult(src.source, reason="crop_error", detail=f"{type(e).__name__}: {e}")

    def _crop(self, src: Source, data: bytes) -> ImageResult:
        cfg = self.config
        res = ImageResult(src.source)
        small = decode_image(data, cfg.max_pixels, cfg.detect_reduction)
        if isinstance(small, DecodeFailure):
            res.reason, res.detail = small.reason, small.detail
            return res
        width, height = small.source_size
        dw = max(1, round(width * cfg.detect_reduction))
        dh = max(1, round(height * cfg.detect_reduction))
        gray = detector_input(small.image, (dw, dh))
        sx, sy = width / dw, height / dh
        found = detect_faces(self.classifier, gray, cfg.scale_factor, cfg.min_neighbors, cfg.min_size)
        faces = [Face(scale_box(b, sx, sy, (width, height)), c) for b, c in found]
        res.faces = len(faces)
        if not faces:
            res.reason = "no_face"
            res.overlay = self._overlay(small, faces, [])
            return res

        min_h = min_source_height(cfg.out_height, cfg.max_upscale)
        placed: list[tuple[int, Face, Portrait | str]] = []
        accepted = 0
        for index, face in enumerate(faces):
            if accepted >= cfg.max_faces:
                res.over_max_faces += 1
                continue
            p = portrait_box(face.box, (width, height), cfg.k, cfg.min_k, cfg.pad)
            if isinstance(p, Portrait) and p.box.h < min_h:
                p = "too_small"
            if isinstance(p, str):
                res.face_reasons[p] += 1
            else:
                accepted += 1
            placed.append((index, face, p))
        res.overlay = self._overlay(small, faces, placed)

        keep = [(i, f, p) for i, f, p in placed if isinstance(p, Portrait)]
        if not keep:
            return res
        # Big crops need not the full resolution: the JPEG decoder may scale down (DCT scaling) as
        # long as every crop keeps at least CROP_OVERSAMPLE x the output's pixels before Lanczos.
        reduce_to = min(1.0, max(CROP_OVERSAMPLE * cfg.out_height / p.box.h for _, _, p in keep))
        full = decode_image(data, cfg.max_pixels, reduce_to)
        if isinstance(full, DecodeFailure):  # the reduced decode worked, so this is rare: a lying file
            res.reason, res.detail = full.reason, full.detail
            return res
        for index, face, p in keep:
            crop_id = f"{src.crop_base}_{index}"
            rel = Workdir.crop_file(crop_id, "jpg" if cfg.fmt == "jpg" else "png")
            res.crops.append(self._encode(self._cut(full, p.box)))
            res.padded += p.padded
            res.rows.append({
                "crop_id": crop_id, "post_id": src.post_id, "source": src.source, "face_index": index,
                "face_x": face.box.x, "face_y": face.box.y, "face_w": face.box.w, "face_h": face.box.h,
                "crop_x": p.box.x, "crop_y": p.box.y, "crop_w": p.box.w, "crop_h": p.box.h,
                "scale": cfg.out_height / p.box.h, "confidence": face.confidence,
                "source_width": width, "source_height": height, "file": rel,
            })
        return res

    def _cut(self, decoded: Decoded, box: Box) -> Image.Image:
        """The box (source pixels) from a maybe-reduced image, white beyond its edges, resized to the output size."""
        cfg = self.config
        image = decoded.image
        width, height = decoded.source_size
        # Per axis: a JPEG decoded at 1/2, 1/4 or 1/8 is ceil(side / n) pixels, so the two axes are
        # reduced by slightly different factors (using one for both ran past the image's edge).
        fx, fy = image.width / width, image.height / height
        x0, y0 = max(0, box.x), max(0, box.y)
        x1, y1 = min(width, box.x + box.w), min(height, box.y + box.h)
        size = (cfg.out_width, cfg.out_height)
        # Lanczos with Pillow's support scaled to the reduction: proper antialiasing when shrinking;
        # resize(box=) reads the region in place, with sub-pixel edges on a reduced image.
        if (x0, y0, x1, y1) == (box.x, box.y, box.x + box.w, box.y + box.h):
            region = (x0 * fx, y0 * fy, min(image.width, x1 * fx), min(image.height, y1 * fy))
            return image.resize(size, Image.Resampling.LANCZOS, box=region)
        region = image.crop((round(x0 * fx), round(y0 * fy), min(image.width, round(x1 * fx)),
                             min(image.height, round(y1 * fy))))
        canvas = Image.new("RGB", (round(box.w * fx), round(box.h * fy)), (255, 255, 255))
        canvas.paste(region, (round((x0 - box.x) * fx), round((y0 - box.y) * fy)))
        return canvas.resize(size, Image.Resampling.LANCZOS)

    def _encode(self, image: Image.Image) -> bytes:
        buf = io.BytesIO()
        if self.config.fmt == "jpg":
            image.save(buf, "JPEG", quality=95, subsampling=0)
        else:
            image.save(buf, "PNG", compress_level=self.config.png_compression)
        return buf.getvalue()

    def _overlay(self, small: Decoded, faces: list[Face], placed: list) -> bytes | None:
        if not self.overlays:
            return None
        from curate.crop.overlays import draw_overlay

        return draw_overlay(small, faces, placed)


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
