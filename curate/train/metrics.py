"""Metrics at tick ends: SWD every swd_ticks, FID (with user-supplied Inception weights) every fid_ticks.

Each draws its latents from a fixed seed, so a resumed run measures the same way.
"""

from __future__ import annotations

from typing import Any

from curate.train.steps import Trainer


class TickMetrics:
    """The metrics a run computes at its tick ends; the FID network is loaded once, when configured."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.config = trainer, trainer.config
        self.fid_model = None
        if self.config.fid_weights:
            from curate.train.stylegan.swd import InceptionFeatures

            self.fid_model = InceptionFeatures(self.config.fid_weights)

    def __call__(self, tick: int, level: int, alpha: float, done: bool) -> dict[str, Any]:
        """{"swd": [per level..., mean]} and {"fid": value} where due at this tick (the last tick always)."""
        c, out = self.config, {}
        if c.swd_images and (tick % c.swd_ticks == 0 or done):
            out["swd"] = self.swd(tick, level, alpha)
        if self.fid_model is not None and (tick % c.fid_ticks == 0 or done):
            out["fid"] = self.fid(level, alpha)
        return out

    def swd(self, tick: int, level: int, alpha: float) -> list[float]:
        """Sliced Wasserstein distance between the level's first reals and as many Gs fakes."""
        from curate.train.stylegan.swd import swd

        t, c = self.trainer, self.config
        reals = t.reals(level, c.swd_images)
        fakes = t.generate(t.latents(len(reals), c.seed + 1), level, alpha, seed=c.seed + 1)
        return swd(reals, fakes, seed=tick)

    def fid(self, level: int, alpha: float) -> float:
        """Fréchet Inception distance between the level's first reals and as many Gs fakes."""
        from curate.train.stylegan.swd import fid

        t, c = self.trainer, self.config
        reals = t.reals(level, c.fid_images)
        fakes = t.generate(t.latents(len(reals), c.seed + 2), level, alpha, seed=c.seed + 2)
        return fid(self.fid_model(reals), self.fid_model(fakes))
