"""pack on Beam: the local pack's unit (`RecordEncoder`) on every crop, shards written whole by one worker each.

    plan (launcher) ─ chunks of the seeded order ─ Reshuffle ─ EncodeChunk ─ ToList ─┬─ shard numbers ─ Reshuffle ─ WriteShard ─┐
                                                                                      └──────────── side input ─────────────────┴─ Finish

- The plan is the local pack's own (`curate.dataset.pack.prepare`): surviving crops, level sizes, the
  seeded order (decided once, in the launching process), labels, fingerprint.
- EncodeChunk takes a run of consecutive positions of that order, encodes each crop with the unit
  into one reusable buffer and writes the records of the crops that encode straight from it to one
  piece file per level; the chunk's summary (how
  many encoded, which were skipped and why) is written last, as its "done" mark. A rerun, or a retried
  bundle, skips every chunk that has its mark: finished encoding is never redone.
- Once every chunk is known, record r of the dataset is the r-th crop of the order that encoded, so
  shard i holds records [i*S, (i+1)*S) (S = --shard-size; one shard without it). WriteShard, one
  element per level file of a shard (so the levels of one shard are written in parallel), copies
  those records out of the pieces (every record of a level has the same size, so a record is a byte
  range) into the shard's level files, hashing as it goes: the same bytes, in the same order, as the
  local pack writes. A finished shard file has a mark too and is not rewritten.
- Finish writes the labels, moves the files into place and writes dataset.json last, through the
  local pack's `_manifest`, so `curate inspect` and `curate train` read either engine's output.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import os
import time
from typing import Any, Iterator

import apache_beam as beam
import numpy as np

from curate.beam import io as bio
from curate.core.image import DecodeFailure
from curate.dataset import schema as R
from curate.dataset.pack import PackPlan, RecordEncoder, _manifest, named_detail, slot_bytes

CHUNK = 64  # consecutive positions of the order per element
COPY_BLOCK = 1 << 20


def _piece(staging: str, chunk: int, log2: int) -> str:
    return bio.join(staging, f"chunk-{chunk:06d}-r{log2:02d}.part")


def _summary(staging: str, chunk: int) -> str:
    return bio.join(staging, f"chunk-{chunk:06d}.json")


class _Encode(beam.DoFn):
    """(chunk, [(position, crop index, path)]) -> the chunk's summary; where its records go is the subclass's.

    Each crop is encoded by the unit into one reusable buffer and its records written straight from it
    (`_records`), never copied on the way. The summary (how many encoded, which were skipped and why) is
    written last: the chunk's "done" mark, which a rerun or a retried bundle reads back instead.
    """

    def __init__(self, sizes: tuple[tuple[int, int], ...], staging: str, resize: bool = False):
        self.sizes, self.staging = sizes, staging
        self.unit = RecordEncoder(sizes, resize)

    def process(self, item: tuple[int, list[tuple[int, int, str]]]) -> Iterator[dict[str, Any]]:
        chunk, crops = item
        done = _summary(self.staging, chunk)
        if bio.exists(done):
            with bio.open_read(done) as f:
                yield json.load(f)
            return
        buf = np.empty(slot_bytes(self.sizes), np.uint8)
        view = memoryview(buf)
        skipped, encoded = [], 0
        with self._records(chunk) as put:
            for position, crop, path in crops:
                data = bio.read_image(path)
                if isinstance(data, DecodeFailure):
                    reason, detail = data.reason, named_detail(path, data.detail)
                else:
                    reason, detail = self.unit.into(data, buf, name=path)
                if reason is not None:
                    skipped.append({"position": position, "crop": crop, "reason": reason, "detail": detail})
                    continue
                put(position, [view[a:b] for a, b in self.unit.offsets])
                encoded += 1
        summary = {"chunk": chunk, "encoded": encoded, "skipped": skipped}
        bio.write_bytes_atomic(done, json.dumps(summary).encode())
        yield summary

    def _records(self, chunk: int):
        """A context giving put(position, one record per level) for the chunk's encoded crops."""
        raise NotImplementedError


