"""`curate inspect`'s work: read a packed dataset back with tf.data and check it against its manifest.

Reading through TensorFlow's own TFRecordDataset and the parse function the trainer uses
(curate.dataset.schema.parse_example) is the point: it proves TensorFlow reads what pack wrote. Every
problem becomes a `Problem` (file, kind, detail) rather than an exception, so one run reports all of
them. Kinds: missing file, unexpected file, hash mismatch, bad crc, truncated record, wrong shape,
count mismatch, bad manifest.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curate.core.grid import render_grid, upscale_to, write_png
from curate.core.hashing import file_sha256
from curate.dataset import schema as R


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file ("" = the dataset folder as a whole)."""

    file: str  # relative to the dataset folder
    kind: str
    detail: str

    def line(self, directory: str | os.PathLike = "") -> str:
        """'<path>: <kind>: <detail>', the path inside `directory` (the folder itself when file is "")."""
        where = os.path.join(directory, self.file) if self.file else os.fspath(directory) or "."
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class LevelReport:
    """What was read for one level."""

    log2: int
    height: int
    width: int
    files: list[str]
    records: int = 0
    bytes: int = 0
    expected: int | None = None
    hashes_ok: bool | None = None  # None: no manifest to compare with
    samples: list[np.ndarray] = field(default_factory=list)


@dataclass
class Report:
    """The result of inspecting one dataset folder."""

    directory: Path
    manifest: dict[str, Any] | None
    levels: list[LevelReport]
    problems: list[Problem]


def _classify_tf_error(e: Exception) -> str:
    msg = str(e).lower()
    if "truncated" in msg:
        return "truncated record"
    if "corrupt" in msg or "checksum" in msg or "crc" in msg:
        return "bad crc"
    return "wrong shape"


