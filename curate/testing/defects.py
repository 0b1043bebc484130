"""Bad crops made from good ones, for the reject model's tests and bench/review_rank.py.

Each defect is one a reviewer rejects on sight: `blur`, `flat` (one colour), `text` (a text page, as
scanned comments and translation notes are), `no_face` (the figure or background without the face),
`off_centre` (the face pushed to a corner), `geometry` (the wrong box: a small face far away, or a close-up that cuts the face). Seeded:
the same (image, defect, seed) gives the same bytes.
"""

from __future__ import annotations

import io

import numpy as np

DEFECTS = ("blur", "flat", "text", "no_face", "off_centre", "geometry")
_WORDS = ("the", "artist", "comment", "translated", "page", "notes", "chapter", "thanks", "for", "reading", "and",
          "please", "see", "next", "volume", "original", "story", "by", "staff", "special")


def defective(rgb: np.ndarray, defect: str, seed: int = 0) -> np.ndarray:
    """A copy of the HxWx3 uint8 crop `rgb` with `defect` (one of DEFECTS)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    if defect == "blur":
        return cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(rng.uniform(5, 9)))
    if defect == "flat":
        colour = rng.integers(0, 256, 3).astype(np.int16)
        noise = rng.integers(-3, 4, (h, w, 1)).astype(np.int16)
        return np.clip(colour + noise, 0, 255).astype(np.uint8)
    if defect == "text":
        from PIL import Image, ImageDraw

        im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(225, 256, 3)))
        d = ImageDraw.Draw(im)
        for y in range(int(rng.integers(8, 20)), h - 16, int(rng.integers(18, 26))):
            line = " ".join(rng.choice(_WORDS, int(rng.integers(2, 6))))
            d.text((int(rng.integers(4, 16)), y), line, fill=(20, 20, 20), font_size=int(rng.integers(13, 17)))
        return np.asarray(im)
    if defect == "no_face":
        figure = rgb[h // 2:]  # the lower square: body and background, no face
        return cv2.resize(np.ascontiguousarray(figure[:, ::-1] if rng.random() < 0.5 else figure), (w, h),
                          interpolation=cv2.INTER_LINEAR)
    if defect == "off_centre":
        dx = int(rng.choice([-1, 1]) * rng.uniform(0.35, 0.5) * w)
        dy = int(rng.uniform(0.2, 0.35) * h)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    if defect == "geometry":  # the wrong box: zoomed out (a small face) or in (a close-up that cuts the face)
        if rng.random() < 0.5:
            f = float(rng.uniform(0.4, 0.55))
            small = cv2.resize(rgb, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
            top, left = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
            return cv2.copyMakeBorder(small, top, h - small.shape[0] - top, left, w - small.shape[1] - left,
                                      cv2.BORDER_REFLECT)
        zoom = rgb[int(h * 0.12): int(h * 0.12) + h // 4, w // 4: w // 4 + w // 2]
        return cv2.resize(zoom, (w, h), interpolation=cv2.INTER_CUBIC)
    raise ValueError(f"unknown defect {defect!r}; one of {', '.join(DEFECTS)}")


def png(rgb: np.ndarray) -> bytes:
    """The array as PNG bytes (fast compression)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def make_defect_workdir(root, n: int = 120, every: int = 3, seed: int = 3):
    """A review workdir (curate.testing.review) whose every `every`-th crop has a defect, cycling through
    DEFECTS; returns (the Workdir, the set of defective crop ids)."""
    import pyarrow.parquet as pq

    from curate.core.image import decode_bgr
    from curate.testing.review import make_review_workdir

    wd = make_review_workdir(root, n=n, seed=seed)
    bad = set()
    for k, row in enumerate(pq.read_table(wd.crops_table, columns=["crop_id", "file"]).to_pylist()):
        if k % every == 0:
            path = wd.root / row["file"]
            rgb = np.ascontiguousarray(decode_bgr(path.read_bytes())[:, :, ::-1])
            path.write_bytes(png(defective(rgb, DEFECTS[(k // every) % len(DEFECTS)], seed=k)))
            bad.add(row["crop_id"])
    return wd, bad
