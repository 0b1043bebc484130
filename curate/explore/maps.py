"""Feature maps as pictures: one small tile per channel, negative red, positive green, near zero white.

Every tile of a sheet shares one scale (the 99th percentile of |activation| over all channels), so
tiles compare: a pale tile is a quiet channel, not a rescaled one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.core.grid import png_bytes, render_grid

ORDERS = ("index", "magnitude")


def channel_magnitudes(maps: np.ndarray) -> np.ndarray:
    """[C]: each channel's mean |activation|."""
    return np.abs(maps).reshape(len(maps), -1).mean(axis=1)


def colour(maps: np.ndarray, scale: float | None = None) -> np.ndarray:
    """[C, h, w] -> uint8 [C, h, w, 3]: white at 0, towards green (positive) or red (negative)."""
    if scale is None:
        scale = float(np.percentile(np.abs(maps), 99)) or 1.0
    a = np.clip(np.abs(maps) / scale, 0.0, 1.0)
    fade = np.rint(255 * (1.0 - a)).astype(np.uint8)
    full = np.full_like(fade, 255)
    pos = maps >= 0
    r = np.where(pos, fade, full)
    g = np.where(pos, full, fade)
    return np.stack([r, g, fade], axis=-1)


def map_tiles(maps: np.ndarray, order: str = "index", tile_height: int = 32) -> tuple[bytes, dict[str, Any]]:
    """A PNG sheet of every channel's map, and its layout (columns, tile size, channel of each tile)."""
    if order not in ORDERS:
        raise ValueError(f"order is one of {ORDERS}")
    c, h, w = maps.shape
    chans = list(range(c)) if order == "index" else [int(i) for i in np.argsort(-channel_magnitudes(maps), kind="stable")]
    f = max(1, tile_height // h)
    tiles = colour(maps)[chans].repeat(f, axis=1).repeat(f, axis=2)
    cols = max(1, int(np.ceil(np.sqrt(c * h / w))))
    gap = 1
    sheet = render_grid(list(tiles), cols, (w * f, h * f), gap=gap)
    return png_bytes(sheet), {"columns": cols, "tile_width": w * f, "tile_height": h * f, "gap": gap,
                              "cell": f, "map_width": w, "map_height": h, "channels": chans}


def cell_channels(maps: np.ndarray, x: int, y: int, n: int = 10) -> list[tuple[int, float]]:
    """The n channels with the largest |activation| at map cell (x, y), with their values."""
    c, h, w = maps.shape
    if not (0 <= x < w and 0 <= y < h):
        raise ValueError(f"cell ({x}, {y}) is outside the {w}x{h} map")
    v = maps[:, y, x]
    return [(int(i), float(v[i])) for i in np.argsort(-np.abs(v), kind="stable")[:n]]
