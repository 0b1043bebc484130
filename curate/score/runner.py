"""Stage 3, score, the local runner: the `CropScorer` unit (curate.score.scorer) over the crops table.

`run_score()` feeds the unit chunks of the crops table; raw results are written per chunk into
WORKDIR/.score-parts/<fingerprint>/ (atomically), so a killed run resumes at the first missing chunk.
`decide()` runs when the parts are assembled into scores.parquet, so changing a threshold re-decides
without re-scoring. The reasons and the person probability are explained in curate.score.scorer.

One run at a time writes a workdir's scores (WORKDIR/.score.lock, curate.core.lock). A rerun with
the same inputs, scorer and thresholds finds scores.parquet as its stats file describes it and
rewrites nothing. A full, read-only or failing disk stops the stage with one line naming the workdir
(exit 1); the chunks already written are kept, so the same command resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import __version__
from curate.core.atomic import atomic_path, write_json
from curate.core.image import read_bytes
from curate.core.workdir import SCORES_SCHEMA, Workdir
from curate.core.errors import CurateError, environment_failure, is_environment_error
from curate.core.hashing import file_hash, file_sha256
from curate.core.location import readable
from curate.core.lock import stage_lock
from curate.score.scorer import CropScorer, PART_SCHEMA, REASONS, ScoreRules, decide

CHUNK = 256  # crops per resumable part: ~10 s of full-width inference on 2 CPU cores


class ScoreInputError(CurateError):
    """The workdir cannot be scored (no crops table, wrong columns); the message says what to do."""


# ------------------------------------------------------------------------------------------ per crop


# ------------------------------------------------------------------------------------------ scorers


def stats_path(workdir: Workdir) -> Path:
    """scores.parquet -> scores.stats.json."""
    return workdir.root / "scores.stats.json"


def parts_root(workdir: Workdir) -> Path:
    """Where resumable chunks live (one folder per input fingerprint)."""
    return workdir.root / ".score-parts"


def lock_path(workdir: Workdir) -> Path:
    """The lock a score run holds on the workdir's scores."""
    return workdir.root / ".score.lock"


def read_crops(workdir: Workdir) -> pa.Table:
    """The columns of the crops table this stage needs; ScoreInputError when it is absent or wrong."""
    path = workdir.crops_table
    if not path.is_file():
        raise ScoreInputError(f"{path} not found; run 'curate crop' first (or give the workdir that holds crops.parquet)")
    try:
        table = pq.read_table(readable(path), columns=["crop_id", "file", "confidence"])
    except (pa.ArrowInvalid, KeyError, OSError) as e:
        raise ScoreInputError(f"{path} is not a crops table with crop_id, file, confidence: {e}") from None
    return table


def fingerprint(crops_table: Path, scorer: str, model_sha: str | None, top_k: int, chunk: int) -> str:
    """What the parts depend on: the crops table's bytes, the scorer and its weights, chunking."""
    h = file_hash(crops_table, "sha256")
    h.update(json.dumps([scorer, model_sha, top_k, chunk, __version__]).encode())
    return h.hexdigest()[:20]


def resolve_scorer(choice: str, models_root: Path) -> tuple[str, str]:
    """(scorer to run, why) for --scorer auto|illustration2vec|heuristic."""
    from curate.score.models import installed

    have = installed(models_root) is not None
    if choice == "auto":
        if have:
            return "illustration2vec", f"auto: illustration2vec is installed in {models_root}"
        return "heuristic", f"auto: illustration2vec is not installed in {models_root} (curate models install illustration2vec)"
    if choice == "illustration2vec" and not have:
        from curate.score.models import ModelError

        raise ModelError(f"illustration2vec is not installed in {models_root}; run 'curate models install illustration2vec' "
                         "(or --scorer heuristic)")
    return choice, "asked for"


def _chunks(table: pa.Table, size: int) -> Iterable[tuple[int, list[dict[str, Any]]]]:
    for k, start in enumerate(range(0, table.num_rows, size)):
        yield k, table.slice(start, size).to_pylist()


