"""The one contact-sheet renderer: pictures in a grid of equal cells, optionally captioned.

Review's `sheet`, the report's sample grids, crop's overlay sheets, `curate inspect`'s level grid and
the trainer's sample grids all draw through `render_grid`; they differ only in the arguments (tile
size, gap, background, how a picture fits its cell, captions). A tile is a PIL image, a uint8 array
(HW, HWC with 1, 3 or 4 channels) or a `DecodeFailure`: a failed read becomes a grey placeholder
with its reason written on it, so one bad file never costs the whole sheet.

Cell geometry, the same for every caller: `gap` pixels around the sheet and between cells; a cell is
the tile area (`tile_size`, width x height) with `caption_height` pixels of caption below it.
"""

from __future__ import annotations

import io
import os
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from curate.core.atomic import write_bytes
from curate.core.image import DecodeFailure, decode_image

Tile = Union[Image.Image, np.ndarray, DecodeFailure]

PLACEHOLDER = (160, 160, 160)  # the grey of a tile whose image could not be read
PLACEHOLDER_TEXT = (60, 60, 60)
FITS = ("stretch", "contain")


def sheet_size(count: int, columns: int, tile_size: tuple[int, int], gap: int = 0,
               caption_height: int = 0) -> tuple[int, int]:
    """(width, height) of the sheet `render_grid` draws for `count` tiles (at least one row)."""
    tw, th = tile_size
    rows = max(1, -(-count // columns))
    return gap + columns * (tw + gap), gap + rows * (th + caption_height + gap)


def render_grid(tiles: Sequence[Tile], columns: int, tile_size: tuple[int, int], *,
                captions: Sequence[str] | None = None, caption_height: int = 14, caption_inset: int = 0,
                caption_colour: tuple[int, int, int] = (220, 220, 220), gap: int = 0,
                background: tuple[int, int, int] = (0, 0, 0), fit: str = "stretch",
                resample: Image.Resampling = Image.Resampling.BILINEAR) -> Image.Image:
    """An RGB sheet of `tiles` in rows of `columns`, left to right, top to bottom.

    fit="stretch" resizes each picture to exactly `tile_size`; fit="contain" shrinks it (aspect kept,
    never enlarged) and centres it horizontally at the top of its cell. `captions` (one per tile) are
    drawn below each tile, cut to the tile's width; without captions no caption space is kept.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, not {fit!r}")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, not {columns}")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} tiles")
    tw, th = tile_size
    cap_h = caption_height if captions is not None else 0
    sheet = Image.new("RGB", sheet_size(len(tiles), columns, tile_size, gap, cap_h), background)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, tile in enumerate(tiles):
        x = gap + (k % columns) * (tw + gap)
        y = gap + (k // columns) * (th + cap_h + gap)
        if isinstance(tile, DecodeFailure):
            draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=PLACEHOLDER)
            label = _fit_text(draw, tile.reason, tw - 8, font)
            draw.text((x + 4, y + th // 2), label, fill=PLACEHOLDER_TEXT, font=font)
        else:
            im = _as_rgb(tile)
            if fit == "stretch":
                if im.size != (tw, th):
                    im = im.resize((tw, th), resample)
                sheet.paste(im, (x, y))
            else:
                if im.width > tw or im.height > th:
                    im = im.copy()
                    im.thumbnail((tw, th), resample)
                sheet.paste(im, (x + (tw - im.width) // 2, y))
        if captions is not None and captions[k]:
            text = _fit_text(draw, captions[k], tw - caption_inset, font)
            draw.text((x + caption_inset, y + th + 1), text, fill=caption_colour, font=font)
    return sheet


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text


def _as_rgb(tile: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(tile, Image.Image):
        return tile if tile.mode == "RGB" else tile.convert("RGB")
    a = np.asarray(tile)
    if a.dtype != np.uint8:
        raise TypeError(f"array tiles must be uint8, not {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a), "L").convert("RGB")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(a), "RGB" if a.shape[2] == 3 else "RGBA").convert("RGB")
    raise ValueError(f"an array tile is HW or HWC with 1, 3 or 4 channels, not shape {a.shape}")


def read_tiles(paths: Sequence[str | os.PathLike], max_pixels: int = Image.MAX_IMAGE_PIXELS) -> list[Tile]:
    """Each file decoded through curate.core.image (RGB), or its DecodeFailure (a placeholder tile)."""
    out: list[Tile] = []
    for p in paths:
        d = decode_image(p, max_pixels)
        out.append(d if isinstance(d, DecodeFailure) else d.image)
    return out


def upscale_to(images: np.ndarray, height: int) -> np.ndarray:
    """Nearest-neighbour upscaling of uint8 (N)HWC by the whole factor that brings H to `height`."""
    f = height // images.shape[-3]
    return images.repeat(f, axis=-3).repeat(f, axis=-2) if f > 1 else images


def png_bytes(sheet: Image.Image, **save_options) -> bytes:
    """The sheet encoded as PNG (`save_options` go to Pillow: optimize, compress_level)."""
    buf = io.BytesIO()
    sheet.save(buf, "PNG", **save_options)
    return buf.getvalue()


def write_png(sheet: Image.Image, path: str | os.PathLike, **save_options) -> None:
    """Write the sheet as a PNG file, atomically."""
    write_bytes(path, png_bytes(sheet, **save_options))