def _tf_message(e: Exception, record_bytes: int) -> str:
    """TensorFlow's error without its op plumbing, with the record number when it names a byte offset."""
    text = (getattr(e, "message", None) or str(e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).replace("' failed with", ":")
    m = re.search(r"record at (\d+)", text)
    if m:
        text += f" (record #{int(m[1]) // record_bytes})"
    return text[:300]


def read_level_file(path: Path, height: int, width: int, samples: int) -> tuple[int, list[np.ndarray], list[Problem]]:
    """Read one file with tf.data: (records read, the first `samples` images, problems)."""
    tf = R.import_tensorflow()

    problems: list[Problem] = []
    expected = np.array([R.CHANNELS, height, width])
    count = wrong = 0
    first_wrong = None
    # shapes in batches: one Python step per 1024 records, not per record
    shapes = tf.data.TFRecordDataset(str(path)).map(lambda s: tf.shape(R.parse_example(s))).batch(1024)
    try:
        for batch in shapes:
            batch = batch.numpy()
            bad = np.flatnonzero((batch != expected).any(axis=1))
            if bad.size and first_wrong is None:
                first_wrong = (count + int(bad[0]), batch[bad[0]])
            wrong += bad.size
            count += len(batch)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        m = re.search(r"record at (\d+)", str(e))
        if m:  # every record of a level has the same size, so the offset tells how many came before
            count = int(m[1]) // R.record_size(height, width)
        problems.append(Problem(path.name, _classify_tf_error(e), _tf_message(e, R.record_size(height, width))))
    if wrong:
        i, shape = first_wrong
        problems.append(Problem(path.name, "wrong shape", f"{wrong} record(s) not {R.CHANNELS}x{height}x{width}, "
                                                          f"first #{i}: {'x'.join(map(str, shape))}"))
    images: list[np.ndarray] = []
    if samples > 0 and count:
        for img in R.level_dataset([path]).take(min(samples, count)):
            if tuple(img.shape) == tuple(expected):
                images.append(img.numpy())
    return count, images, problems


def inspect_dataset(directory: str | os.PathLike, samples: int = 8) -> Report:
    """Read every file of a dataset folder with tf.data and check it against dataset.json."""
    directory = Path(directory)
    problems: list[Problem] = []
    manifest = None
    mpath = directory / R.MANIFEST
    if mpath.exists():
        try:
            manifest = json.loads(mpath.read_text())
            _ = manifest["levels"], manifest["files"], manifest["count"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            problems.append(Problem(R.MANIFEST, "bad manifest", f"unreadable ({e})"))
            manifest = None
    else:
        problems.append(Problem(R.MANIFEST, "missing file", "no manifest: counts and hashes cannot be checked"))

    try:
        on_disk = R.dataset_files(directory, manifest["name"] if manifest else None)
    except R.LayoutError as e:
        on_disk = {}
        if manifest is None:
            problems.append(Problem("", "missing file", str(e)))

    levels: list[LevelReport] = []
    if manifest is not None:
        listed = set()
        for lv in manifest["levels"]:
            levels.append(LevelReport(lv["log2"], lv["height"], lv["width"], lv["files"], expected=lv["records"]))
            listed.update(lv["files"])
        for paths in on_disk.values():
            for p in paths:
                if p.name not in listed:
                    problems.append(Problem(p.name, "unexpected file", "not listed in dataset.json"))
    else:
        for lvl, paths in on_disk.items():
            levels.append(LevelReport(lvl, 1 << lvl, 0, [p.name for p in paths]))

    for lv in levels:
        width = lv.width
        lv.hashes_ok = True if manifest else None
        read_errors = False
        for name in lv.files:
            path = directory / name
            if not path.exists():
                problems.append(Problem(name, "missing file", "listed in dataset.json but not on disk"))
                lv.hashes_ok = False
                continue
            lv.bytes += path.stat().st_size
            entry = manifest["files"].get(name) if manifest else None
            if manifest is not None:
                sha = file_sha256(path)
                if entry is None or sha != entry["sha256"] or path.stat().st_size != entry["bytes"]:
                    lv.hashes_ok = False
                    want = f"{entry['sha256'][:12]}.. ({entry['bytes']:,} bytes)" if entry else "no entry"
                    problems.append(Problem(name, "hash mismatch",
                                            f"sha256 {sha[:12]}.. ({path.stat().st_size:,} bytes), manifest says {want}"))
            if width == 0:  # no manifest: learn the width from the first record
                width = _probe_width(path, lv.height)
                lv.width = width
            n, imgs, errs = read_level_file(path, lv.height, width, samples - len(lv.samples))
            lv.records += n
            lv.samples.extend(imgs)
            problems.extend(errs)
            read_errors = read_errors or bool(errs)
            if entry is not None and n != entry["records"] and not errs:
                problems.append(Problem(name, "count mismatch", f"{n} records, manifest says {entry['records']}"))
        if lv.expected is not None and lv.records != lv.expected and not read_errors and len(lv.files) > 1:
            problems.append(Problem(R.level_file(manifest["name"], lv.height), "count mismatch",
                                    f"level r{lv.log2:02d} has {lv.records} records, manifest says {lv.expected}"))

    if manifest is not None and manifest.get("labels"):
        problems.extend(_check_labels(directory, manifest))
    if manifest is None and len({lv.records for lv in levels}) > 1:
        problems.append(Problem("", "count mismatch",
                                "levels differ: " + ", ".join(f"r{lv.log2:02d} {lv.records}" for lv in levels)))
    return Report(directory, manifest, levels, problems)


def _probe_width(path: Path, height: int) -> int:
    with open(path, "rb") as f:
        try:
            first = next(R.iter_records(f))
            return int(R.decode_example(first).shape[2])
        except (StopIteration, R.RecordError, ValueError, KeyError, IndexError):
            return height // 2


def _check_labels(directory: Path, manifest: dict) -> list[Problem]:
    info = manifest["labels"]
    name = info["file"]
    path = directory / name
    if not path.exists():
        return [Problem(name, "missing file", "labels listed in dataset.json but not on disk")]
    out = []
    entry = manifest["files"].get(name)
    if entry and file_sha256(path) != entry["sha256"]:
        out.append(Problem(name, "hash mismatch", "sha256 differs from dataset.json"))
    try:
        labels = np.load(path)
    except (ValueError, OSError) as e:
        return out + [Problem(name, "wrong shape", f"not a NumPy array file ({e})")]
    want = (manifest["count"], len(info["names"]))
    if labels.shape != want or labels.dtype != np.float32:
        out.append(Problem(name, "wrong shape", f"{labels.dtype} {list(labels.shape)}, expected float32 {list(want)}"))
    return out


def level_table(report: Report) -> str:
    """The per-level table inspect prints."""
    rows = [("level", "size", "files", "records", "expected", "MB", "sha256")]
    for lv in report.levels:
        rows.append((f"r{lv.log2:02d}", f"{lv.height}x{lv.width}", str(len(lv.files)), f"{lv.records:,}",
                     f"{lv.expected:,}" if lv.expected is not None else "-", f"{lv.bytes / 1e6:,.2f}",
                     {True: "ok", False: "MISMATCH", None: "-"}[lv.hashes_ok]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def sample_grid(report: Report, gap: int = 2) -> np.ndarray | None:
    """HWC uint8 picture: one row per sample, one column per level, each upscaled (nearest) to the top height."""
    levels = [lv for lv in report.levels if lv.samples]
    if not levels:
        return None
    n = min(len(lv.samples) for lv in levels)
    top_h = max(lv.height for lv in levels)
    tiles = [upscale_to(lv.samples[i].transpose(1, 2, 0), top_h) for i in range(n) for lv in levels]
    cell = (max(t.shape[1] for t in tiles), top_h)
    return np.asarray(render_grid(tiles, len(levels), cell, gap=gap, background=(32, 32, 32), fit="contain"))


def dataset_inputs(directory: str | os.PathLike) -> list[Path]:
    """The files inspect reads in a dataset folder (the manifest, level files, labels): never an output."""
    names = re.compile(r"(\.tfrecords|\.labels)$")
    return [p for p in Path(directory).iterdir() if p.name == R.MANIFEST or names.search(p.name)]


def write_grid(grid: np.ndarray, path: str | os.PathLike) -> None:
    """Save the grid as a PNG, atomically."""
    write_png(Image.fromarray(grid), path)
