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


# --align (docs/crop-geometry.md, "Aligned"): FFHQ's construction from the eyes and the mouth, scaled to
# the cascade's face width. On the 32 sample faces both detectors saw: cascade face width = 1.36 x FFHQ's
# half-side s = max(2 |eye to eye|, 1.8 |eyes to mouth|) (median; 10-90%: 1.16-1.53), and the cascade
# box's centre lies 0.088 s below FFHQ's centre (eye midpoint + 0.1 x eyes-to-mouth), along the face's
# vertical axis.
ALIGN_FACE_PER_S = 1.36
ALIGN_CENTRE_DROP = 0.088

Point = tuple[float, float]


class Aligned(NamedTuple):
    """A rotated 2:1 crop: its box in the face's own frame (centre and size as an unrotated box in source
    pixels), the rotation (degrees, the eye line's slope in the image: positive = down to the right), the
    k it ended up with, whether it reaches past the image, and its corners in the image (top-left,
    bottom-left, bottom-right, top-right: what PIL's QUAD transform takes)."""

    box: Box
    angle: float
    k: float
    padded: bool
    quad: tuple[Point, Point, Point, Point]


def eye_line(left_eye: Point, right_eye: Point, mouth: Point) -> tuple[float, float, float, Point]:
    """FFHQ's frame of a face: (cos, sin) of its x axis, its half-side s, its centre. `left_eye` is the
    character's left, on the image's right."""
    ex, ey = left_eye[0] - right_eye[0], left_eye[1] - right_eye[1]
    ax, ay = (left_eye[0] + right_eye[0]) / 2, (left_eye[1] + right_eye[1]) / 2
    mx, my = mouth[0] - ax, mouth[1] - ay
    # x: between the eye line and the perpendicular of the eyes-to-mouth line (FFHQ: e2e - flipud(e2m) * [-1, 1])
    xx, xy = ex + my, ey - mx
    norm = math.hypot(xx, xy)
    if not norm > 0:
        raise ValueError("degenerate landmarks")
    s = max(math.hypot(ex, ey) * 2.0, math.hypot(mx, my) * 1.8)
    return xx / norm, xy / norm, s, (ax + 0.1 * mx, ay + 0.1 * my)


def aligned_box(left_eye: Point, right_eye: Point, mouth: Point, image_size: tuple[int, int], k: float,
                min_k: float, pad: bool = False) -> Aligned | str:
    """The 2:1 portrait box of a face, rotated so that its eye line is level, or 'does_not_fit'.

    Width k x the face width the cascade would give (ALIGN_FACE_PER_S x s), the face centred in the
    upper square as in portrait_box. It is not shifted (a shift would move the face off its axis):
    a box past the image shrinks k towards min_k about the face, and below min_k is rejected or, with
    pad, keeps min_k and is padded white.
    """
    cos, sin, s, (fx, fy) = eye_line(left_eye, right_eye, mouth)
    width, height = image_size
    fw = ALIGN_FACE_PER_S * s
    cx, cy = fx - sin * ALIGN_CENTRE_DROP * s, fy + cos * ALIGN_CENTRE_DROP * s  # the face centre
    # corner = face centre + kk * fw * (u * x-axis + v * y-axis), y-axis = (-sin, cos)
    corners = [(-0.5, -0.5), (-0.5, 1.5), (0.5, 1.5), (0.5, -0.5)]
    k_fit = k
    for u, v in corners:
        dx, dy = fw * (u * cos - v * sin), fw * (u * sin + v * cos)
        for d, c, limit in ((dx, cx, width), (dy, cy, height)):
            if d > 0:
                k_fit = min(k_fit, (limit - c) / d)
            elif d < 0:
                k_fit = min(k_fit, -c / d)
    padded = k_fit < min_k
    if padded and not pad:
        return "does_not_fit"
    kk = min_k if padded else k_fit
    bw = kk * fw
    quad = tuple((cx + bw * (u * cos - v * sin), cy + bw * (u * sin + v * cos))
                 for u, v in corners)
    qx, qy = sum(p[0] for p in quad) / 4, sum(p[1] for p in quad) / 4  # the box's centre
    side = max(1, math.floor(bw + 0.5))
    box = Box(math.floor(qx - side / 2 + 0.5), math.floor(qy - side + 0.5), side, 2 * side)
    return Aligned(box, round(math.degrees(math.atan2(sin, cos)), 3), round(kk, 4), padded, quad)