class _EncodeChunk(_Encode):
    """The pieces route: the chunk's records appended to one piece file per level, each written atomically."""

    @contextlib.contextmanager
    def _records(self, chunk: int):
        with contextlib.ExitStack() as files:
            pieces = [files.enter_context(bio.atomic_create(_piece(self.staging, chunk, R.log2(h))))
                      for h, _ in self.sizes]

            def put(position: int, records: list[memoryview]) -> None:
                for piece, record in zip(pieces, records):
                    piece.write(record)

            yield put


class _Layout:
    """Where each record of the dataset lives: chunk summaries -> (chunk, index in its pieces) per record."""

    def __init__(self, summaries: list[dict[str, Any]], shard_size: int | None):
        self.chunks = sorted(summaries, key=lambda s: s["chunk"])
        self.starts = []  # the dataset record number of each chunk's first encoded crop
        total = 0
        for s in self.chunks:
            self.starts.append(total)
            total += s["encoded"]
        self.records = total
        self.per_shard = shard_size or max(total, 1)
        self.shards = -(-total // self.per_shard) if total else 0

    def ranges(self, first: int, end: int) -> Iterator[tuple[int, int, int]]:
        """(chunk, first index in the chunk's pieces, count) covering dataset records [first, end)."""
        k = bisect.bisect_right(self.starts, first) - 1
        while first < end and k < len(self.chunks):
            begin = first - self.starts[k]
            n = min(self.chunks[k]["encoded"] - begin, end - first)
            if n > 0:
                yield self.chunks[k]["chunk"], begin, n
                first += n
            k += 1


class _ShardFile(beam.DoFn):
    """A step with one element per (shard, level) file of the dataset; `_place` says where that file is."""

    def __init__(self, sizes: tuple[tuple[int, int], ...], name: str, shard_size: int | None, staging: str):
        self.sizes, self.name, self.shard_size, self.staging = sizes, name, shard_size, staging

    def _place(self, shard: int, level: int, layout: "_Layout") -> tuple[int, int, int, int, str]:
        """(height, width, first record, end record, final file name) of one file."""
        h, w = self.sizes[level]
        first = shard * layout.per_shard
        end = min(first + layout.per_shard, layout.records)
        return h, w, first, end, R.level_file(self.name, h, *((shard, layout.shards) if self.shard_size else ()))


class _WriteShard(_ShardFile):
    """(shard i, level) -> the file entry of that level's file of the shard, copied from the pieces and
    hashed; one element per file, so the files of one shard are written in parallel too."""

    def process(self, item: tuple[int, int], summaries: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        shard, level = item
        layout = _Layout(summaries, self.shard_size)
        h, w, first, end, name = self._place(shard, level, layout)
        staged, mark = bio.join(self.staging, name + ".part"), bio.join(self.staging, name + ".json")
        if bio.exists(mark) and bio.exists(staged):  # written by an earlier run or attempt
            with bio.open_read(mark) as f:
                yield json.load(f)
            return
        rec = R.record_size(h, w)
        digest = hashlib.sha256()
        with bio.atomic_create(staged) as out:
            for chunk, begin, n in layout.ranges(first, end):
                piece = _piece(self.staging, chunk, R.log2(h))
                with bio.open_read(piece) as f:
                    f.seek(begin * rec)
                    left = n * rec
                    while left:
                        block = f.read(min(COPY_BLOCK, left))
                        if not block:
                            raise OSError(f"{piece} is shorter than its summary says")
                        out.write(block)
                        digest.update(block)
                        left -= len(block)
        entry = {"staged": staged, "file": name, "log2": R.log2(h), "sha256": digest.hexdigest(),
                 "bytes": (end - first) * rec, "records": end - first, "order": [level, shard]}
        bio.write_bytes_atomic(mark, json.dumps(entry).encode())
        yield entry


def _provisional(staging: str, log2: int, shard: int) -> str:
    return bio.join(staging, f"inplace-r{log2:02d}-{shard}.part")


class _EncodeInPlace(_Encode):
    """The in-place route: each record written once, at its place.

    For an output on a file system every worker shares (a local disk, a mounted share): record k of the
    order goes straight to byte (k mod S) * record size of provisional shard k div S of its level, as it
    would if no crop failed (S: --shard-size, or one shard). A failed crop leaves a gap, which Finish
    closes. Nothing is written twice, where the pieces route writes every record twice.
    """

    def __init__(self, sizes: tuple[tuple[int, int], ...], staging: str, per_shard: int, resize: bool = False):
        super().__init__(sizes, staging, resize)
        self.per_shard = per_shard

    @contextlib.contextmanager
    def _records(self, chunk: int):
        fds: dict[tuple[int, int], int] = {}

        def put(position: int, records: list[memoryview]) -> None:
            shard, slot = divmod(position, self.per_shard)
            for level, ((h, w), record) in enumerate(zip(self.sizes, records)):
                fd = fds.get((level, shard))
                if fd is None:
                    fd = fds[(level, shard)] = os.open(_provisional(self.staging, R.log2(h), shard),
                                                       os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
                os.pwrite(fd, record, slot * R.record_size(h, w))

        try:
            yield put
            for fd in fds.values():
                os.fsync(fd)  # the records are on disk before the summary says the chunk is done
        finally:
            for fd in fds.values():
                os.close(fd)


class _HashFile(_ShardFile):
    """(shard, level) of a gap-free in-place dataset -> its file entry (the provisional file, hashed)."""

    def process(self, item: tuple[int, int], summaries: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        shard, level = item
        layout = _Layout(summaries, self.shard_size)
        if any(c["skipped"] for c in layout.chunks):
            return  # a gap: Finish rewrites the files in order instead
        h, w, first, end, name = self._place(shard, level, layout)
        staged = _provisional(self.staging, R.log2(h), shard)
        with open(staged, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
        size = os.path.getsize(staged)
        if size != (end - first) * R.record_size(h, w):
            raise OSError(f"{staged} holds {size} bytes, not the {end - first} records its chunks wrote")
        yield {"staged": staged, "file": name, "log2": R.log2(h), "sha256": digest.hexdigest(), "bytes": size, "records": end - first,
               "order": [level, shard]}


def _close_gaps(plan: PackPlan, staging: str, sizes, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The in-place files rewritten in order without the failed crops' slots: the final files' entries.

    The rare path (a crop failed): every level is read once in order and written once more, by this one
    worker; the records shift, so no file can be kept as it is.
    """
    layout = _Layout(summaries, plan.config.shard_size)
    failed = {s["position"] for c in layout.chunks for s in c["skipped"]}
    per = layout.per_shard  # the shards of the written records
    guess = plan.config.shard_size or max(len(plan.order), 1)  # the shards the positions were written to
    entries = []
    for level, (h, w) in enumerate(sizes):
        rec = R.record_size(h, w)
        out_f = digest = None
        written = shard = 0
        sources: dict[int, Any] = {}
        try:
            for position in range(len(plan.order)):
                if position in failed:
                    continue
                if out_f is None:
                    staged = bio.join(staging, f"closed-r{R.log2(h):02d}-{shard}.part")
                    out_f, digest, start = open(staged, "wb"), hashlib.sha256(), written
                src_shard, slot = divmod(position, guess)
                if src_shard not in sources:
                    sources[src_shard] = open(_provisional(staging, R.log2(h), src_shard), "rb")
                f = sources[src_shard]
                f.seek(slot * rec)
                record = f.read(rec)
                out_f.write(record)
                digest.update(record)
                written += 1
                if written % per == 0 or written == layout.records:
                    out_f.close()
                    entries.append({"staged": staged, "file": R.level_file(plan.config.name, h,
                                                                           *((shard, layout.shards) if plan.config.shard_size else ())),
                                    "log2": R.log2(h), "sha256": digest.hexdigest(), "bytes": (written - start) * rec,
                                    "records": written - start, "order": [level, shard]})
                    out_f, shard = None, shard + 1
        finally:
            for f in sources.values():
                f.close()
            if out_f is not None:
                out_f.close()
    return entries


class _Finish(beam.DoFn):
    """Every shard's files -> labels, the files in place, dataset.json last; the staging folder removed."""

    def __init__(self, plan: PackPlan, staging: str, started: float, in_place: bool = False):
        self.plan, self.staging, self.started, self.in_place = plan, staging, started, in_place

    def process(self, entries: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        plan = self.plan
        skipped = [{"crop": s["crop"], "reason": s["reason"], "detail": s["detail"]}
                   for c in sorted(summaries, key=lambda c: c["chunk"]) for s in c["skipped"]]
        if self.in_place and skipped:
            entries = _close_gaps(plan, self.staging, tuple(tuple(x) for x in plan.sizes), summaries)
        files = [{k: v for k, v in e.items() if k != "order"} for e in sorted(entries, key=lambda e: e["order"])]
        records = sum(f["records"] for f in files if f["log2"] == R.log2(plan.sizes[0][0]))
        if records == 0:
            raise ValueError("no crop could be packed; nothing was written")
        if plan.labels is not None:
            dropped = {s["crop"] for s in skipped}
            kept = [int(i) for i in plan.order if int(i) not in dropped]
            buf = io.BytesIO()
            np.save(buf, plan.labels[kept].astype(np.float32))
            staged = bio.join(self.staging, "labels.part")
            bio.write_bytes_atomic(staged, buf.getvalue())
            files.append({"staged": staged, "file": R.labels_file(plan.config.name), "log2": None,
                          "sha256": hashlib.sha256(buf.getvalue()).hexdigest(), "bytes": len(buf.getvalue()),
                          "records": len(kept)})
        state = {"records": records, "skipped": skipped, "files": files}
        manifest = _manifest(plan.wd, plan.config, plan.sizes, plan.crops, plan.counts, plan.order, plan.labels,
                             plan.tables, plan.fingerprint, state)
        out = str(plan.out)
        manifest_path = bio.join(out, R.MANIFEST)
        if bio.exists(manifest_path):
            bio.delete(manifest_path)  # never a manifest that disagrees with the files beside it
        for f in files:
            bio.move(f["staged"], bio.join(out, f["file"]))
        bio.write_bytes_atomic(manifest_path, (json.dumps(manifest, indent=2, default=str) + "\n").encode())
        bio.delete_tree(self.staging)
        yield {**manifest, "engine": "beam", "seconds": round(time.time() - self.started, 3)}


class PackTransform(beam.PTransform):
    """The pack stage on Beam, from the local pack's plan: -> OUT/*.tfrecords + dataset.json (one stats element).

    `in_place` (default: when OUT is on a file system, not object storage) writes each record once, at
    its place (_EncodeInPlace); otherwise records go to per-chunk pieces and each shard's files are
    copied out of them (_EncodeChunk, _WriteShard), which works wherever FileSystems can write.
    """

    def __init__(self, plan: PackPlan, chunk: int = CHUNK, in_place: bool | None = None):
        super().__init__()
        self.plan, self.chunk = plan, chunk
        self.in_place = "://" not in str(plan.out) if in_place is None else in_place

    def expand(self, pbegin):
        plan = self.plan
        staging = bio.join(str(plan.out), ".pack-beam", plan.fingerprint[:16])
        bio.mkdirs(staging)
        sizes = tuple(tuple(s) for s in plan.sizes)
        positions = [(k, int(crop), plan.paths[int(crop)]) for k, crop in enumerate(plan.order)]
        chunks = [(j, positions[at:at + self.chunk]) for j, at in enumerate(range(0, len(positions), self.chunk))]
        shard_size = plan.config.shard_size
        encode = (_EncodeInPlace(sizes, staging, shard_size or max(len(positions), 1), plan.config.resize)
                  if self.in_place else _EncodeChunk(sizes, staging, plan.config.resize))
        summaries = (pbegin | "Chunks" >> beam.Create(chunks)
                     | "SpreadChunks" >> beam.Reshuffle()
                     | "EncodeChunk" >> beam.ParDo(encode))
        every = summaries | "AllChunks" >> beam.combiners.ToList()
        write = (_HashFile if self.in_place else _WriteShard)(sizes, plan.config.name, shard_size, staging)
        entries = (every
                   | "Shards" >> beam.FlatMap(lambda s: [(i, level) for i in range(_Layout(s, shard_size).shards)
                                                         for level in range(len(sizes))])
                   | "SpreadShards" >> beam.Reshuffle()
                   | "WriteShard" >> beam.ParDo(write, summaries=beam.pvalue.AsSingleton(every)))
        return (entries | "AllFiles" >> beam.combiners.ToList()
                | "Finish" >> beam.ParDo(_Finish(plan, staging, time.time(), self.in_place),
                                         summaries=beam.pvalue.AsSingleton(every)))
