"""score on Beam: the local score's unit (`CropScorer`) on batches of crops, the network set up once per worker.

    crops table (launcher) ─ batches ─ Reshuffle ─ ScoreBatch ─ ToList ─ Finish

- A batch is the local runner's chunk (`--chunk` rows of the crops table, in order) and is written as
  the same part file (`.score-parts/<fingerprint>/part-NNNNN.parquet`): finished batches are read back,
  never scored again, whichever engine finished them. Batches are fixed, not Beam's `BatchElements`,
  because a part must hold the same rows on every run for a resume to reuse it.
- ScoreBatch loads the network in `DoFn.setup` (once per worker process) and feeds the unit
  `--batch-size` crops at a time, as the local runner does.
- Finish decides each crop from its measurements (`curate.score.runner.decided_table`) and writes
  scores.parquet and scores.stats.json with the local runner's stats (`score_stats`).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from curate.beam import io as bio
from curate.core.workdir import Workdir
from curate.score.runner import CHUNK, PART_SCHEMA, decided_table, fingerprint, read_crops, resolve_scorer, score_stats
from curate.score.scorer import CropScorer, ScoreRules


class _ScoreBatch(beam.DoFn):
    """(batch number, crop rows) -> (batch number, its measurements table), the part written atomically."""

    def __init__(self, unit: CropScorer, workdir: str, parts: str):
        self.unit, self.workdir, self.parts = unit, workdir, parts

    def setup(self) -> None:
        self.unit.network()  # the network, once per worker process (nothing for the heuristic)

    def process(self, item: tuple[int, list[dict[str, Any]]]) -> Iterator[tuple[int, bytes, bool]]:
        k, rows = item
        part = bio.join(self.parts, f"part-{k:05d}.parquet")
        if bio.exists(part):
            with bio.open_read(part) as f:
                yield k, f.read(), True
            return
        data = [bio.read_image(bio.join(self.workdir, r["file"])) for r in rows]
        table = self.unit(list(zip(rows, data)))
        buf = io.BytesIO()
        pq.write_table(table, buf)
        bio.write_bytes_atomic(part, buf.getvalue())
        yield k, buf.getvalue(), False


class _Finish(beam.DoFn):
    def __init__(self, workdir: str, rules: ScoreRules, facts: dict[str, Any], started: float):
        self.workdir, self.rules, self.facts, self.started = workdir, rules, facts, started

    def process(self, parts: list[tuple[int, bytes, bool]]) -> Iterator[dict[str, Any]]:
        parts = sorted(parts, key=lambda p: p[0])
        tables = [pq.read_table(io.BytesIO(data)) for _, data, _ in parts]
        raw = pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table()
        scores, reasons = decided_table(raw, self.rules)
        buf = io.BytesIO()
        pq.write_table(scores, buf)
        out = bio.join(self.workdir, "scores.parquet")
        bio.write_bytes_atomic(out, buf.getvalue())
        f = self.facts
        stats = score_stats(out, raw, reasons, self.rules, f["name"], f["scorer"], f["why"], f["model"], f["fingerprint"],
                            len(parts), sum(1 for _, _, reused in parts if reused))
        seconds = time.time() - self.started
        scored = sum(t.num_rows for t, (_, _, reused) in zip(tables, parts) if not reused)
        stats.update({"engine": "beam", "scores_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                      "seconds": round(seconds, 3), "crops_per_s": round(scored / seconds, 2) if scored else None})
        bio.write_bytes_atomic(bio.join(self.workdir, "scores.stats.json"),
                               (json.dumps(stats, indent=2, default=str) + "\n").encode())
        yield stats


class ScoreTransform(beam.PTransform):
    """The score stage on Beam: WORKDIR's crops -> scores.parquet + scores.stats.json (one stats element)."""

    def __init__(self, workdir: str, rules: ScoreRules = ScoreRules(), scorer: str = "auto", models_root=None,
                 batch_size: int = 32, top_k: int = 10, chunk: int = CHUNK):
        super().__init__()
        from curate.score.models import models_dir

        self.wd = Workdir(workdir)
        self.rules, self.chunk = rules, chunk
        root = models_dir(models_root)
        name, why = resolve_scorer(scorer, root)
        self.unit = CropScorer(name, root, batch_size=batch_size, top_k=top_k, threads=1)
        model = self.unit.model_info()
        self.facts = {"name": name, "scorer": scorer, "why": why, "model": model,
                      "fingerprint": fingerprint(self.wd.crops_table, name, model and model["weights_sha256"], top_k, chunk)}
        self.unit = CropScorer(name, root, batch_size=batch_size, top_k=top_k, threads=1)  # unloaded: it travels

    def expand(self, pbegin):
        crops = read_crops(self.wd)
        rows = crops.to_pylist()
        batches = [(k, rows[at:at + self.chunk]) for k, at in enumerate(range(0, len(rows), self.chunk))]
        parts = bio.join(str(self.wd.root), ".score-parts", self.facts["fingerprint"])
        bio.mkdirs(parts)
        return (pbegin | "Batches" >> beam.Create(batches)
                | "Spread" >> beam.Reshuffle()
                | "ScoreBatch" >> beam.ParDo(_ScoreBatch(self.unit, str(self.wd.root), parts))
                | "AllBatches" >> beam.combiners.ToList()
                | "Finish" >> beam.ParDo(_Finish(str(self.wd.root), self.rules, self.facts, time.time())))
