"""Checkpoints: tf.train.Checkpoint of G, D, Gs, both Adam states, the counters (and both loss scales).

Written at tick ends, so a resumed run restarts at a tick boundary with the step, image, tick and
level-start counters and the optimizer moments it had: the same ops on the same numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

from curate.train.runfolder import TrainError
from curate.train.steps import Trainer

FOLDER = "checkpoints"


class Checkpoints:
    """A run folder's checkpoints of one Trainer: restore the latest, save at a tick."""

    def __init__(self, trainer: Trainer, run_dir: Path, keep: int, source: Path | None = None):
        """Checkpoints written to run_dir/checkpoints; `source`: the run folder restore reads (default run_dir).

        A multi-worker run's non-chief workers write to a folder of their own and resume from the chief's.
        """
        tf = trainer.tf
        parts = dict(G=trainer.G, D=trainer.D, Gs=trainer.Gs, opt_g=trainer.opt_g, opt_d=trainer.opt_d,
                     counters=trainer.counters)
        if trainer.scale_d.scale is not None:  # only float16 has loss-scale state: other checkpoints are unchanged
            parts.update(loss_scale_g=trainer.scale_g, loss_scale_d=trainer.scale_d)
        self.run_dir, self.counters, self.source = run_dir, trainer.counters, source or run_dir
        self.checkpoint = tf.train.Checkpoint(**parts)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(run_dir / FOLDER), max_to_keep=keep)

    def restore(self) -> None:
        """Load the latest checkpoint into the trainer (TrainError when the run has none yet)."""
        latest = latest_checkpoint(self.source) if self.source != self.run_dir else self.manager.latest_checkpoint
        if latest is None:
            raise TrainError(f"{self.source} has no checkpoint yet; start a new run instead")
        self.checkpoint.restore(latest).assert_existing_objects_matched()

    def save(self) -> None:
        """A checkpoint numbered by the current tick."""
        self.manager.save(checkpoint_number=int(self.counters.tick.numpy()))

    def save_if_behind(self) -> None:
        """Save unless the latest checkpoint is already of the current tick (the end of a run)."""
        latest = self.manager.latest_checkpoint
        if latest is None or int(latest.rsplit("-", 1)[1]) != int(self.counters.tick.numpy()):
            self.save()


def latest_checkpoint(run_dir: Path) -> str | None:
    """The latest checkpoint in a run folder, None when there is none."""
    from curate.train.stylegan.ops import tf

    return tf.train.latest_checkpoint(str(Path(run_dir) / FOLDER))


def restore_gs(run_dir: str | os.PathLike, Gs) -> int:
    """Load Gs from a run's latest checkpoint; the images trained (TrainError if none).

    A run trained on another backend (its .npz checkpoints) loads too: the portable networks have the
    TF networks' weight paths, so `curate generate` and `curate explore` read JAX runs as well.
    """
    from curate.train.runfolder import run_backend
    from curate.train.stylegan.ops import tf

    if run_backend(run_dir) != "tensorflow":
        from curate.train.portable.ops import load_weights
        from curate.train.portable.trainer import load_gs

        values, nimg = load_gs(run_dir)
        load_weights(Gs, values)
        return nimg

    counters = tf.Module(name="counters")
    counters.nimg = tf.Variable(0, dtype=tf.int64, trainable=False)
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise TrainError(f"{run_dir} has no checkpoint yet")
    tf.train.Checkpoint(Gs=Gs, counters=counters).restore(latest).expect_partial()
    return int(counters.nimg.numpy())
