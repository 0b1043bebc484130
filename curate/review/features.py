"""What the reject model sees of a crop: cheap numbers, computed once per crop and kept in the workdir.

Two kinds, cheapest first:

- **table features**, free: from crops.parquet (detector confidence, face size and place in the crop,
  upscale factor, source size) and scores.parquet (person and rating probabilities, top tags as a
  probability-weighted bag over the workdir's most common tags);
- **image features**, one decode of the crop (`CropFeaturizer`, the engine-neutral unit): the face looked
  for again inside the crop with the LBP anime-face cascade (found or not, its centre and width as
  crop fractions), the score stage's measurements (contrast, dominant-colour share, colours,
  sharpness), edge density, saturation, white and black shares, colour histograms of the face square
  and of the figure square (low-saturation pixels binned by brightness alone: their hue is noise), and
  a coarse HOG (edge directions in 16x16 cells of a 64x128 copy). Why these and not a network: the
  crops a reviewer rejects are mostly blur, flat colour, text pages, no face or a face in the wrong
  place, which are face-position, colour and edge statistics; they cost ~7 ms a crop on one core with
  OpenCV alone, and need no weights;
- **an image embedding**, when illustration2vec is installed (`curate models install illustration2vec`):
  its last hidden layer averaged over space (1024 numbers; `embedding_features`), cached in
  `review.embeddings.parquet` with the weights' hash, so a change of weights computes them again.

`WORKDIR/review.features.parquet` holds the image features of every crop, keyed by crop id and the crop's
geometry and file, so a rerun computes only crops that are new or changed (`image_features`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.atomic import atomic_path
from curate.core.image import DecodeFailure, decode_bgr, read_bytes
from curate.core.pool import default_workers, ordered_map
from curate.core.workdir import Workdir

FEATURES_FILE = "review.features.parquet"
SIZE = (64, 128)  # width x height of the decode the image features are measured on: a 2:1 crop, shrunk
HUE, SAT, VAL = 8, 3, 3
HOG_CELL = 16
TAG_VOCABULARY = 64  # the workdir's most common top tags that become features

GREY_SAT, GREY_BINS = 40, 4  # pixels below this saturation have no meaningful hue: binned by value alone
FACE_SIZE = (128, 256)  # width x height the cascade looks for the face in, inside the crop


def image_feature_names() -> list[str]:
    """Names of `CropFeaturizer`'s outputs, in order."""
    names = ["contrast", "dominant", "colours", "log_sharpness", "edges", "saturation", "white", "black",
             "faces", "face_x", "face_y", "face_w", "no_face", "face_off_x", "face_off_y", "face_log_w",
             "face_log_w_sq"]
    for half in ("face", "figure"):
        names += [f"grey_{half}_{i}" for i in range(GREY_BINS)]
        names += [f"hsv_{half}_{i}" for i in range(HUE * SAT * VAL)]
    w, h = SIZE
    blocks = (w // HOG_CELL - 1) * (h // HOG_CELL - 1)
    names += [f"hog_{i}" for i in range(blocks * 4 * 9)]
    return names


class CropFeaturizer:
    """One crop's bytes -> its image features (float32), or the reader's reason code. Never raises.

    Configured once with the face cascade (curate.crop.cascades; the real LBP anime-face cascade by
    default): looking for the face again inside the crop says what no colour statistic can, whether
    there is a face and whether it sits where a portrait puts it. OpenCV's cascade and HOG objects are
    made on first use in each process (they do not pickle)."""

    def __init__(self, size: tuple[int, int] = SIZE, cascade: str | os.PathLike | None = None):
        from curate.crop.cascades import ANIMEFACE_FILE, CASCADE_DIR

        self.size = tuple(size)
        self.cascade = str(cascade or CASCADE_DIR / ANIMEFACE_FILE)
        self._hog = self._faces = None

    def __getstate__(self) -> dict[str, Any]:
        return {"size": self.size, "cascade": self.cascade}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.size, self.cascade = tuple(state["size"]), state["cascade"]
        self._hog = self._faces = None

    def _face(self, bgr: np.ndarray) -> list[float]:
        """[faces found (0-2), centre x, centre y, width of the largest (crop fractions), no face, and the
        squared distances of the centre from where a portrait puts it (x 1/2, y 1/4), log width and its
        square: a linear model can then reject a face too far off, too small *or* too large]."""
        import cv2

        if self._faces is None:
            from curate.crop.cascades import load_cascade

            self._faces = load_cascade(self.cascade)
        grey = cv2.equalizeHist(cv2.cvtColor(cv2.resize(bgr, FACE_SIZE, interpolation=cv2.INTER_AREA),
                                             cv2.COLOR_BGR2GRAY))
        found = self._faces.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=4, minSize=(20, 20))
        if len(found) == 0:
            return [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        x, y, w, h = max(found, key=lambda r: r[2] * r[3])
        fw, fh = FACE_SIZE
        cx, cy, rw = (x + w / 2) / fw, (y + h / 2) / fh, w / fw
        return [float(min(len(found), 2)), cx, cy, rw, 0.0, (cx - 0.5) ** 2, (cy - 0.25) ** 2,
                float(np.log(rw)), float(np.log(rw)) ** 2]

    def __call__(self, data: bytes | DecodeFailure) -> np.ndarray | str:
        import cv2

        from curate.score.scorer import image_stats

        bgr = data if isinstance(data, DecodeFailure) else decode_bgr(data)
        if isinstance(bgr, DecodeFailure):
            return bgr.reason
        small = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        stats = image_stats(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        half = self.size[1] // 2
        hists = []
        for part in (hsv[:half], hsv[half:]):
            coloured = (part[..., 1] >= GREY_SAT).astype(np.uint8)
            n = float(part.shape[0] * part.shape[1])
            greys = cv2.calcHist([part], [2], 1 - coloured, [GREY_BINS], [0, 256]).ravel() / n
            colours = cv2.calcHist([part], [0, 1, 2], coloured, [HUE, SAT, VAL], [0, 180, GREY_SAT, 256, 0, 256]).ravel() / n
            hists += [greys, colours]
        if self._hog is None:
            self._hog = cv2.HOGDescriptor(self.size, (2 * HOG_CELL, 2 * HOG_CELL), (HOG_CELL, HOG_CELL),
                                          (HOG_CELL, HOG_CELL), 9)
        hog = self._hog.compute(grey).ravel()
        v = hsv[..., 2]
        head = [stats["contrast"] / 64.0, stats["dominant"], np.log1p(stats["colours"]), np.log1p(stats["sharpness"]),
                float((cv2.Canny(grey, 80, 160) > 0).mean()), float(hsv[..., 1].mean()) / 255.0,
                float(((v > 225) & (hsv[..., 1] < GREY_SAT)).mean()), float((v < 30).mean()), *self._face(bgr)]
        return np.concatenate([np.array(head, np.float32), *hists, hog]).astype(np.float32)


FEATURES_VERSION = 2  # raise when CropFeaturizer's output changes: every cached crop is computed again


def _crop_key(row: dict[str, Any]) -> str:
    """Changes when the crop's pixels can have changed (its file, its box in the source) or the features did."""
    parts = [FEATURES_VERSION] + [row.get(k) for k in ("file", "source", "crop_x", "crop_y", "crop_w", "crop_h")]
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]


class _Featurize:
    """(workdir root, [(crop_id, file)]) -> [(crop_id, features or reason)], for the process pool."""

    def __init__(self, root: str):
        self.root, self.unit = root, CropFeaturizer()  # its cascade and HOG are made in the worker

    def __call__(self, chunk: list[tuple[str, str]]) -> list[tuple[str, np.ndarray | str]]:
        return [(cid, self.unit(read_bytes(os.path.join(self.root, f)))) for cid, f in chunk]


def _vectors(column: pa.ChunkedArray | pa.Array) -> list[np.ndarray | None]:
    """A list<float32> column as one float32 view per row (None for a null row): no Python float per number."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = arr.values.to_numpy(zero_copy_only=False)
    offsets = arr.offsets.to_numpy()
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return [values[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(len(arr))]


def _list_column(vectors: list[np.ndarray | None]) -> pa.Array:
    """The inverse of `_vectors`: one list<float32> array from per-row vectors (None: a null row)."""
    lengths = np.array([0 if v is None else len(v) for v in vectors], np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate([v for v in vectors if v is not None] or [np.zeros(0, np.float32)]).astype(np.float32)
    mask = pa.array([v is None for v in vectors], pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=mask)


FEATURES_SCHEMA = pa.schema([("crop_id", pa.string()), ("key", pa.string()), ("reason", pa.string()),
                             ("image", pa.list_(pa.float32()))])


def image_features(wd: Workdir, crops: pa.Table, workers: int | None = None,
                   progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
    """(crop_id -> image features, crop_id -> reason for crops that cannot be read, crops computed now).

    Reads WORKDIR/review.features.parquet, computes the crops it lacks (or whose file or box changed),
    and writes it back atomically with every crop of `crops`.
    """
    path = wd.root / FEATURES_FILE
    rows = crops.select([c for c in ("crop_id", "file", "source", "crop_x", "crop_y", "crop_w", "crop_h")
                         if c in crops.column_names]).to_pylist()
    keys = {r["crop_id"]: _crop_key(r) for r in rows}
    have: dict[str, tuple[str, np.ndarray | None, str | None]] = {}
    if path.exists():
        try:
            old = pq.read_table(path, schema=FEATURES_SCHEMA)
        except (pa.ArrowException, OSError):
            old = FEATURES_SCHEMA.empty_table()  # a damaged cache is only a cache: compute again
        for cid, key, reason, image in zip(old.column("crop_id").to_pylist(), old.column("key").to_pylist(),
                                           old.column("reason").to_pylist(), _vectors(old.column("image"))):
            have[cid] = (key, image, reason)
    todo = [(r["crop_id"], r["file"]) for r in rows
            if r["crop_id"] not in have or have[r["crop_id"]][0] != keys[r["crop_id"]]]
    if todo:
        chunks = [todo[i:i + 64] for i in range(0, len(todo), 64)]
        results = ordered_map(_Featurize(str(wd.root)), chunks, workers or default_workers())
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(chunks), desc="features", unit="chunk")
        for chunk in results:
            for cid, out in chunk:
                have[cid] = (keys[cid], None, out) if isinstance(out, str) else (keys[cid], out, None)
        table = pa.table({
            "crop_id": [r["crop_id"] for r in rows],
            "key": [keys[r["crop_id"]] for r in rows],
            "reason": [have[r["crop_id"]][2] for r in rows],
            "image": _list_column([have[r["crop_id"]][1] for r in rows]),
        }, schema=FEATURES_SCHEMA)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    features = {cid: v[1] for cid, v in have.items() if cid in keys and v[1] is not None}
    reasons = {cid: v[2] for cid, v in have.items() if cid in keys and v[2] is not None}
    return features, reasons, len(todo)


def table_features(crops: pa.Table, scores: pa.Table | None) -> tuple[np.ndarray, list[str]]:
    """float32 [N, D] features from the crops and scores tables, in crops-table order; NaN -> 0 with a flag."""
    c = crops.to_pydict()
    n = crops.num_rows

    def col(name: str, default: float = np.nan) -> np.ndarray:
        values = c.get(name)
        if values is None:
            return np.full(n, default, np.float64)
        return np.array([default if v is None else v for v in values], np.float64)

    fw, fh, cw, ch = col("face_w"), col("face_h"), col("crop_w"), col("crop_h")
    fx, fy, cx, cy = col("face_x"), col("face_y"), col("crop_x"), col("crop_y")
    sw, sh = col("source_width"), col("source_height")
    out = {
        "confidence": col("confidence"),
        "face_share": fw / np.maximum(cw, 1),
        "face_centre_x": (fx + fw / 2 - cx) / np.maximum(cw, 1),
        "face_centre_y": (fy + fh / 2 - cy) / np.maximum(ch, 1),
        "log_upscale": np.log(np.maximum(col("scale", 1.0), 1e-3)),
        "log_source_pixels": np.log1p(np.maximum(sw * sh, 0)),
        "padded": ((cx < 0) | (cy < 0) | (cx + cw > sw) | (cy + ch > sh)).astype(np.float64),
    }
    if scores is not None:
        s = scores.to_pydict()
        row = {cid: i for i, cid in enumerate(s["crop_id"])}
        idx = [row.get(cid) for cid in c["crop_id"]]
        for name in ("person", "rating_safe", "rating_questionable", "rating_explicit"):
            vals = s.get(name) or [None] * len(s["crop_id"])
            out[name] = np.array([np.nan if i is None or vals[i] is None else vals[i] for i in idx], np.float64)
        tags, probs = s.get("top_tags") or [], s.get("top_probs") or []
        counts: dict[str, int] = {}
        for t in tags:
            for tag in t or []:
                counts[tag] = counts.get(tag, 0) + 1
        vocabulary = sorted(counts, key=lambda t: (-counts[t], t))[:TAG_VOCABULARY]
        where = {t: j for j, t in enumerate(vocabulary)}
        bag = np.zeros((n, len(vocabulary)), np.float64)
        for k, i in enumerate(idx):
            if i is None or not tags[i]:
                continue
            for tag, p in zip(tags[i], probs[i] if probs and probs[i] else [1.0] * len(tags[i])):
                if tag in where:
                    bag[k, where[tag]] = p
        for j, tag in enumerate(vocabulary):
            out[f"tag:{tag}"] = bag[:, j]
    names = list(out)
    matrix = np.stack([out[k] for k in names], axis=1) if names else np.zeros((n, 0))
    missing = np.isnan(matrix)
    flags = [j for j in range(matrix.shape[1]) if missing[:, j].any()]
    matrix = np.where(missing, 0.0, matrix)
    if flags:  # a missing value is information too (unscored, or no detector confidence)
        matrix = np.concatenate([matrix, missing[:, flags].astype(np.float64)], axis=1)
        names += [f"missing:{names[j]}" for j in flags]
    return matrix.astype(np.float32), names


# The features the small "is this a portrait" half of the model sees (curate.review.rank.make_model):
# the image statistics that say blur, flat colour or a page, the face found again, and how far it is
# from where the crop stage meant it to be (`face_check_features`). Few, so that a rule learnt from one
# defect (no face found in a flat crop) carries to another (no face found in a sharp one).
PORTRAIT_NAMES = ["contrast", "dominant", "colours", "log_sharpness", "edges", "saturation", "white", "black",
                  "faces", "face_x", "face_y", "face_w", "no_face", "face_off_x", "face_off_y", "face_log_w",
                  "face_log_w_sq"]
FACE_CHECK_NAMES = ["check_log_w", "check_log_w_sq", "check_dx_sq", "check_dy_sq"]


def face_check_features(table: np.ndarray, table_names: list[str], image: np.ndarray,
                        image_names: list[str]) -> np.ndarray:
    """float32 [N, 4] (FACE_CHECK_NAMES): the face the cascade finds again in the crop against the face the
    crop was cut for (crops.parquet's box): the log of its width over the box's, squared, and the squared
    offsets of its centre. A crop cut for a misjudged box (a close-up, a far shot) holds a face of the
    wrong size; 0 where no face was found again (no_face says so) or no box is known. Free: both sides
    are already computed."""
    def t(name: str) -> np.ndarray:
        return table[:, table_names.index(name)].astype(np.float64) if name in table_names else np.zeros(len(table))

    def i(name: str) -> np.ndarray:
        return image[:, image_names.index(name)].astype(np.float64)

    share, cx, cy = t("face_share"), t("face_centre_x"), t("face_centre_y")
    w = i("face_w")
    ok = (i("no_face") == 0) & (share > 0) & (w > 0)
    lr = np.where(ok, np.log(np.maximum(w, 1e-3) / np.maximum(share, 1e-3)), 0.0)
    out = [lr, lr ** 2, np.where(ok, (i("face_x") - cx) ** 2, 0.0), np.where(ok, (i("face_y") - cy) ** 2, 0.0)]
    return np.stack(out, axis=1).astype(np.float32)


EMBEDDINGS_FILE = "review.embeddings.parquet"
EMBEDDINGS_SCHEMA = pa.schema([("crop_id", pa.string()), ("key", pa.string()), ("embedding", pa.list_(pa.float32()))])


def embedding_features(wd: Workdir, crops: pa.Table, models_root: str | os.PathLike | None = None,
                       progress: bool = False, batch: int = 32) -> tuple[dict[str, np.ndarray], int] | None:
    """(crop_id -> illustration2vec embedding, crops computed now), or None when illustration2vec is not
    installed. Unreadable crops have none. Cached in WORKDIR/review.embeddings.parquet (atomic)."""
    from curate.score.models import installed, models_dir
    from curate.score.scorer import CropScorer

    root = models_dir(models_root)
    manifest = installed(root)
    if manifest is None:
        return None
    weights = str(manifest.get("weights_sha256"))
    rows = crops.select(["crop_id", "file", "source", "crop_x", "crop_y", "crop_w", "crop_h"]).to_pylist()
    keys = {r["crop_id"]: hashlib.sha1(f"{_crop_key(r)}:{weights}".encode()).hexdigest()[:16] for r in rows}
    path = wd.root / EMBEDDINGS_FILE
    have: dict[str, tuple[str, np.ndarray]] = {}
    if path.exists():
        try:
            old = pq.read_table(path, schema=EMBEDDINGS_SCHEMA)
            have = {cid: (key, v) for cid, key, v in zip(old.column("crop_id").to_pylist(), old.column("key").to_pylist(),
                                                         _vectors(old.column("embedding")))}
        except (pa.ArrowException, OSError):
            have = {}
    todo = [r for r in rows if r["crop_id"] not in have or have[r["crop_id"]][0] != keys[r["crop_id"]]]
    if todo:
        import cv2

        net = CropScorer("illustration2vec", root, batch_size=batch).network()
        steps = range(0, len(todo), batch)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="embeddings", unit="batch")
        for at in steps:
            part = todo[at:at + batch]
            images, ids = [], []
            for r in part:
                bgr = decode_bgr(read_bytes(os.path.join(str(wd.root), r["file"])))
                if not isinstance(bgr, DecodeFailure):
                    images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    ids.append(r["crop_id"])
            for cid, v in zip(ids, net.embeddings(images)):
                have[cid] = (keys[cid], v)
        kept = [r["crop_id"] for r in rows if r["crop_id"] in have]
        table = pa.table({"crop_id": kept, "key": [keys[c] for c in kept],
                          "embedding": _list_column([have[c][1] for c in kept])}, schema=EMBEDDINGS_SCHEMA)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    return {c: v for c, (_, v) in have.items() if c in keys}, len(todo)
