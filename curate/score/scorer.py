"""The score unit: a batch of crops -> score rows (illustration2vec, or a heuristic without it).

`CropScorer` is the unit: configured once (scorer, models folder, batch size), called with a batch of
(crop row, image bytes), it returns the batch's raw score rows and never raises for a bad crop. Per
crop, `inspect_crop()` (pure, never raises) reads the image through curate.core.image and measures
it; the illustration2vec network, loaded lazily in the process that first calls the unit, then runs
over the readable crops in batches (tf.data). `decide()` turns a crop's measurements into kept / a
reason code.

Reasons, checked in this order (the first that applies is recorded):

    (a read code)   the crop image cannot be read: one of curate.core.image.REASONS (missing_file,
                    not_an_image, truncated, corrupt, ...), the code the reader gave
    flat            near-empty: grey-level std < min_contrast, or one colour covers > max_dominant of it
    few_colours     fewer than min_colours colours (5 bits per channel) each covering >= 0.1% of the crop
    blurry          variance of the Laplacian of the grey image < min_sharpness
    low_confidence  heuristic scorer only: the detector's confidence < min_confidence
    no_person       illustration2vec only: person probability < min_person

The person probability is the largest output among Danbooru's people-count tags (1girl, 2girls,
multiple girls, 1boy, ..., solo; `curate.score.illust2vec.PERSON_TAGS`): every picture of a person carries
one, so the largest is the network's belief that someone is there. The heuristic scorer has no such
probability: its `person` and rating columns are null, and the summary says which scorer ran.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curate.core.image import DECODE_REASONS, DecodeFailure, decode_bgr
from curate.core.workdir import SCORES_SCHEMA


SCORERS = ("illustration2vec", "heuristic")


REASONS = DECODE_REASONS + ("flat", "few_colours", "blurry", "low_confidence", "no_person")


# What a part file holds: the scores plus the measurements decide() needs.
PART_SCHEMA = pa.schema(
    [f for f in SCORES_SCHEMA if f.name not in ("kept", "reason")]
    + [
        ("error", pa.string()),
        ("confidence", pa.float32()),
        ("contrast", pa.float32()),
        ("dominant", pa.float32()),
        ("colours", pa.int32()),
        ("sharpness", pa.float32()),
    ]
)


@dataclass(frozen=True)
class ScoreRules:
    """Thresholds; each names the reason it produces. Defaults measured on 512x256 anime crops (README)."""

    min_person: float = 0.5  # no_person (illustration2vec)
    min_confidence: float | None = None  # low_confidence (heuristic); None = not checked
    min_contrast: float = 6.0  # flat: std of grey levels, 0-255
    max_dominant: float = 0.9  # flat: share of the most common colour
    min_colours: int = 12  # few_colours
    # blurry: variance of the Laplacian. On the 50-image sample, portrait crops upscaled 2x measure
    # 27-1500 (5th percentile 46); the same crops under a Gaussian blur of sigma 6 measure 1-3.
    min_sharpness: float = 10.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CropImage:
    """One crop read: the RGB pixels (None when unreadable), its measurements, the reader's reason code."""

    image: np.ndarray | None
    contrast: float | None = None
    dominant: float | None = None
    colours: int | None = None
    sharpness: float | None = None
    error: str | None = None


