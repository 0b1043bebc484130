"""Local edits: channels found in a marked region, the edit's animation, and the saved edits of a run."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from curate.explore.latent import Edit, ExploreError, Latent
from curate.explore.store import Store


def find_channels(ex, latents: Sequence[Latent], level: int, region: tuple[float, float, float, float],
                  n: int = 8, edits: Sequence[Edit] = ()) -> list[int]:
    """The n channels of `level` most active inside `region` relative to outside it, over the images.

    Each image's maps (with `edits` applied) are averaged; a channel's score is its mean inside the region minus its mean
    outside (the whole map's mean when the region covers it), highest first.
    """
    if not latents:
        raise ExploreError("find channels over at least one image")
    maps = np.mean([ex.feature_maps(lat, level, edits) for lat in latents], axis=0)  # [C, h, w]
    mask = Edit(level, (0,), region).mask(*maps.shape[1:]).astype(bool)
    inside = maps[:, mask].mean(axis=1)
    outside = maps[:, ~mask].mean(axis=1) if (~mask).any() else maps.reshape(len(maps), -1).mean(axis=1)
    return [int(c) for c in np.argsort(-(inside - outside), kind="stable")[:n]]


def multipliers(frames: int, k: float) -> np.ndarray:
    """0 -> k -> 0 over `frames` values (a triangle; both ends 0)."""
    if frames < 2:
        raise ExploreError("an animation needs at least 2 frames")
    t = np.linspace(0.0, 2.0, frames)
    return (k * (1.0 - np.abs(1.0 - t))).astype(np.float64)


def animate(ex, latent: Latent, edit: Edit, frames: int, k: float, others: Sequence[Edit] = ()) -> np.ndarray:
    """uint8 [frames, H, W, 3]: the image with the edit's multiplier going 0 -> k -> 0 (other edits held)."""
    return np.concatenate([ex.render([latent], [*others, dataclasses.replace(edit, multiplier=float(m))])
                           for m in multipliers(frames, k)])


class EditStore(Store[Edit]):
    """RUN/explore/edits.json."""

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__(run_dir, "edits.json", "edits", Edit.from_json, Edit.to_json)

    def save(self, item: Edit) -> None:
        if not item.name:
            raise ExploreError("name an edit to save it")
        super().save(item)
