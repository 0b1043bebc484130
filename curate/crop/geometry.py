"""Portrait geometry for `curate crop`: pure functions from a face box to a 2:1 crop box.

See docs/crop-geometry.md for the drawing. In short: the crop is two squares stacked (height = 2 x
width), width = k x face width; the face is centred in the upper square and the lower square shows
the figure below it. A box past the image edge is shifted inside (keeping the face whole and its
centre in the upper half); if it still does not fit, k shrinks down to min_k; below that the face
is rejected as `does_not_fit`, or, with pad, the box keeps min_k and the outside is padded.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Box(NamedTuple):
    """An axis-aligned box in pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int


class Portrait(NamedTuple):
    """A crop box for one face, the k it ended up with, and whether it reaches past the image."""

    box: Box
    k: float
    padded: bool


def _clamp(v: float, lo: float, hi: float) -> float:
    return max(lo, min(v, hi))


def portrait_box(face: Box, image_size: tuple[int, int], k: float, min_k: float, pad: bool = False) -> Portrait | str:
    """The 2:1 portrait box around `face` in an image of (width, height), or the reason code 'does_not_fit'."""
    fx, fy, fw, fh = face
    width, height = image_size
    cx, cy = fx + fw / 2, fy + fh / 2
    # The largest k whose box fits: as wide as the image, twice as tall as the image allows, and with
    # at least half the box (k x fw) between the face centre and the bottom edge.
    k_fit = min(k, width / fw, height / (2 * fw), (height - cy) / fw)
    padded = k_fit < min_k
    if padded and not pad:
        return "does_not_fit"
    kk = min_k if padded else k_fit
    # floor keeps a fitting box inside the image; ceil keeps a padded one at min_k or more
    bw = max(1, math.ceil(kk * fw - 1e-9) if padded else math.floor(kk * fw + 1e-9))
    bh = 2 * bw
    # Natural place (face centred in the upper square), shifted inside the image, then held so
    # that the face stays whole and its centre stays in the upper half: the face wins over the edge
    # (which only happens when padding).
    x = _clamp(cx - bw / 2, 0, width - bw)
    x = _clamp(x, fx + fw - bw, fx)
    y = _clamp(cy - bw / 2, 0, height - bh)
    y = _clamp(y, cy - bw, fy)
    x, y = math.floor(x + 0.5), math.floor(y + 0.5)
    if not padded:  # rounding must never push a fitting box past the edge
        x, y = int(_clamp(x, 0, width - bw)), int(_clamp(y, 0, height - bh))
    box = Box(int(x), int(y), bw, bh)
    outside = box.x < 0 or box.y < 0 or box.x + bw > width or box.y + bh > height
    return Portrait(box, round(bw / fw, 4), outside)


def min_source_height(out_height: int, max_upscale: float) -> int:
    """The shortest crop (in source pixels) that reaches out_height with at most max_upscale."""
    return math.ceil(out_height / max_upscale - 1e-9)


def smallest_useful_face(out_height: int, max_upscale: float, k: float) -> int:
    """Faces narrower than this give a crop too short even at the full k, so they need not be found."""
    return max(1, math.ceil(min_source_height(out_height, max_upscale) / (2 * k) - 1e-9))


def scale_box(box: Box, sx: float, sy: float, image_size: tuple[int, int]) -> Box:
    """A box from a reduced image back in source pixels (sx, sy = source/reduced), kept inside the image."""
    width, height = image_size
    x0 = max(0, math.floor(box.x * sx + 0.5))
    y0 = max(0, math.floor(box.y * sy + 0.5))
    x1 = min(width, math.floor((box.x + box.w) * sx + 0.5))
    y1 = min(height, math.floor((box.y + box.h) * sy + 0.5))
    return Box(x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes: 0 apart, 1 the same."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match_boxes(first, second, threshold: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of two box lists, best overlap first: (index in first, index in second, IoU >= threshold)."""
    pairs = sorted(((iou(a, b), i, j) for i, a in enumerate(first) for j, b in enumerate(second)),
                   key=lambda p: (-p[0], p[1], p[2]))
    used_a, used_b, out = set(), set(), []
    for v, i, j in pairs:
        if v < threshold:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((i, j, v))
    return out