def image_stats(rgb: np.ndarray) -> dict[str, float | int]:
    """Grey-level std, dominant-colour share, significant colours and Laplacian variance of an RGB image."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    q = (rgb >> 3).astype(np.int32)
    counts = np.bincount(((q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]).ravel(), minlength=1 << 15)
    n = gray.size
    return {
        "contrast": float(gray.std()),
        "dominant": float(counts.max() / n),
        # 0.1% of the pixels: interpolated edge pixels between two fills do not count as colours.
        "colours": int((counts >= max(1, n // 1000)).sum()),
        "sharpness": float(cv2.Laplacian(gray, cv2.CV_64F).var()),
    }


def inspect_crop(source: str | os.PathLike | bytes | DecodeFailure) -> CropImage:
    """Read a crop (path or bytes) and measure it; an unreadable one has `error` (a reader code), never an exception."""
    import cv2

    bgr = source if isinstance(source, DecodeFailure) else decode_bgr(source)
    if isinstance(bgr, DecodeFailure):
        return CropImage(None, error=bgr.reason)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return CropImage(rgb, **image_stats(rgb))


def decide(m: dict[str, Any], rules: ScoreRules) -> str | None:
    """The reason a scored crop is rejected (None = kept), from its part row."""
    if m["error"] is not None:
        return m["error"] if m["error"] in DECODE_REASONS else "unreadable"  # parts written before the codes
    if m["contrast"] < rules.min_contrast or m["dominant"] > rules.max_dominant:
        return "flat"
    if m["colours"] < rules.min_colours:
        return "few_colours"
    if m["sharpness"] < rules.min_sharpness:
        return "blurry"
    if m["scorer"] == "heuristic":
        if rules.min_confidence is not None and (m["confidence"] is None or m["confidence"] < rules.min_confidence):
            return "low_confidence"
    elif m["person"] is None or m["person"] < rules.min_person:
        return "no_person"
    return None


class Illustration2VecScorer:
    """Batched illustration2vec inference over decoded crops: probabilities -> person, ratings, top tags."""

    name = "illustration2vec"

    def __init__(self, model: Any, tags: list[str], batch_size: int = 32, top_k: int = 10):
        import tensorflow as tf

        from curate.score.illust2vec import GROUPS, person_indices

        self.model, self.tags, self.batch_size, self.top_k = model, tags, batch_size, top_k
        self.person_idx = np.array(person_indices(tags), dtype=np.int64)
        if not self.person_idx.size:
            raise ValueError("the tag list has none of the person tags (1girl, 1boy, solo, ...)")
        self.general = GROUPS["general"]
        self.rating = GROUPS["rating"]
        self._infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """[N, 1539] sigmoid outputs for RGB uint8 images of any size, in order."""
        import tensorflow as tf

        from curate.score.illust2vec import N_OUTPUTS, preprocess

        if not images:
            return np.zeros((0, N_OUTPUTS), np.float32)
        ds = (
            tf.data.Dataset.from_generator(lambda: iter(images),
                                           output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
            .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(self.batch_size)
            .prefetch(1)
        )
        return np.concatenate([self._infer(batch).numpy() for batch in ds])

    def embeddings(self, images: list[np.ndarray]) -> np.ndarray:
        """[N, C] image embeddings: the last hidden layer (conv6_3, after its ReLU) averaged over space,
        the network's own description of the picture one step before its tag outputs."""
        import keras
        import tensorflow as tf

        from curate.score.illust2vec import preprocess

        if not hasattr(self, "_embed"):
            hidden = self.model.get_layer("conv6_3").output
            sub = keras.Model(self.model.input, keras.layers.GlobalAveragePooling2D()(hidden))
            self._embed = tf.function(lambda x: sub(x, training=False), reduce_retracing=True)
        if not images:
            return np.zeros((0, int(self.model.get_layer("conv6_3").output.shape[-1])), np.float32)
        ds = (tf.data.Dataset.from_generator(lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
              .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).batch(self.batch_size).prefetch(1))
        return np.concatenate([self._embed(batch).numpy() for batch in ds]).astype(np.float32)

    def columns(self, probs: np.ndarray) -> dict[str, list]:
        """Per-crop person, rating and top-general-tag columns from the probabilities."""
        g0, g1 = self.general
        general = probs[:, g0:g1]
        top = np.argsort(-general, axis=1, kind="stable")[:, : self.top_k]
        r0 = self.rating[0]
        return {
            "person": probs[:, self.person_idx].max(axis=1).tolist(),
            "rating_safe": probs[:, r0].tolist(),
            "rating_questionable": probs[:, r0 + 1].tolist(),
            "rating_explicit": probs[:, r0 + 2].tolist(),
            "top_tags": [[self.tags[g0 + j] for j in row] for row in top],
            "top_probs": [general[i, row].tolist() for i, row in enumerate(top)],
        }


