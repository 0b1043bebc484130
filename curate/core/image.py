"""The one image reader: any still image a booru holds (a path or its bytes) -> RGB, or a reason code.

Never raises for a bad image. `REASONS` is the one vocabulary of read failures: every stage's table,
stats file and the report use these codes and their descriptions.

Odd files are data: a missing or empty file, text named .jpg, a truncated or corrupt file and a
decompression bomb each get their own reason. Odd modes are normalised: CMYK and palette convert to
RGB, transparency (RGBA, LA, palette with transparency) is composited on white, 16-bit greyscale is
scaled to 8 bits, EXIF orientation is applied, and an animated GIF gives its first frame.
`reduce_to` asks the JPEG decoder for a smaller image (DCT scaling, 1/2 to 1/8), which is how the
detector gets its input at a fraction of the cost of a full decode.

`decode_image()` (Pillow) is for source images; `decode_bgr()` (OpenCV) reads our own crops as a
NumPy array, the fast path score and pack need, and classifies what OpenCV cannot read with the same codes.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from curate.core.errors import is_environment_error

REASONS: dict[str, str] = {
    "missing_file": "the image file does not exist",
    "unreadable": "the file exists but cannot be read (permissions, I/O error)",
    "empty_file": "the file is empty",
    "not_an_image": "the bytes are not an image format Pillow knows (text, HTML, a zip...)",
    "decompression_bomb": "more pixels than the limit allows, or too big to decode in memory",
    "truncated": "the image data ends early (an interrupted download)",
    "corrupt": "the image data is malformed",
    "unsupported_mode": "a pixel mode that cannot be turned into RGB",
}
DECODE_REASONS = tuple(REASONS)
# the file name endings read as images where a folder is scanned (crop's inputs, pack's plain folders)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
# EXIF orientations 5-8 swap width and height.
_TRANSPOSED = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112
_WHITE = (255, 255, 255)


@dataclass
class Decoded:
    """An RGB image (maybe reduced) and the oriented size of the full-resolution source."""

    image: Image.Image  # mode RGB, orientation applied
    source_size: tuple[int, int]  # (width, height) of the full image, oriented


@dataclass
class DecodeFailure:
    """Why a file could not be decoded."""

    reason: str
    detail: str = ""


def to_rgb(im: Image.Image) -> Image.Image:
    """Normalise any Pillow mode to RGB (transparency on white, 16-bit scaled); ValueError if impossible."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        # A palette with a transparent index becomes RGBA first, so the holes go white, not black.
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode.startswith("I;16") or mode == "I":
        # 16-bit greyscale: Pillow's convert("L") clips at 255; scale the full range instead.
        a = np.asarray(im, dtype=np.uint32 if mode == "I" else None).astype(np.float32)
        top = 65535.0 if mode != "I" or a.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return im.convert("RGB")
    raise ValueError(f"mode {mode}")


def read_bytes(source: str | os.PathLike | bytes | bytearray | memoryview) -> bytes | DecodeFailure:
    """The bytes of an image (a path is read, bytes pass through), or missing_file / unreadable / empty_file.

    Never blocks on a FIFO or a device: the file is opened non-blocking and must be a regular file.
    Raises only for the machine's own failures (no file descriptors left, an I/O error, out of memory:
    curate.core.errors.is_environment_error), which are no image's fault: the stage must stop.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source) if not isinstance(source, bytes) else source
    else:
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return DecodeFailure("missing_file", str(source))
        except IsADirectoryError:
            return DecodeFailure("unreadable", f"{source} is a folder")
        except OSError as e:
            if is_environment_error(e):
                raise
            return DecodeFailure("unreadable", f"{source}: {e.strerror or e}")
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
                return DecodeFailure("unreadable", f"{source} is {kind}")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        except OSError as e:
            if is_environment_error(e):
                raise
            return DecodeFailure("unreadable", f"{source}: {e.strerror or e}")
        finally:
            os.close(fd)
    if not data:
        return DecodeFailure("empty_file")
    return data


def decode_image(source: str | os.PathLike | bytes, max_pixels: int, reduce_to: float = 1.0) -> Decoded | DecodeFailure:
    """Decode a path or bytes to RGB, JPEGs at about `reduce_to` of full size (never smaller); never raises."""
    data = read_bytes(source)
    if isinstance(data, DecodeFailure):
        return data
    with warnings.catch_warnings():
        # Our own pixel limit applies; Pillow's warning (not its hard limit) is noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            # From memory: Image.open on a BytesIO decodes exactly as on the file, draft() included.
            with Image.open(io.BytesIO(data)) as im:
                return _decode_open(im, max_pixels, reduce_to)
        except UnidentifiedImageError:
            # Pillow's message names the BytesIO object (an address): a detail must be the same every run.
            return DecodeFailure("not_an_image", "cannot identify image file")
        except Image.DecompressionBombError as e:
            return DecodeFailure("decompression_bomb", str(e))
        except PermissionError as e:
            return DecodeFailure("unreadable", str(e))
        except OSError as e:
            msg = str(e)
            return DecodeFailure("truncated" if "truncated" in msg or "broken data stream" in msg else "corrupt", msg)
        except (SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, RuntimeError) as e:
            # Pillow's plugins signal malformed files with these too.
            return DecodeFailure("corrupt", f"{type(e).__name__}: {e}")
        except MemoryError as e:
            return DecodeFailure("decompression_bomb", f"out of memory: {e}")


def _decode_open(im: Image.Image, max_pixels: int, reduce_to: float) -> Decoded | DecodeFailure:
    width, height = im.size
    if width <= 0 or height <= 0:
        return DecodeFailure("corrupt", f"size {width}x{height}")
    if width * height > max_pixels:
        return DecodeFailure("decompression_bomb", f"{width}x{height} is more than {max_pixels:,} pixels")
    try:
        orientation = int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # a broken EXIF block is no reason to lose the picture
        orientation = 1
    source_size = (height, width) if orientation in _TRANSPOSED else (width, height)
    if reduce_to < 1.0 and im.format == "JPEG":
        im.draft(None, (max(1, int(width * reduce_to)), max(1, int(height * reduce_to))))
    im.load()
    try:
        rgb = to_rgb(im)
    except ValueError as e:
        return DecodeFailure("unsupported_mode", str(e))
    if orientation != 1:
        rgb = _orient(rgb, orientation)
    if rgb is im:
        rgb = im.copy()  # the file closes when we return
    return Decoded(rgb, source_size)


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return im.transpose(method) if method is not None else im


def decode_bgr(source: str | os.PathLike | bytes) -> np.ndarray | DecodeFailure:
    """A path or bytes -> OpenCV's 8-bit BGR array (grey, alpha and 16 bits folded in), or a reason; never raises.

    The fast reader for our own crops (score, pack): one cv2.imdecode straight to the array the
    measurements and records are made from. What OpenCV cannot decode gets its code from Pillow.
    """
    import cv2

    data = read_bytes(source)
    if isinstance(data, DecodeFailure):
        return data
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except Exception:  # noqa: BLE001  cv2 raises on some malformed headers instead of returning None
        img = None
    if img is not None:
        return img
    failure = decode_image(data, 1 << 62)
    if isinstance(failure, DecodeFailure):
        return failure
    return DecodeFailure("corrupt", "Pillow reads it but OpenCV cannot decode it")
