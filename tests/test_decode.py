"""Each odd file a booru holds, generated here with Pillow or as raw bytes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.core.image import DECODE_REASONS, REASONS, Decoded, DecodeFailure, decode_bgr, decode_image

LIMIT = 89_478_485


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data behind it."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def pixel(d: Decoded, xy: tuple[int, int]) -> tuple[int, ...]:
    return d.image.getpixel(xy)


def ok(path: Path, **kw) -> Decoded:
    d = decode_image(path, kw.pop("max_pixels", LIMIT), **kw)
    assert isinstance(d, Decoded), d
    assert d.image.mode == "RGB"
    return d


def failed(path: Path, **kw) -> str:
    d = decode_image(path, kw.pop("max_pixels", LIMIT), **kw)
    assert isinstance(d, DecodeFailure), d
    return d.reason


def test_missing_file(tmp_path):
    assert failed(tmp_path / "nope.jpg") == "missing_file"


def test_zero_byte_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    assert failed(tmp_path / "a.jpg") == "empty_file"


def test_text_named_jpg(tmp_path):
    (tmp_path / "a.jpg").write_text("<html>404 not found</html>\n")
    assert failed(tmp_path / "a.jpg") == "not_an_image"


def test_truncated_jpeg(tmp_path):
    data = jpeg_bytes(Image.effect_noise((400, 300), 60).convert("RGB"))
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])
    assert failed(tmp_path / "a.jpg") == "truncated"


def test_truncated_png_is_not_fatal(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((300, 300), 60).convert("RGB").save(buf, "PNG")
    (tmp_path / "a.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert failed(tmp_path / "a.png") in ("truncated", "corrupt")


def test_png_named_jpg_decodes_by_content(tmp_path):
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "a.jpg", "PNG")
    d = ok(tmp_path / "a.jpg")
    assert d.source_size == (40, 30) and pixel(d, (5, 5)) == (10, 200, 30)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(Image.new("CMYK", (32, 32), (0, 255, 255, 0))))
    r, g, b = pixel(ok(tmp_path / "a.jpg"), (16, 16))
    assert r > 230 and g < 30 and b < 30  # red, not an inverted or washed-out colour


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    a = np.full((20, 20), 32768, np.uint16)
    a[:, :10] = 65535
    Image.fromarray(a).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    d = ok(tmp_path / "a.png")
    assert pixel(d, (2, 2)) == (255, 255, 255)
    assert pixel(d, (15, 2)) == (128, 128, 128)  # clipping would give 255


def test_palette_png_with_transparency_is_composited_on_white(tmp_path):
    im = Image.new("P", (20, 20), 0)
    im.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    im.paste(1, (10, 0, 20, 20))
    im.save(tmp_path / "a.png", transparency=0)
    d = ok(tmp_path / "a.png")
    assert pixel(d, (2, 2)) == (255, 255, 255)  # transparent black -> white
    assert pixel(d, (15, 2)) == (200, 0, 0)


def test_rgba_png_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    im.paste((0, 0, 255, 255), (10, 0, 20, 20))
    im.paste((255, 0, 0, 128), (0, 10, 10, 20))
    im.save(tmp_path / "a.png")
    d = ok(tmp_path / "a.png")
    assert pixel(d, (2, 2)) == (255, 255, 255)
    assert pixel(d, (15, 2)) == (0, 0, 255)
    r, g, b = pixel(d, (2, 15))
    assert r == 255 and 120 <= g <= 135 and g == b  # half red over white


def test_greyscale_becomes_rgb(tmp_path):
    Image.new("L", (20, 20), 77).save(tmp_path / "a.jpg")
    d = ok(tmp_path / "a.jpg")
    assert len(set(pixel(d, (5, 5)))) == 1 and abs(pixel(d, (5, 5))[0] - 77) <= 2


def test_exif_orientation_is_honoured(tmp_path):
    im = Image.new("RGB", (80, 40), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 40, 40))  # red on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(im, exif=exif))
    d = ok(tmp_path / "a.jpg")
    assert d.source_size == (40, 80) and d.image.size == (40, 80)
    assert pixel(d, (20, 10))[0] > 200  # the stored left side is now on top
    assert pixel(d, (20, 70))[2] > 200


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 2
    assert pixel(ok(tmp_path / "a.gif"), (5, 5)) == (255, 0, 0)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "small.png")
    assert failed(tmp_path / "small.png", max_pixels=5000) == "decompression_bomb"
    assert isinstance(decode_image(tmp_path / "small.png", 10_000), Decoded)
    # 60000 x 60000 claimed by a 100-byte file: refused from the header alone (Pillow's own limit
    # and ours agree), without allocating 10 GB
    (tmp_path / "bomb.png").write_bytes(png_header_only(60000, 60000))
    assert failed(tmp_path / "bomb.png") == "decompression_bomb"
    (tmp_path / "bomb2.png").write_bytes(png_header_only(12000, 12000))  # above ours, below Pillow's hard limit
    assert failed(tmp_path / "bomb2.png") == "decompression_bomb"


def test_reduced_jpeg_decode_keeps_the_full_size(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (1000, 800), (90, 90, 90))))
    d = ok(tmp_path / "a.jpg", reduce_to=0.3)
    assert d.source_size == (1000, 800)
    assert d.image.size == (500, 400)  # DCT scaling 1/2: the smallest step not below 0.3
    assert ok(tmp_path / "a.jpg", reduce_to=0.25).image.size == (250, 200)
    assert ok(tmp_path / "a.jpg").image.size == (1000, 800)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK"])
def test_every_common_mode_gives_rgb(tmp_path, mode):
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    Image.new(mode, (16, 16)).save(tmp_path / f"a.{fmt.lower()}", fmt)
    assert ok(tmp_path / f"a.{fmt.lower()}").image.size == (16, 16)


def test_bytes_decode_as_the_file_does_reduced_jpeg_included(tmp_path):
    rng = np.random.default_rng(1)
    data = jpeg_bytes(Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)))
    (tmp_path / "a.jpg").write_bytes(data)
    for reduce_to in (1.0, 0.25):
        a, b = ok(tmp_path / "a.jpg", reduce_to=reduce_to), decode_image(data, LIMIT, reduce_to)
        assert a.source_size == b.source_size and a.image.tobytes() == b.image.tobytes()
    assert ok(tmp_path / "a.jpg", reduce_to=0.25).image.size == (50, 75)
    assert decode_image(b"", LIMIT).reason == "empty_file"


def test_the_array_reader_uses_the_same_codes(tmp_path):
    im = Image.fromarray(np.arange(64 * 32 * 3, dtype=np.uint8).reshape(64, 32, 3))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    bgr = decode_bgr(buf.getvalue())
    assert bgr.shape == (64, 32, 3) and (bgr[..., ::-1] == np.asarray(im)).all()
    assert decode_bgr(tmp_path / "gone.png").reason == "missing_file"
    assert decode_bgr(b"hello, world").reason == "not_an_image"
    assert set(DECODE_REASONS) == set(REASONS) and all(REASONS.values())
