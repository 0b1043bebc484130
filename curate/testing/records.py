"""Seeded synthetic 2:1 images packed with curate.dataset.schema's writers: tiny datasets for tests and benches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from curate.dataset import schema as R


def synthetic_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """n uint8 CHW images: a coloured ellipse ('a face') on a vertical gradient, all parameters random."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width
    out = np.empty((n, 3, height, width), np.uint8)
    for i in range(n):
        top, bottom, face = rng.uniform(0, 255, (3, 3))
        cy, cx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        ry, rx = rng.uniform(0.1, 0.25), rng.uniform(0.2, 0.45)
        img = top[:, None, None] * (1 - y) + bottom[:, None, None] * y
        inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
        img = np.where(inside[None], face[:, None, None], img)
        out[i] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return out


def write_dataset(directory: str | os.PathLike, n: int, height: int = 32, width: int = 16, seed: int = 0,
                  name: str = "synthetic", shard_size: int | None = None, min_height: int = 4) -> Path:
    """A multi-level record folder in pack's layout (plain or sharded files), without a manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = R.level_sizes(height, width, min_height, min_height * width // height)
    pyramids = [R.pyramid(img, len(sizes)) for img in synthetic_images(n, height, width, seed)]
    for k, (h, _) in enumerate(sizes):
        per = shard_size or n
        shards = (n + per - 1) // per
        for s in range(shards):
            fname = R.level_file(name, h) if shard_size is None else R.level_file(name, h, s, shards)
            with open(directory / fname, "wb") as f:
                for pyr in pyramids[s * per:(s + 1) * per]:
                    f.write(R.encode_record(pyr[k]))
    return directory
