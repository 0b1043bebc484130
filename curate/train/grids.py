"""The sample grids of a run (reals.png, fakes<tick>.png) and of `curate generate`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def grid_png(images: np.ndarray, cols: int, path: Path, height: int | None = None) -> None:
    """Tile uint8 NHWC images into rows of `cols` and write a PNG atomically.

    With `height`, each image is first upscaled (nearest neighbour, by a whole factor) to it: grids
    show every level at the full size.
    """
    from PIL import Image

    from curate.core.atomic import atomic_path

    f = height // images.shape[1] if height else 1
    if f > 1:
        images = images.repeat(f, axis=1).repeat(f, axis=2)
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = img
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
