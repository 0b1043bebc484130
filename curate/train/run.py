"""`curate train`: the progressive StyleGAN run loop over pack's records.

A run lives in a numbered folder (<runs>/<NNNNN>-<config>) that is never reused:

    config.json      the resolved TrainConfig plus the dataset it trains on
    stats.jsonl      one JSON line per tick (kimg, level, alpha, losses, img/s, SWD, FID)
    log.txt          the progress lines
    reals.png, fakes<tick:05d>.png    sample grids (fixed latents, Gs, untruncated, as NVlabs)
    checkpoints/     tf.train.Checkpoint: G, D, Gs, both Adam states, the counters (and both loss scales)
    events.out.tfevents.*            TensorBoard scalars and the grids (tf.summary)

The parts: curate.train.steps (networks, Adam, the compiled step), .phases (level, alpha, Adam resets,
the data stream), .metrics (SWD, FID), .runlog (stats.jsonl, log.txt, TensorBoard), .checkpoints,
.grids. Exact resume: every random draw of a step is stateless, seeded by (seed, step number); the
data stream of a level is a pure function of the position within it; checkpoints are written at tick
ends with the counters and the optimizer moments. A resumed run therefore runs the same ops on the
same numbers as an uninterrupted one.

Several devices (`--set replicas=auto|N`, curate.train.replicas): the same steps mirrored over N
local devices, or over machines with TF_CONFIG; only the chief writes the run folder, every other
worker writes its copies (grids, stats, checkpoints) to a temporary folder it deletes at the end
(TensorFlow's recommendation), and restores a resumed run from the chief's folder.

Precision (`--set precision=mixed_float16` or `mixed_bfloat16`): G's synthesis network and D compute
in 16 bits (curate.train.stylegan.networks says what stays float32); variables, Adam, the Gs average and
the losses are float32. float16 adds dynamic loss scaling per network (curate.train.stylegan.precision),
whose state is checkpointed; Gs always computes in float32, so grids, SWD, FID and `curate generate`
see float32 images from the float32 weights whatever the training precision.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from curate.train.checkpoints import Checkpoints
from curate.train.data import open_dataset
from curate.train.grids import grid_png
from curate.train.metrics import TickMetrics
from curate.train.phases import Phases
from curate.train.replicas import is_chief
from curate.train.runfolder import TrainError, load_run, new_run_dir, run_backend, write_run_config
from curate.train.runlog import RunLog, truncate_stats
from curate.train.steps import Trainer
from curate.train.stylegan.config import RESUMABLE, TrainConfig, replace


def run_training(config: TrainConfig, dataset_dir: str | os.PathLike | None, runs_dir: str | os.PathLike = "runs",
                 resume: str | os.PathLike | None = None, echo: Callable[[str], None] = print,
                 progress: bool = True, stop_after_ticks: int | None = None,
                 backend: str = "tensorflow") -> dict[str, Any]:
    """Train (or resume) a run; returns a summary. `stop_after_ticks` ends early as a kill would, after a tick.

    `backend`: tensorflow (curate.train.steps) or jax (curate.train.portable, KERAS_BACKEND=jax in
    this process); a run resumes on the backend it started on, or stops with one line.
    """
    started = time.time()
    if resume is not None:
        trained_on = run_backend(resume)
        if trained_on != backend:
            raise TrainError(f"{resume} was trained with --backend {trained_on}; resume it with --backend "
                             f"{trained_on} (checkpoints do not move between backends)")
        data = open_dataset(dataset_dir or load_run(resume)[1]["path"])
    else:
        data = open_dataset(dataset_dir)
    if backend == "tensorflow":
        trainer, checkpoint_class = Trainer(config, data), Checkpoints
    else:
        from curate.train.portable.trainer import PortableCheckpoints, PortableTrainer

        trainer, checkpoint_class = PortableTrainer(config, data, backend), PortableCheckpoints
    chief = is_chief()
    if chief:
        run_dir = Path(resume) if resume is not None else _new_run(trainer, runs_dir)
    else:  # another worker of a multi-worker run: the chief's folder is read only, to resume from
        run_dir = Path(tempfile.mkdtemp(prefix="curate-worker-"))
    checkpoints = checkpoint_class(trainer, run_dir, config.keep_checkpoints,
                                   source=Path(resume) if resume is not None else None)
    phases = Phases(trainer)
    resumed_from = None
    if resume is not None:
        resumed_from = _resume(trainer, checkpoints, run_dir, echo)
    else:
        phases.start()
    run = TickLoop(trainer, phases, checkpoints, run_dir, echo, progress)
    ticks_run, last_stats = run.run(stop_after_ticks)
    nimg, tick = int(trainer.counters.nimg.numpy()), int(trainer.counters.tick.numpy())
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"run_dir": str(run_dir), "chief": chief, "kimg": nimg / 1000, "ticks": tick, "ticks_run": ticks_run,
            "finished": nimg >= run.total_nimg,
            "resumed_from_kimg": None if resumed_from is None else resumed_from / 1000,
            "last": last_stats, "seconds": time.time() - started,
            "start": trainer.arch.size(trainer.schedule.start_level), "end": trainer.arch.size(trainer.arch.full_level)}


def _new_run(trainer: Trainer, runs_dir: str | os.PathLike) -> Path:
    """A new numbered run folder with its config.json."""
    run_dir = new_run_dir(runs_dir, trainer.config.name)
    levels = [list(trainer.arch.size(k)) for k in range(trainer.schedule.start_level, trainer.arch.full_level + 1)]
    write_run_config(run_dir, trainer.config, trainer.data.to_json(), levels, backend=trainer.backend)
    return run_dir


def _resume(trainer: Trainer, checkpoints: Checkpoints, run_dir: Path, echo: Callable[[str], None]) -> int:
    """Restore the latest checkpoint and drop the stats written after it; the images trained before."""
    checkpoints.restore()
    cnt = trainer.counters
    nimg, tick = int(cnt.nimg.numpy()), int(cnt.tick.numpy())
    truncate_stats(run_dir, tick)
    echo(f"train: resuming {checkpoints.source} at kimg {nimg / 1000:.3f} (tick {tick})")
    return nimg


class TickLoop:
    """Ticks until the run's length: steps, then at each tick end stats, grid, metrics, records, checkpoint."""

    def __init__(self, trainer: Trainer, phases: Phases, checkpoints: Checkpoints, run_dir: Path,
                 echo: Callable[[str], None], progress: bool):
        c = trainer.config
        self.trainer, self.phases, self.checkpoints, self.run_dir = trainer, phases, checkpoints, run_dir
        self.log = RunLog(run_dir, echo, tensorboard=trainer.backend == "tensorflow")
        self.full_height = 2 ** trainer.arch.full_level
        self.grid_z = trainer.latents(c.grid_cols * c.grid_rows, c.seed)
        if not (run_dir / "reals.png").exists():
            reals = trainer.reals(trainer.arch.full_level, len(self.grid_z))
            grid_png(reals, c.grid_cols, run_dir / "reals.png", height=self.full_height)
        self.metrics = TickMetrics(trainer)
        self.total_nimg = int(round(c.total_kimg * 1000))
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total_nimg, initial=int(trainer.counters.nimg.numpy()), unit="img",
                            unit_scale=True, leave=False)
            self.log.echo = self.bar.write

    def run(self, stop_after_ticks: int | None) -> tuple[int, dict[str, Any] | None]:
        """(ticks run, the last tick's stats); a checkpoint of the final tick is always left."""
        ticks_run, last = 0, None
        while int(self.trainer.counters.nimg.numpy()) < self.total_nimg:
            last = self.tick()
            ticks_run += 1
            if stop_after_ticks is not None and ticks_run >= stop_after_ticks:
                break
        if self.bar is not None:
            self.bar.close()
        self.checkpoints.save_if_behind()
        return ticks_run, last

    def tick(self) -> dict[str, Any]:
        """Train one tick and record it; its stats."""
        c, t = self.trainer.config, self.trainer
        started = time.time()
        level, alpha, losses = self.train_until_tick_end()
        stats = self.tick_stats(level, alpha, losses, time.time() - started)
        tick, nimg = stats["tick"], int(t.counters.nimg.numpy())
        done = nimg >= self.total_nimg
        metric_start = time.time()
        grid = self.run_dir / f"fakes{tick:05d}.png"
        grid_png(t.generate(self.grid_z, level, alpha, seed=c.seed), c.grid_cols, grid, height=self.full_height)
        stats.update(self.metrics(tick, level, alpha, done))
        stats["metric_seconds"] = time.time() - metric_start
        self.log.tick(stats, nimg, grid)
        if tick % c.snapshot_ticks == 0 or done:
            self.checkpoints.save()
        return stats

    def train_until_tick_end(self) -> tuple[int, float, list[dict]]:
        """Steps until the tick's images are shown (or the run's); the last level and alpha, and every step's losses."""
        t, cnt = self.trainer, self.trainer.counters
        losses = []
        while True:
            nimg = int(cnt.nimg.numpy())
            level, alpha = self.phases.enter(nimg)
            losses.append(t.train_step(level, alpha, self.phases.batch(level, nimg)))
            mb = t.schedule.minibatch(level)
            if self.bar is not None:
                self.bar.update(mb)
            nimg += mb
            if nimg >= self.total_nimg or nimg >= int(cnt.tick_start_nimg.numpy()) + t.schedule.tick_nimg(level):
                return level, alpha, losses

    def tick_stats(self, level: int, alpha: float, losses: list[dict], seconds: float) -> dict[str, Any]:
        """Close the tick in the counters; its stats line (before metrics)."""
        t, cnt = self.trainer, self.trainer.counters
        nimg = int(cnt.nimg.numpy())
        tick_imgs = nimg - int(cnt.tick_start_nimg.numpy())
        cnt.tick.assign_add(1)
        cnt.tick_start_nimg.assign(nimg)
        cnt.seconds.assign_add(seconds)
        means = {k: float(np.mean([float(o[k]) for o in losses])) for k in losses[0]}
        if t.scale_d.scale is not None:  # mixed_float16: the scales as the tick leaves them
            means["loss_scale_g"] = float(t.scale_g.scale.numpy())
            means["loss_scale_d"] = float(t.scale_d.scale.numpy())
        (h, w), (lr_g, lr_d) = t.arch.size(level), t.schedule.lrates(level)
        return {"tick": int(cnt.tick.numpy()), "kimg": nimg / 1000, "level": level, "height": h, "width": w,
                "alpha": alpha, "minibatch": t.schedule.minibatch(level), "lr_g": lr_g, "lr_d": lr_d, **means,
                "img_per_s": tick_imgs / max(seconds, 1e-9), "sec_per_tick": seconds,
                "total_seconds": float(cnt.seconds.numpy())}


