"""Phases of progressive growing: which level and alpha an image count is at, and what changes with them.

NVlabs resets Adam whenever floor or ceil of lod changes: each fade-in and each stabilise phase. The
phase the run is in is kept in the checkpointed counters (last_level, last_fading, level_start_nimg),
so a resumed run sees the same changes; the level's data stream is rebuilt when the level changes.
"""

from __future__ import annotations

from curate.train.steps import Trainer


class Phases:
    """The run's current phase over a Trainer's counters, and the data stream of its level."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.stream_level: int | None = None
        self.stream = None

    def start(self) -> None:
        """A new run: record the first phase and start Gs as a copy of G."""
        t = self.trainer
        level, alpha = t.schedule.phase(0)
        t.counters.last_level.assign(level)
        t.counters.last_fading.assign(int(alpha < 1))
        t.copy_g_to_gs()

    def enter(self, nimg: int) -> tuple[int, float]:
        """(level, alpha) at nimg images; resets both Adams when the phase changed since the last step."""
        t, cnt = self.trainer, self.trainer.counters
        level, alpha = t.schedule.phase(nimg)
        fading = int(alpha < 1)
        if (level, fading) != (int(cnt.last_level.numpy()), int(cnt.last_fading.numpy())):
            t.opt_g.reset()
            t.opt_d.reset()
            if level != int(cnt.last_level.numpy()):
                cnt.level_start_nimg.assign(nimg)
            cnt.last_level.assign(level)
            cnt.last_fading.assign(fading)
        return level, alpha

    def batch(self, level: int, nimg: int):
        """The next minibatch of a level (a new stream, at the position within the level, when it changed)."""
        if self.stream_level != level:
            position = nimg - int(self.trainer.counters.level_start_nimg.numpy())
            self.stream = self.trainer.data_stream(level, position)
            self.stream_level = level
        return next(self.stream)
