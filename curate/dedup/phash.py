"""The perceptual hash of a crop: 64 bits from the lowest frequencies of its 32x32 grey DCT (pHash).

The same computation as `imagehash.phash` (Pillow grey, LANCZOS to 32x32, 2-D DCT-II, the 8x8
lowest frequencies against their median), written as two small matrix products in NumPy: bit for
bit the same hash, without SciPy (bench/dedup.py checks both and times them). A picture that is
near-uniform at 32x32 (blank, one flat colour, faint noise) has no structure to hash: its bits would
be the median's coin flips and every blank crop would collide with every other, so it is `flat`
instead, and never compared.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIDE = 32  # the grey thumbnail the DCT is taken of
LOW = 8  # LOW x LOW lowest frequencies -> 64 bits
# Standard deviation of the 32x32 grey thumbnail (0..255) below which a crop counts as flat. A
# drawn face has tens; a blank page with JPEG noise or a faint gradient has one or two.
FLAT_STD = 3.0
_WEIGHTS = 1 << np.arange(LOW * LOW - 1, -1, -1, dtype=np.uint64)  # first bit = most significant


def _dct_rows(n: int = SIDE, k: int = LOW) -> np.ndarray:
    """The first k rows of the unnormalised DCT-II matrix of size n (scale does not move a median)."""
    u = np.arange(k)[:, None]
    x = np.arange(n)[None, :]
    return np.cos(np.pi * u * (2 * x + 1) / (2 * n))


_D = _dct_rows()


def grey_thumbnail(image: Image.Image) -> np.ndarray:
    """A picture -> its 32x32 grey thumbnail as float64 (imagehash's resize: grey first, then LANCZOS)."""
    return np.asarray(image.convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS), dtype=np.float64)


def hash_bits(grey: np.ndarray) -> int:
    """A 32x32 grey thumbnail -> its 64-bit pHash as an unsigned int."""
    low = _D @ grey @ _D.T
    bits = (low > np.median(low)).ravel()
    return int((bits.astype(np.uint64) * _WEIGHTS).sum())


def is_flat(grey: np.ndarray) -> bool:
    """True when the thumbnail is near-uniform (see FLAT_STD)."""
    return float(grey.std()) < FLAT_STD


def phash(image: Image.Image, mirror: bool = False) -> tuple[int, int | None] | None:
    """A picture -> (pHash, pHash of its mirror image or None), or None when it is flat."""
    grey = grey_thumbnail(image)
    if is_flat(grey):
        return None
    return hash_bits(grey), hash_bits(grey[:, ::-1]) if mirror else None


def to_signed(h: int) -> int:
    """An unsigned 64-bit hash as the int64 a parquet column holds (same bits)."""
    return h - (1 << 64) if h >= 1 << 63 else h


def distance(a: int, b: int) -> int:
    """Hamming distance of two 64-bit hashes (signed or unsigned: the same bits)."""
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()
