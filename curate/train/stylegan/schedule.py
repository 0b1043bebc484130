"""The progressive-growing schedule: level, fade-in, minibatch and learning rates at an image count."""

from __future__ import annotations

import math
from dataclasses import dataclass

from curate.train.stylegan.config import TrainConfig


@dataclass(frozen=True)
class Schedule:
    """Where training stands at a given image count: level, fade-in alpha, minibatch, learning rates."""

    config: TrainConfig
    end_level: int

    @property
    def start_level(self) -> int:
        """log2 of start_height."""
        return self.config.start_height.bit_length() - 1

    def phase(self, nimg: int) -> tuple[int, float]:
        """(level, alpha) after nimg images: stabilise `training_kimg`, then fade in the next level."""
        c = self.config
        kimg = nimg / 1000.0
        dur = c.training_kimg + c.transition_kimg
        idx = math.floor(kimg / dur)
        in_phase = kimg - idx * dur
        level, alpha = self.start_level + idx, 1.0
        if in_phase >= c.training_kimg:
            level += 1
            alpha = (in_phase - c.training_kimg) / c.transition_kimg if c.transition_kimg > 0 else 1.0
        if level >= self.end_level:
            if level > self.end_level or alpha >= 1.0:
                return self.end_level, 1.0
        return level, min(alpha, 1.0)

    def _lookup(self, table: dict, level: int, base):
        return table.get(2 ** level, base)

    def minibatch(self, level: int) -> int:
        """Images per step at a level."""
        return int(self._lookup(self.config.minibatch, level, self.config.minibatch_base))

    def lrates(self, level: int) -> tuple[float, float]:
        """(G, D) learning rates at a level."""
        c = self.config
        return float(self._lookup(c.g_lrate, level, c.lrate_base)), float(self._lookup(c.d_lrate, level, c.lrate_base))

    def tick_nimg(self, level: int) -> int:
        """Images per tick at a level."""
        return max(1, int(round(1000 * self._lookup(self.config.tick_kimg, level, self.config.tick_kimg_base))))
