"""Seeded synthetic review workdirs: small generated PNG crops plus crops and scores tables.

Tests and bench/review.py build their own workdirs with `make_review_workdir()`, since the crop and
score stages are separate issues. Crops may share image files (`images` < `n`) to build 100k-row
tables quickly; each row still has its own crop_id, so the review treats them as distinct crops.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.atomic import atomic_path, write_bytes
from curate.core.workdir import CROPS_SCHEMA, SCORES_SCHEMA, Workdir

REASONS = ("low_person", "explicit", "not_portrait")
TAGS = ("1girl", "solo", "long_hair", "smile", "blue_eyes", "short_hair", "hat", "blush", "open_mouth", "bangs")


def crop_image(k: int, size: tuple[int, int] = (256, 512)) -> bytes:
    """A recognisable 256x512 PNG: a colour gradient per k, an oval 'face' and the number k."""
    from PIL import Image, ImageDraw

    w, h = size
    rng = np.random.default_rng(k)
    top, bottom = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    px = (top * (1 - t) + bottom * t).astype(np.uint8)
    im = Image.fromarray(np.broadcast_to(px, (h, w, 3)).copy())
    d = ImageDraw.Draw(im)
    d.ellipse([w * 0.2, h * 0.18, w * 0.8, h * 0.52], fill=(250, 224, 200), outline=(60, 40, 30), width=3)
    d.ellipse([w * 0.33, h * 0.3, w * 0.43, h * 0.34], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    d.ellipse([w * 0.57, h * 0.3, w * 0.67, h * 0.34], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    d.text((10, h - 40), f"#{k}", fill=(255, 255, 255), font_size=28)
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def make_review_workdir(root: str | Path, n: int = 40, images: int | None = None, seed: int = 0,
                        scores: bool = True, unscored: int = 0) -> Workdir:
    """Write n crops (PNG files, crops.parquet) and, optionally, scores.parquet; returns the Workdir.

    `images` distinct files are made (default: one per crop) and reused round-robin; already
    present files are kept, so a cached bench workdir is built once. The last `unscored` crops get
    no score row.
    """
    wd = Workdir(root)
    images = n if images is None else max(1, min(images, n))
    rng = np.random.default_rng(seed)
    post_ids = 1000 + np.arange(n) // 2  # two faces per post
    crop_ids = [f"{p}_{i % 2}" for i, p in enumerate(post_ids)]
    if images == n:
        files = [Workdir.crop_file(c) for c in crop_ids]
    else:
        files = [f"crops/shared/{k % images:06d}.png" for k in range(n)]
    for k, f in enumerate(files[:images]):
        path = wd.root / f
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, crop_image(k))
    zeros = pa.array(np.zeros(n, np.int32))
    crops = pa.table({
        "crop_id": crop_ids, "post_id": pa.array(post_ids, pa.int64()),
        "source": [f"original/{p % 1000:04d}/{p}.jpg" for p in post_ids],
        "face_index": pa.array(np.arange(n, dtype=np.int32) % 2),
        "face_x": zeros, "face_y": zeros, "face_w": zeros, "face_h": zeros,
        "crop_x": zeros, "crop_y": zeros, "crop_w": pa.array(np.full(n, 256, np.int32)),
        "crop_h": pa.array(np.full(n, 512, np.int32)),
        "scale": pa.array(np.ones(n, np.float32)), "confidence": pa.array(rng.random(n, np.float32)),
        "source_width": pa.array(np.full(n, 512, np.int32)), "source_height": pa.array(np.full(n, 512, np.int32)),
        "file": files,
    }, schema=CROPS_SCHEMA)
    with atomic_path(wd.crops_table) as tmp:
        pq.write_table(crops, tmp)
    if scores:
        m = n - unscored
        person = rng.random(m, np.float32)
        kept = person >= 0.3
        reasons = [None if k else REASONS[i % len(REASONS)] for i, k in enumerate(kept)]
        tags = [[TAGS[j] for j in rng.choice(len(TAGS), 4, replace=False)] for _ in range(m)]
        probs = [sorted(rng.random(4, np.float32).tolist(), reverse=True) for _ in range(m)]
        s = pa.table({
            "crop_id": crop_ids[:m], "scorer": ["heuristic"] * m, "person": pa.array(person),
            "rating_safe": pa.array(np.ones(m, np.float32)), "rating_questionable": pa.array(np.zeros(m, np.float32)),
            "rating_explicit": pa.array(np.zeros(m, np.float32)),
            "top_tags": tags, "top_probs": pa.array(probs, pa.list_(pa.float32())),
            "kept": pa.array(kept), "reason": reasons,
        }, schema=SCORES_SCHEMA)
        with atomic_path(wd.scores_table) as tmp:
            pq.write_table(s, tmp)
    return wd
