"""The sample grids of a run (reals.png, fakes<tick>.png) and of `curate generate`, drawn by curate.core.grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curate.core.grid import render_grid, upscale_to, write_png


def grid_png(images: np.ndarray, cols: int, path: Path, height: int | None = None) -> None:
    """Tile uint8 NHWC images into rows of `cols` and write a PNG atomically.

    With `height`, each image is first upscaled (nearest neighbour, by a whole factor) to it: grids
    show every level at the full size.
    """
    if height:
        images = upscale_to(images, height)
    _, h, w, _ = images.shape
    write_png(render_grid(list(images), cols, (w, h)), path)
