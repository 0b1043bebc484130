"""The dedup unit: one crop's bytes -> its perceptual hash, or the reason it has none.

Reasons (a crop with one is never compared, so it can be no one's duplicate):

    (a read code)   the crop image cannot be read: one of curate.core.image.REASONS
    flat            near-uniform at 32x32 (blank, one colour, faint noise: curate.dedup.phash.FLAT_STD);
                    such crops would all share the same meaningless hash, and are kept apart instead
    near_duplicate  (the runner's, not the unit's) within the threshold of a better crop, its twin

`CropHasher` is configured once (whether to hash the mirror image too), is picklable, opens
nothing, writes nothing and never raises for a bad crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curate.core.image import DECODE_REASONS, DecodeFailure, decode_image
from curate.dedup.phash import phash, to_signed

REASONS = DECODE_REASONS + ("flat", "near_duplicate")
# A crop is 512x256 at most; anything far larger is not one of ours, and is refused like a bomb.
_MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class DedupConfig:
    """How near is a duplicate, and what is compared."""

    # Hamming distance (of 64 bits) at or under which two crops are near-duplicates. Measured by
    # bench/dedup_threshold.py on the sample's 33 crops (docs/dedup.md): the known pairs lie at 2
    # and 10, re-encodes and resizes at <= 2, hue shifts at <= 8, 91% of 2% shifts at <= 10; the
    # closest distinct crops at 18. 11 would catch no more here; 12 catches every shift but the
    # search of 1M crops probes about 3 times as many chunk values (radii 4, 3, 3 against 3, 3, 2).
    threshold: int = 10
    # Also compare each crop's mirror image: a flipped copy counts as a duplicate.
    mirror: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "mirror": self.mirror}


class CropHasher:
    """The unit: crop image bytes -> (hash, mirror hash or None, None, "") or (None, None, reason, detail)."""

    def __init__(self, mirror: bool = False):
        self.mirror = mirror

    def __call__(self, data: bytes) -> tuple[int | None, int | None, str | None, str]:
        decoded = decode_image(data, _MAX_PIXELS)
        if isinstance(decoded, DecodeFailure):
            return None, None, decoded.reason, decoded.detail[:200]
        hashed = phash(decoded.image, mirror=self.mirror)
        if hashed is None:
            return None, None, "flat", ""
        h, m = hashed
        return to_signed(h), None if m is None else to_signed(m), None, ""
