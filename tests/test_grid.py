"""The one grid renderer: layout, captions, fitting, placeholders for failed reads, and PNG output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curate.core.grid import (
    PLACEHOLDER, png_bytes, read_tiles, render_grid, sheet_size, upscale_to, write_png,
)
from curate.core.image import DecodeFailure


def solid(colour, size=(8, 16)) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_layout_places_tiles_row_by_row_with_gaps_and_background():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    sheet = np.asarray(render_grid([solid(c) for c in colours], 3, (8, 16), gap=2, background=(9, 9, 9)))
    assert sheet.shape == (2 + 2 * (16 + 2), 2 + 3 * (8 + 2), 3)
    for k, c in enumerate(colours):
        x, y = 2 + (k % 3) * 10, 2 + (k // 3) * 18
        assert (sheet[y:y + 16, x:x + 8] == c).all()
    assert (sheet[:2] == 9).all() and (sheet[:, 10:12] == 9).all()  # outer margin and gap between columns
    assert (sheet[20:36, 22:30] == 9).all()  # the empty sixth cell stays background


def test_sheet_size_matches_the_sheet_and_has_at_least_one_row():
    assert sheet_size(0, 4, (10, 20), gap=4, caption_height=14) == (4 + 4 * 14, 4 + 38)
    sheet = render_grid([solid((1, 2, 3))] * 7, 5, (32, 64), captions=["x"] * 7, gap=4)
    assert sheet.size == sheet_size(7, 5, (32, 64), gap=4, caption_height=14) == (4 + 5 * 36, 4 + 2 * (64 + 14 + 4))
    assert render_grid([], 3, (8, 8)).size == (24, 8)


def test_array_tiles_without_gap_are_plain_tiling():
    """What the training grids are: uint8 NHWC tiled into rows of `cols`, no gap, black fill."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 16, 8, 3), dtype=np.uint8)
    sheet = np.asarray(render_grid(list(images), 3, (8, 16)))
    expected = np.zeros((3 * 16, 3 * 8, 3), np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, 3)
        expected[r * 16:(r + 1) * 16, k * 8:(k + 1) * 8] = img
    assert np.array_equal(sheet, expected)


def test_greyscale_and_rgba_arrays_become_rgb():
    grey = np.full((4, 4), 77, np.uint8)
    sheet = np.asarray(render_grid([grey, grey[:, :, None], np.full((4, 4, 4), 200, np.uint8)], 3, (4, 4)))
    assert (sheet[:, :8] == 77).all() and (sheet[:, 8:] == 200).all()
    with pytest.raises(TypeError):
        render_grid([np.zeros((4, 4, 3), np.float32)], 1, (4, 4))


def test_stretch_resizes_and_contain_keeps_aspect_centred_at_the_top():
    wide = solid((200, 0, 0), (40, 10))
    stretched = np.asarray(render_grid([wide], 1, (20, 20), background=(0, 0, 0)))
    assert (stretched == (200, 0, 0)).all()
    contained = np.asarray(render_grid([wide], 1, (20, 20), fit="contain", background=(0, 0, 0)))
    assert (contained[:5] == (200, 0, 0)).all() and (contained[5:] == 0).all()  # 40x10 -> 20x5, at the top
    narrow = solid((0, 200, 0), (6, 20))
    contained = np.asarray(render_grid([narrow], 1, (20, 20), fit="contain", background=(0, 0, 0)))
    assert (contained[:, 7:13] == (0, 200, 0)).all() and (contained[:, :7] == 0).all()  # centred, not enlarged
    with pytest.raises(ValueError):
        render_grid([wide], 1, (20, 20), fit="cover")


def test_captions_sit_below_their_tile_and_are_cut_to_its_width():
    tiles = [solid((0, 0, 0), (40, 20))] * 2
    sheet = np.asarray(render_grid(tiles, 2, (40, 20), captions=["a much too long caption for forty px", "abc"],
                                   caption_colour=(255, 255, 255), gap=10, background=(0, 0, 0)))
    assert sheet.shape == (10 + 20 + 14 + 10, 10 + 2 * 50, 3)
    assert not sheet[:30].any()  # captions never draw over the tiles
    assert sheet[30:44, 10:50].any() and sheet[30:44, 60:100].any()
    assert not sheet[:, 50:60].any()  # the long caption is cut at its cell's edge, not drawn into the gap
    assert render_grid(tiles, 2, (40, 20)).size == (80, 20)  # no captions, no caption space
    with pytest.raises(ValueError):
        render_grid(tiles, 2, (40, 20), captions=["one"])


def test_a_failed_read_is_a_grey_placeholder_with_its_reason(tmp_path):
    good = tmp_path / "a.png"
    solid((10, 200, 10), (16, 32)).save(good)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    tiles = read_tiles([good, tmp_path / "junk.png", tmp_path / "missing.png"])
    assert isinstance(tiles[0], Image.Image) and tiles[0].mode == "RGB"
    assert [t.reason for t in tiles[1:]] == ["not_an_image", "missing_file"]
    sheet = np.asarray(render_grid(tiles, 3, (64, 32), gap=2, background=(0, 0, 0)))
    assert (sheet[2:34, 2:66] == (10, 200, 10)).all()
    placeholder = sheet[2:34, 68:132]
    assert (placeholder == PLACEHOLDER).all(axis=-1).mean() > 0.8  # grey, with the reason written on it
    assert not (placeholder == PLACEHOLDER).all()
    bare = np.asarray(render_grid([DecodeFailure("")], 1, (8, 8)))
    assert (bare == PLACEHOLDER).all()


def test_upscale_to_repeats_pixels_by_the_whole_factor():
    a = np.arange(2 * 2 * 1 * 3, dtype=np.uint8).reshape(2, 2, 1, 3)  # NHWC
    up = upscale_to(a, 8)
    assert up.shape == (2, 8, 4, 3) and (up[1, 4:8, 0:4] == a[1, 1, 0]).all()
    assert upscale_to(a[0], 4).shape == (4, 2, 3)  # HWC too
    assert upscale_to(a, 2) is a


def test_png_output_round_trips(tmp_path):
    sheet = render_grid([solid((1, 2, 3))], 1, (8, 16))
    write_png(sheet, tmp_path / "s.png", compress_level=3)
    with Image.open(tmp_path / "s.png") as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), np.asarray(sheet))
    assert png_bytes(sheet, optimize=True).startswith(b"\x89PNG")