def run_score(
    workdir: str | os.PathLike | Workdir,
    rules: ScoreRules = ScoreRules(),
    scorer: str = "auto",
    models_root: str | os.PathLike | None = None,
    batch_size: int = 32,
    top_k: int = 10,
    chunk: int = CHUNK,
    threads: int = 2,
    progress: bool = True,
    stop_after_chunks: int | None = None,
) -> dict[str, Any]:
    """Score every crop of the workdir into scores.parquet; return (and save) the stats.

    `stop_after_chunks` ends the run early after writing that many new chunks, as a kill would (tests).
    """
    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    crops = read_crops(wd)  # first: a workdir that is not one is refused before anything is created in it
    try:
        with stage_lock(lock_path(wd), f"the scores of {wd.root}"):
            return _score_locked(wd, crops, rules, scorer, models_root, batch_size, top_k, chunk, threads, progress,
                                 stop_after_chunks)
    except OSError as e:
        # The disk failed the stage, not a crop: name the workdir the user gave (the chunk files are
        # hidden), and keep what is written, so the same command resumes.
        if is_environment_error(e) or isinstance(e, PermissionError):
            if e.errno:  # the system's words, not pyarrow's "Error writing bytes to file. Detail: [errno 28] ..."
                e = OSError(e.errno, os.strerror(e.errno))
            raise environment_failure(e, wd.root) from None
        raise


