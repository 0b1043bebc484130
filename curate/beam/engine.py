"""The Beam engine: each stage's work as one Beam pipeline, run on the runner the user names.

`curate run PIPELINE --engine beam` hands a `BeamEngine` to every stage command (curate.core.engine):
the command parses and checks its options exactly as it does locally, then calls the engine with the
local runner's arguments. The engine does what the local runner does around the work (refuses an
output that is an input, holds the output's lock where the output is on this machine, checks what an
earlier run left), builds the stage's transform (curate.beam.filter / crop / score / pack), runs it
to completion, and returns the stats file the pipeline wrote, so the stage's summary line and
`curate report` are the same as locally.

Stages run one pipeline each, in order: a stage's plan (which crops survive, the seeded order)
depends on the files the stage before it wrote.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
from pathlib import Path

import click

from curate.core.engine import LocalEngine
from curate.core.errors import CurateError
from curate.core.location import as_location
from curate.core.lock import stage_lock

DEFAULT_RUNNER = "DirectRunner"  # Beam's own default (Prism) downloads a binary: never what an offline user wants


class BeamEngineError(CurateError):
    """A request the Beam engine cannot run (an option it does not support, a runner that failed)."""


def _local(path: str | os.PathLike | None) -> bool:
    return path is not None and "://" not in str(path)


class BeamEngine(LocalEngine):
    """Runs filter, crop, score and pack as Beam pipelines; `options` go to Beam unchanged."""

    name = "beam"

    def __init__(self, runner: str | None = None, options: list[str] = ()):
        self.options = list(options)
        self._warned = False
        if not any(o == "--runner" or o.startswith("--runner=") for o in self.options):
            self.options.insert(0, f"--runner={runner or DEFAULT_RUNNER}")
            if (runner or DEFAULT_RUNNER) == "DirectRunner":
                # SDK workers in processes, one per core unless told: "the local runner in multi-process mode"
                if not any("direct_running_mode" in o for o in self.options):
                    self.options.append("--direct_running_mode=multi_processing")
                if not any("direct_num_workers" in o for o in self.options):
                    self.options.append(f"--direct_num_workers={len(os.sched_getaffinity(0))}")
                if not any("sdk_harness_log_level" in o for o in self.options):
                    # the workers' start-up chatter (dozens of INFO lines a stage) would bury the stage's summary
                    self.options.append("--default_sdk_harness_log_level=ERROR")

        self._filesystems()

    def _filesystems(self) -> None:
        """Hand the options to Beam's FileSystems here too: the launcher reads and plans through them
        (curate.core.location), with the same credentials and endpoints (--s3_endpoint_url, ...)."""
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.options.pipeline_options import PipelineOptions

        with contextlib.suppress(SystemExit, Exception):
            FileSystems.set_options(PipelineOptions(self.options))

    def describe(self) -> str:
        return " ".join(self.options)

    def _run(self, transform) -> None:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions

        try:
            options = PipelineOptions(self.options)
        except SystemExit:  # argparse inside Beam exits on an option it does not know
            raise BeamEngineError(f"Beam does not accept these options: {self.describe()}") from None
        with beam.Pipeline(options=options) as p:
            unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options()))
            if unknown and not self._warned:  # Beam passes them on silently: a typo would go unnoticed
                click.echo(f"curate: warning: Beam knows no option {', '.join('--' + u for u in unknown)}; "
                           "passed on to the runner as given", err=True)
                self._warned = True
            _ = p | transform

    @staticmethod
    def _lock(path: Path | None, what: str):
        """The stage's lock, or none where the output is on object storage, which has no locks: there,
        one run at a time per workdir is the user's to keep (docs/beam.md)."""
        return stage_lock(path, what) if path is not None else contextlib.nullcontext()

    # ---- the stages ---------------------------------------------------------------------------

    def filter(self, inputs, out, rules, dataset_root=None, workers=None, block_bytes=None, progress=True):
        from curate.beam.filter import FilterTransform
        from curate.core.paths import refuse_output_among_inputs
        from curate.filter.metadata import BLOCK_BYTES, InputProblem, expand_inputs
        from curate.filter.runner import lock_path, stats_path

        roots = [dataset_root] if dataset_root else []
        refuse_output_among_inputs(out, inputs, roots)
        problems: list[InputProblem] = []
        files = expand_inputs(inputs, problems)
        out = as_location(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(lock_path(out) if _local(out) else None, str(out)):
            self._run(FilterTransform([str(f) for f in files], str(out), rules,
                                      str(dataset_root) if dataset_root else None, problems,
                                      block_bytes or BLOCK_BYTES))
        return {**json.loads(stats_path(out).read_text()), "up_to_date": False}

    def crop(self, sources, workdir, config, workers=None, overlays=None, progress=True, inputs=None, **_):
        from curate.beam.crop import CropTransform
        from curate.crop.runner import LOCK_FILE

        if overlays:
            raise BeamEngineError("--overlays is not supported on the Beam engine; draw them with a local "
                                  "`curate crop ... --overlays DIR` on a sample")
        root = as_location(workdir)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with self._lock(root / LOCK_FILE if _local(root) else None, f"crops into {root}"):
            self._run(CropTransform(sources, str(root), config, inputs=inputs))
        stats = json.loads((root / "crops.stats.json").read_text())
        return {**stats, "processed_now": stats["images"], "seconds": round(time.perf_counter() - t0, 3)}

    def score(self, workdir, rules, scorer="auto", models_root=None, batch_size=32, top_k=10, progress=True, **_):
        from curate.beam.score import ScoreTransform
        from curate.score.runner import lock_path, read_crops

        from curate.core.workdir import Workdir

        wd = Workdir(workdir)
        read_crops(wd)  # a folder that is not a workdir: the local runner's one line
        with self._lock(lock_path(wd) if _local(wd.root) else None, f"the scores of {wd.root}"):
            self._run(ScoreTransform(str(wd.root), rules, scorer, models_root, batch_size, top_k))
        return json.loads((wd.root / "scores.stats.json").read_text())

    def dedup(self, workdir, config, workers=None, progress=True, **kwargs):
        """dedup is one machine's work (a hash per crop, one search over all hashes): its local runner.

        A workdir on object storage is mirrored into a local folder first (the tables, the crops, the
        dedup state kept from earlier runs, each crop with its object's time, so an unchanged crop is
        known again), the local runner runs there, and its outputs and state go back."""
        root = as_location(workdir)
        if _local(root):
            return super().dedup(workdir, config, workers=workers, progress=progress, **kwargs)
        import tempfile

        import pyarrow.parquet as pq

        from curate.core.location import readable
        from curate.core.workdir import Workdir
        from curate.dedup.runner import read_crops, state_root

        remote = Workdir(root)
        read_crops(remote)  # a folder that is not a workdir: the local runner's one line
        with tempfile.TemporaryDirectory(prefix="curate-dedup-") as tmp:
            local = Workdir(tmp)
            wanted = [remote.crops_table, remote.scores_table, remote.dedup_table, remote.dedup_stats]
            files = pq.read_table(readable(remote.crops_table), columns=["file"]).column("file").to_pylist()
            wanted += [root / f for f in files] + list(state_root(remote).rglob("*"))
            for src in wanted:
                if not src.is_file():
                    continue
                dest = local.root / src.relative_to(root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(src.read_bytes())
                mtime = src.stat().st_mtime_ns
                os.utime(dest, ns=(mtime, mtime))
            stats = super().dedup(local.root, config, workers=workers, progress=progress, **kwargs)
            if stats.get("up_to_date"):
                return {**stats, "output": str(remote.dedup_table)}
            kept = {p.relative_to(local.root).as_posix() for p in state_root(local).rglob("*") if p.is_file()}
            for name in sorted(kept):
                (root / name).write_bytes((local.root / name).read_bytes())
            for old in state_root(remote).rglob("*"):
                if old.relative_to(root) not in kept:
                    old.unlink(missing_ok=True)
            remote.dedup_table.write_bytes(local.dedup_table.read_bytes())
            stats = {**json.loads(local.dedup_stats.read_text()), "output": str(remote.dedup_table)}
            remote.dedup_stats.write_text(json.dumps(stats, indent=2) + "\n")  # last: it vouches for the table
        return {**stats, "up_to_date": False}

    def pack(self, workdir, out, config, workers=None, progress=True, overwrite=False, checkpoint_every=None):
        from curate.beam.pack import PackTransform
        from curate.dataset import schema as R
        from curate.dataset.pack import STAGING, existing, prepare

        t0 = time.perf_counter()
        plan = prepare(workdir, out, config)
        plan.out.mkdir(parents=True, exist_ok=True)
        old, up_to_date = existing(plan.out, plan.fingerprint, overwrite)
        if up_to_date:
            return {**old, "up_to_date": True, "resumed_at": None, "seconds": round(time.perf_counter() - t0, 3)}
        if _local(plan.out):
            (plan.out / STAGING).mkdir(exist_ok=True)
        with self._lock(plan.out / STAGING / "lock" if _local(plan.out) else None, str(plan.out)):
            self._run(PackTransform(plan))
        with contextlib.suppress(OSError):
            if _local(plan.out):
                (plan.out / STAGING).rmdir()  # the lock's folder, empty once the lock is released
        manifest = json.loads((plan.out / R.MANIFEST).read_text())
        seconds = time.perf_counter() - t0
        return {**manifest, "up_to_date": False, "resumed_at": None, "seconds": round(seconds, 3),
                "crops_per_s": round(len(plan.order) / seconds, 1) if seconds else None, "workers": None}


def engine_for(name: str, runner: str | None, options: list[str]) -> LocalEngine:
    """The engine `curate run --engine NAME` asked for (BeamEngineError naming the fix if Beam is absent)."""
    if name == "local":
        if runner or options:
            raise BeamEngineError("--beam-runner and Beam options need --engine beam")
        from curate.core.engine import LOCAL

        return LOCAL
    if importlib.util.find_spec("apache_beam") is None:
        raise BeamEngineError("the Beam engine needs Apache Beam: pip install -e '.[beam]' (make dev installs it)")
    return BeamEngine(runner, options)