def summary_line(s: dict[str, Any]) -> str:
    """One line a person reads at the end of `curate train`."""
    last = s["last"] or {}
    swd = f", SWD {last['swd'][-1]:.2f}" if last.get("swd") else ""
    state = "finished" if s["finished"] else "stopped (resume with --resume)"
    target = s["run_dir"]
    if not s.get("chief", True):
        state, target = f"worker {state}", "the chief's run folder (this worker kept nothing)"
    resumed = f" (resumed at kimg {s['resumed_from_kimg']:.3f})" if s["resumed_from_kimg"] is not None else ""
    return (f"train: {state} at kimg {s['kimg']:.3f}, tick {s['ticks']}{resumed}; "
            f"{s['start'][0]}x{s['start'][1]} -> {last.get('height', '?')}x{last.get('width', '?')} "
            f"of {s['end'][0]}x{s['end'][1]}{swd}; {s['ticks_run']} ticks in {s['seconds']:.0f}s -> {target}")


def resume_config(run_dir: str | os.PathLike, changes: dict[str, Any]) -> TrainConfig:
    """A run's saved config with the allowed changes for a resume (TrainError for a change that alters a step)."""
    config, _ = load_run(run_dir)
    bad = sorted(set(changes) - RESUMABLE)
    if bad:
        raise TrainError(f"cannot change {', '.join(bad)} when resuming (only {', '.join(sorted(RESUMABLE))})")
    try:
        return replace(config, **changes)
    except ValueError as e:
        raise TrainError(str(e)) from None
