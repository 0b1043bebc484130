"""crop on Beam: the local crop's unit (`Cropper`) on every image, in resumable chunks, through FileSystems.

    sources ─ chunks ─ Reshuffle ─ CropChunk ─ ToList ─ Assemble
                                   │ per chunk: done before? read its part back : read each image,
                                   │ run Cropper, write its crops (named as locally), then the part
                                   └ (rows + counts), each write atomic

A chunk is the unit of work and of resumption, as in the local runner (`curate.crop.runner`): its crop
files are written before its part, and the part's counts file is its "done" mark, so a rerun after a
failure (or a retried bundle) redoes only the chunks that had not finished, and rewrites the same
bytes if it redoes one. Assemble concatenates the parts in input order into crops.parquet and writes
the same funnel (`curate.crop.runner.funnel`) as the local run, so `curate report` reads either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import apache_beam as beam
import pyarrow.parquet as pq

from curate import __version__
from curate.beam import io as bio
from curate.core.image import DecodeFailure
from curate.crop.cropper import CropConfig, Cropper, ImageResult, Source
from curate.crop.runner import PARTS_DIR, add_chunk, add_result, chunk_key, funnel, new_counts, rows_table

CHUNK = 8  # images per element: smaller than the local runner's 128, so that a few hundred images still spread


class _CropChunk(beam.DoFn):
    """(chunk index, part key, sources) -> (chunk index, counts, rows), writing crops and the part."""

    def __init__(self, config: CropConfig, workdir: str, parts: str):
        self.config, self.workdir, self.parts = config, workdir, parts
        # The cascade travels with the step: a remote worker has no file at the launching machine's path.
        self.cascade = Path(config.cascade).read_bytes()
        self.cropper: Cropper | None = None

    def setup(self) -> None:
        if hashlib.sha256(self.cascade).hexdigest() != self.config.cascade_sha256:
            raise ValueError("the cascade's bytes do not match its sha256 in the crop config")
        fd, path = tempfile.mkstemp(prefix="curate-cascade-", suffix=".xml")
        with os.fdopen(fd, "wb") as f:
            f.write(self.cascade)
        # the path is not part of the config's fingerprint: parts and crops are named as locally
        self.cropper = Cropper(dataclasses.replace(self.config, cascade=path))

    def process(self, item: tuple[int, str, list[Source]]) -> Iterator[tuple[int, dict[str, Any], list[dict]]]:
        index, key, sources = item
        counts_path, rows_path = bio.join(self.parts, f"{key}.json"), bio.join(self.parts, f"{key}.parquet")
        if bio.exists(counts_path) and bio.exists(rows_path):  # finished by an earlier run or attempt
            with bio.open_read(counts_path) as f:
                counts = json.load(f)
            with bio.open_read(rows_path) as f:
                rows = pq.read_table(f, schema=self.config.table_schema).to_pylist()
            yield index, counts, rows
            return
        counts, rows = new_counts(), []
        for src in sources:
            result = self._crop(src)
            add_result(counts, result)
            rows.extend(result.rows)
        with bio.atomic_create(rows_path) as f:
            pq.write_table(rows_table(rows, self.config.table_schema), f)
        bio.write_bytes_atomic(counts_path, json.dumps(counts, default=dict).encode())
        yield index, json.loads(json.dumps(counts, default=dict)), rows

    def _crop(self, src: Source) -> ImageResult:
        if src.reason is not None:  # the folder listing's rejects (a FIFO, a broken link) are never opened
            return ImageResult(src.source, reason=src.reason, detail=src.detail)
        data = bio.read_image(src.path)
        if isinstance(data, DecodeFailure):
            return ImageResult(src.source, reason=data.reason, detail=data.detail)
        assert self.cropper is not None
        result = self.cropper(src, data)
        for row, crop in zip(result.rows, result.crops):
            bio.write_bytes_atomic(bio.join(self.workdir, row["file"]), crop)
        result.crops = []
        return result


class _Assemble(beam.DoFn):
    """Every chunk's rows and counts -> crops.parquet and crops.stats.json, in input order."""

    def __init__(self, config: CropConfig, workdir: str, inputs: dict[str, Any], started: float):
        self.config, self.workdir, self.inputs, self.started = config, workdir, inputs, started

    def process(self, chunks: list[tuple[int, dict[str, Any], list[dict]]]) -> Iterator[dict[str, Any]]:
        total, rows = new_counts(), []
        for _, counts, chunk_rows in sorted(chunks, key=lambda c: c[0]):
            add_chunk(total, counts)
            rows.extend(chunk_rows)
        table = rows_table(rows, self.config.table_schema)
        out = bio.join(self.workdir, "crops.parquet")
        with bio.atomic_create(out) as f:
            pq.write_table(table, f)
        stats = funnel(out, total, self.config)
        stats.update({"engine": "beam", "inputs": self.inputs, "workers": None, "curate_version": __version__,
                      "seconds": round(time.time() - self.started, 3)})
        bio.write_bytes_atomic(bio.join(self.workdir, "crops.stats.json"),
                               (json.dumps(stats, indent=2, default=str) + "\n").encode())
        yield stats


class CropTransform(beam.PTransform):
    """The crop stage on Beam: sources -> WORKDIR/crops/..., crops.parquet, crops.stats.json (one stats element)."""

    def __init__(self, sources: list[Source], workdir: str, config: CropConfig, inputs: dict[str, Any] | None = None,
                 chunk: int = CHUNK):
        super().__init__()
        self.sources, self.workdir, self.config = sources, str(workdir), config
        self.inputs, self.chunk = inputs or {}, chunk

    def expand(self, pbegin):
        parts = bio.join(self.workdir, PARTS_DIR, self.config.fingerprint())
        bio.mkdirs(parts)
        chunks = [self.sources[i:i + self.chunk] for i in range(0, len(self.sources), self.chunk)]
        items = [(i, f"{i:06d}-{chunk_key(self.config, c)}", c) for i, c in enumerate(chunks)]
        return (pbegin | "Chunks" >> beam.Create(items)
                | "Spread" >> beam.Reshuffle()
                | "CropChunk" >> beam.ParDo(_CropChunk(self.config, self.workdir, parts))
                | "AllChunks" >> beam.combiners.ToList()
                | "Assemble" >> beam.ParDo(_Assemble(self.config, self.workdir, self.inputs, time.time())))
