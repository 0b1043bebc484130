"""Strips and animations of generated images: PNG strips (through curate.core.grid) and animated GIFs."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from curate.core.grid import png_bytes, render_grid


def strip_png(images: np.ndarray, columns: int | None = None) -> bytes:
    """uint8 [N, H, W, 3] side by side (in rows of `columns`, default all in one row) as PNG bytes."""
    n, h, w, _ = images.shape
    return png_bytes(render_grid(list(images), columns or n, (w, h)))


def gif_bytes(images: np.ndarray, fps: float = 12.0, loop: bool = True) -> bytes:
    """uint8 [N, H, W, 3] as an animated GIF (each frame its own palette).

    Pillow merges a frame identical to the one before it into that one's duration, so a GIF may hold
    fewer frames than it was given while playing for the same time.
    """
    frames = [Image.fromarray(np.asarray(f, np.uint8), "RGB") for f in images]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)),
                   loop=0 if loop else None, disposal=1)
    return buf.getvalue()