def _score_locked(wd: Workdir, crops: pa.Table, rules: ScoreRules, scorer: str, models_root, batch_size: int, top_k: int, chunk: int,
                  threads: int, progress: bool, stop_after_chunks: int | None) -> dict[str, Any]:
    from tqdm import tqdm

    from curate.score.models import models_dir

    t0 = time.perf_counter()
    root = models_dir(models_root)
    name, why = resolve_scorer(scorer, root)
    unit = CropScorer(name, root, batch_size=batch_size, top_k=top_k, threads=threads)
    model_info = unit.model_info()  # loads the network here, in the process that runs it
    fp = fingerprint(wd.crops_table, name, model_info and model_info["weights_sha256"], top_k, chunk)
    done = _up_to_date(wd, fp, rules, scorer, why)
    if done is not None:
        return {**done, "up_to_date": True, "seconds": round(time.perf_counter() - t0, 3)}
    parts = parts_root(wd) / fp
    parts.mkdir(parents=True, exist_ok=True)
    for stale in parts_root(wd).iterdir():  # parts of other inputs or settings can never be used again
        if stale.is_dir() and stale.name != fp:
            shutil.rmtree(stale, ignore_errors=True)

    n_chunks = -(-crops.num_rows // chunk)
    reused = written = scored_rows = 0
    with ThreadPoolExecutor(max(1, threads)) as pool, tqdm(
        total=crops.num_rows, unit="crop", desc=f"score ({name})", disable=not progress, dynamic_ncols=True,
    ) as bar:
        for k, rows in _chunks(crops, chunk):
            part = parts / f"part-{k:05d}.parquet"
            if part.is_file():
                reused += 1
            else:
                if stop_after_chunks is not None and written >= stop_after_chunks:
                    break
                data = pool.map(read_bytes, [wd.root / r["file"] for r in rows])
                table = unit(list(zip(rows, data)))
                with atomic_path(part) as tmp:
                    pq.write_table(table, tmp)
                written += 1
                scored_rows += len(rows)
            bar.update(len(rows))
    if reused + written < n_chunks:
        return {"stage": "score", "complete": False, "chunks": n_chunks, "chunks_done": reused + written}

    raw = pa.concat_tables([pq.read_table(parts / f"part-{k:05d}.parquet") for k in range(n_chunks)]) \
        if n_chunks else PART_SCHEMA.empty_table()
    scores, reasons = decided_table(raw, rules)
    with atomic_path(wd.scores_table) as tmp:
        pq.write_table(scores, tmp)
    stats = score_stats(wd.scores_table, raw, reasons, rules, name, scorer, why, model_info, fp, n_chunks, reused)
    seconds = time.perf_counter() - t0
    stats.update({"scores_sha256": file_sha256(wd.scores_table), "seconds": round(seconds, 3),
                  "crops_per_s": round(scored_rows / seconds, 2) if scored_rows and seconds else None})
    write_json(stats_path(wd), stats)
    return stats


def decided_table(raw: pa.Table, rules: ScoreRules) -> tuple[pa.Table, list[str | None]]:
    """Every crop's measurements (the parts, in crops-table order) -> the scores table and each crop's reason."""
    reasons = [decide(m, rules) for m in raw.select(
        ["scorer", "person", "error", "confidence", "contrast", "dominant", "colours", "sharpness"]).to_pylist()]
    scores = pa.table(
        {**{f.name: raw.column(f.name) for f in SCORES_SCHEMA if f.name in PART_SCHEMA.names},
         "kept": pa.array([r is None for r in reasons], pa.bool_()),
         "reason": pa.array(reasons, pa.string())},
        schema=SCORES_SCHEMA,
    )
    return scores, reasons


def score_stats(output, raw: pa.Table, reasons: list[str | None], rules: ScoreRules, name: str, scorer: str, why: str,
                model_info: dict[str, Any] | None, fp: str, n_chunks: int, reused: int) -> dict[str, Any]:
    """The stage's stats (all but the timing and the output's hash): every engine writes these keys."""
    counts = Counter(r for r in reasons if r is not None)
    return {
        "stage": "score",
        "complete": True,
        "curate_version": __version__,
        "output": str(output),
        "scorer": name,
        "scorer_choice": scorer,
        "scorer_why": why,
        "model": model_info,
        "rules": rules.to_json(),
        "reasons_checked": _reasons_checked(name, rules),
        "crops": raw.num_rows,
        "kept": raw.num_rows - sum(counts.values()),
        "rejected": {r: counts[r] for r in REASONS if counts[r]},
        "measurements": _quantiles(raw),
        "chunks": n_chunks,
        "chunks_reused": reused,
        "fingerprint": fp,
    }


def _up_to_date(wd: Workdir, fp: str, rules: ScoreRules, scorer: str, why: str) -> dict[str, Any] | None:
    """The saved stats when scores.parquet is what this run would write (same inputs, scorer, rules), else None."""
    try:
        stats = json.loads(stats_path(wd).read_text())
        same = (stats.get("complete") and stats.get("fingerprint") == fp and stats.get("rules") == rules.to_json()
                and stats.get("scorer_choice") == scorer and stats.get("scorer_why") == why
                and stats.get("curate_version") == __version__ and stats.get("scores_sha256"))
        if same and wd.scores_table.is_file() and file_sha256(wd.scores_table) == stats["scores_sha256"]:
            return stats
    except (FileNotFoundError, IsADirectoryError, ValueError, AttributeError):
        pass
    return None


def _reasons_checked(scorer: str, rules: ScoreRules) -> list[str]:
    skip = {"no_person"} if scorer == "heuristic" else {"low_confidence"}
    if rules.min_confidence is None:
        skip.add("low_confidence")
    return [r for r in REASONS if r not in skip]


def _quantiles(raw: pa.Table) -> dict[str, dict[str, float]]:
    """5th, 50th and 95th percentiles of each measurement: what a person needs to pick thresholds."""
    out = {}
    for col in ("person", "confidence", "contrast", "dominant", "colours", "sharpness"):
        values = np.array([v for v in raw.column(col).to_pylist() if v is not None], dtype=np.float64)
        if values.size:
            p5, p50, p95 = np.percentile(values, [5, 50, 95])
            out[col] = {"p5": round(float(p5), 4), "p50": round(float(p50), 4), "p95": round(float(p95), 4)}
    return out


def summary_line(stats: dict[str, Any]) -> str:
    """One line a person reads at the end of the stage; it always names the scorer that ran."""
    if not stats.get("complete"):
        return f"score: stopped after {stats['chunks_done']} of {stats['chunks']} chunks; run again to resume"
    if stats.get("up_to_date"):
        return (f"score ({stats['scorer']} scorer): {stats['crops']:,} crops -> kept {stats['kept']:,}: "
                f"already up to date -> {stats['output']}")
    rejected = ", ".join(f"{k} {v:,}" for k, v in sorted(stats["rejected"].items(), key=lambda kv: -kv[1]))
    speed = f", {stats['crops_per_s']:.1f} crops/s" if stats.get("crops_per_s") else ""
    resumed = f", {stats['chunks_reused']} of {stats['chunks']} chunks reused" if stats["chunks_reused"] else ""
    return (
        f"score ({stats['scorer']} scorer): {stats['crops']:,} crops -> kept {stats['kept']:,} "
        f"(rejected: {rejected or 'none'}) in {stats['seconds']:.1f}s{speed}{resumed} -> {stats['output']}"
    )
