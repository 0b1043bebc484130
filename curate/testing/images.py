"""Seeded drawn-looking images for tests: shaded fills, outlines and gradients, like a crop of an illustration."""

from __future__ import annotations

import numpy as np


def textured(seed: int, height: int = 512, width: int = 256) -> np.ndarray:
    """A drawn, shaded HxWx3 uint8 picture: a vertical gradient plus 25 outlined discs."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = np.linspace(60, 200, height, dtype=np.uint8)[:, None, None]
    for _ in range(25):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(img, centre, int(rng.integers(10, 80)), colour, -1, cv2.LINE_AA)
        cv2.circle(img, centre, int(rng.integers(10, 80)), (20, 20, 20), 2, cv2.LINE_AA)
    return img