class CropScorer:
    """The unit: a batch of (crop row with crop_id and confidence, image bytes) -> a PART_SCHEMA table, same order.

    Picklable. The network (scorer "illustration2vec") loads on first use in the process that calls
    the unit, so it works in a freshly spawned worker; "heuristic" needs no weights. An item whose
    bytes could not be read may carry the reader's DecodeFailure instead. Never raises for a bad crop.
    """

    def __init__(self, scorer: str = "heuristic", models_root: str | os.PathLike | None = None,
                 batch_size: int = 32, top_k: int = 10, threads: int = 1):
        if scorer not in SCORERS:
            raise ValueError(f"scorer {scorer!r} is not one of {SCORERS}")
        self.scorer, self.batch_size, self.top_k, self.threads = scorer, batch_size, top_k, threads
        self.models_root = None if models_root is None else str(models_root)
        self._net: tuple[Illustration2VecScorer, dict[str, Any]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pid: int | None = None

    def __getstate__(self):
        # Neither the network nor the thread pool travels: each process makes its own, on first use.
        return {**self.__dict__, "_net": None, "_pool": None, "_pid": None}

    def _in_this_process(self) -> None:
        if self._pid != os.getpid():
            self._net, self._pool, self._pid = None, None, os.getpid()

    def network(self) -> Illustration2VecScorer | None:
        """The illustration2vec scorer, loaded once in this process (None for the heuristic)."""
        self._in_this_process()
        if self.scorer != "illustration2vec":
            return None
        if self._net is None:
            from curate.score.models import load_illustration2vec, models_dir

            model, tags, manifest = load_illustration2vec(models_dir(self.models_root))
            net = Illustration2VecScorer(model, tags, batch_size=self.batch_size, top_k=self.top_k)
            info = {k: manifest.get(k) for k in ("weights_sha256", "width_divisor", "source", "installed_at")}
            info["person_tags"] = [tags[i] for i in net.person_idx]
            self._net = (net, info)
        return self._net[0]

    def model_info(self) -> dict[str, Any] | None:
        """The installed weights' manifest fields and the person tags used (None for the heuristic)."""
        return None if self.network() is None else dict(self._net[1])  # type: ignore[index]

    def _map(self, fn, items):
        self._in_this_process()
        if self.threads <= 1:
            return map(fn, items)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads)  # cv2 decodes and measures without the GIL
        return self._pool.map(fn, items)

    def __call__(self, batch: list[tuple[dict[str, Any], bytes | DecodeFailure]]) -> pa.Table:
        rows = [r for r, _ in batch]
        crops = list(self._map(inspect_crop, [data for _, data in batch]))
        return _part_table(rows, crops, self.network())


def _part_table(rows: list[dict[str, Any]], crops: list[CropImage], scorer: Illustration2VecScorer | None) -> pa.Table:
    """One batch's crop rows and measurements (and network outputs) as a PART_SCHEMA table."""
    n = len(rows)
    cols: dict[str, list] = {
        "crop_id": [r["crop_id"] for r in rows],
        "scorer": [scorer.name if scorer else "heuristic"] * n,
        "person": [None] * n, "rating_safe": [None] * n, "rating_questionable": [None] * n,
        "rating_explicit": [None] * n, "top_tags": [[] for _ in range(n)], "top_probs": [[] for _ in range(n)],
        "error": [c.error for c in crops],
        "confidence": [r["confidence"] for r in rows],
        "contrast": [c.contrast for c in crops], "dominant": [c.dominant for c in crops],
        "colours": [c.colours for c in crops], "sharpness": [c.sharpness for c in crops],
    }
    if scorer is not None:
        readable = [i for i, c in enumerate(crops) if c.image is not None]
        scored = scorer.columns(scorer.probabilities([crops[i].image for i in readable]))
        for key, values in scored.items():
            for i, v in zip(readable, values):
                cols[key][i] = v
    return pa.table(cols, schema=PART_SCHEMA)
