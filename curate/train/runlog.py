"""What a run records at each tick: a stats.jsonl line, a log.txt line, and TensorBoard events (tf.summary).

TensorBoard tags: train/{loss_g, loss_d, r1, score_real, score_fake, alpha, img_per_s, resolution},
precision/{loss_scale_g, loss_scale_d, overflow_g, overflow_d} (16-bit runs), metrics/{swd, swd_level<i>,
fid} where measured, and the tick's sample grid as the image grids/fakes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from curate.train.runfolder import STATS_FILE

LOG_FILE = "log.txt"
TRAIN_SCALARS = ("loss_g", "loss_d", "r1", "score_real", "score_fake", "alpha", "img_per_s")
PRECISION_SCALARS = ("loss_scale_g", "loss_scale_d", "overflow_g", "overflow_d")


def progress_line(s: dict[str, Any]) -> str:
    """One line per tick."""
    swd = f"  swd {s['swd'][-1]:.2f}" if s.get("swd") else ""
    fid = f"  fid {s['fid']:.2f}" if s.get("fid") is not None else ""
    return (f"tick {s['tick']:<4d} kimg {s['kimg']:<9.3f} res {s['height']}x{s['width']:<4d} alpha {s['alpha']:.3f}  "
            f"loss_g {s['loss_g']:.3f}  loss_d {s['loss_d']:.3f}  r1 {s['r1']:.3f}  "
            f"{s['img_per_s']:.1f} img/s  {s['sec_per_tick']:.1f} s/tick{swd}{fid}")


def tensorboard_scalars(stats: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one tick's stats, by tag."""
    scalars = {f"train/{k}": stats[k] for k in TRAIN_SCALARS}
    scalars["train/resolution"] = stats["height"]
    for k in PRECISION_SCALARS:
        if k in stats:
            scalars[f"precision/{k}"] = stats[k]
    for i, v in enumerate(stats.get("swd", [])[:-1]):
        scalars[f"metrics/swd_level{i}"] = v
    if "swd" in stats:
        scalars["metrics/swd"] = stats["swd"][-1]
    if "fid" in stats:
        scalars["metrics/fid"] = stats["fid"]
    return scalars


def truncate_stats(run_dir: Path, last_tick: int) -> None:
    """Drop stats lines written after the checkpoint a run resumes from (they will be written again)."""
    path = run_dir / STATS_FILE
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["tick"] <= last_tick]
    from curate.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(line + "\n" for line in keep))


class RunLog:
    """A run folder's tick records: stats.jsonl and log.txt appended, TensorBoard events through tf.summary."""

    def __init__(self, run_dir: Path, echo: Callable[[str], None] = print, tensorboard: bool = True):
        """`tensorboard=False` (the JAX backend, where TensorFlow may be absent): stats and log lines only."""
        self.run_dir, self.echo, self.tf, self.writer = run_dir, echo, None, None
        if tensorboard:
            from curate.train.stylegan.ops import tf

            self.tf, self.writer = tf, tf.summary.create_file_writer(str(run_dir))

    def tick(self, stats: dict[str, Any], nimg: int, grid: Path | None = None) -> None:
        """Record one tick's stats (TensorBoard step: images shown) and its sample grid PNG."""
        with open(self.run_dir / STATS_FILE, "a") as f:
            f.write(json.dumps(stats) + "\n")
        if self.writer is not None:
            with self.writer.as_default(step=nimg):
                for tag, value in tensorboard_scalars(stats).items():
                    self.scalar(tag, value)
                if grid is not None:
                    self.image("grids/fakes", grid.read_bytes())
            self.writer.flush()
        line = progress_line(stats)
        with open(self.run_dir / LOG_FILE, "a") as f:
            f.write(line + "\n")
        self.echo(line)

    def scalar(self, tag: str, value: float) -> None:
        """One float32 scalar at the writer's step."""
        self.tf.summary.scalar(tag, float(value))

    def image(self, tag: str, png: bytes) -> None:
        """One PNG image at the writer's step."""
        self.tf.summary.image(tag, self.tf.io.decode_png(png)[None])
