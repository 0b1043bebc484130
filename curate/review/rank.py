"""The reject model: learns from the reviewer's decisions which crops they would reject, and ranks the rest.

Every latest decision in review.sqlite is a label, whatever its origin (grid, a batch, an import):
`rejected` = 1, `accepted` = 0; `pending` and never-decided crops are the unreviewed ones. Once there
are MIN_EACH of each, `train_and_rank` fits two of scikit-learn's logistic regressions, averaged
(`make_model`: L1 on every feature, L2 on the few portrait features), on the crops' features
(curate.review.features: table and image features and the face found again against the box,
standardised), calibrated with Platt scaling (`CalibratedClassifierCV`, sigmoid), and predicts for
every crop `p_reject`, the probability that the reviewer would reject it. Everything is seeded: the same decision log gives the same predictions.

How good it is comes from held-out decisions: `cross_val_predict` over stratified folds gives each
decided crop a prediction from a model that never saw it; their AUC is reported, and so is the
estimate of bad crops left among the unreviewed: the sum of their p_reject, with a 90% interval that
combines the spread of that sum (each crop a coin with its own p) with how far the held-out
predictions' total missed the held-out rejections (bootstrapped). The interval assumes the
unreviewed crops are like the decided ones; a reviewer who looked only at the worst-ranked crops
makes it optimistic, which the grid's header says.

Before there is a model, and beside it, every crop also gets `unusual` (`unusual_scores`): how far it
is from the typical crop of the workdir on the portrait features, which needs no decision. Most crops
of a dataset are fine portraits, so the typical crop is one, and the bad ones (a flat or text page, no
face, a face in the wrong place or of the wrong size) are unusual on several features at once. The
grid shows the score stage's rejections and then the most unusual crops first until the model exists
(`curate.review.session`, sort "unusual"), so the first decisions already span the kinds of defect, and
the model sees `unusual` and the score stage's verdict as two more features.

Outputs, written atomically: WORKDIR/review.rank.parquet (crop_id, p_reject, unusual, in crops-table
order; p_reject null without a model) and WORKDIR/review.rank.json (the decisions used, the held-out
figures, the estimate). Without enough decisions of both kinds the json says what is missing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.atomic import atomic_path, write_json
from curate.core.workdir import Workdir, latest_decisions
from curate.review.features import (FACE_CHECK_NAMES, PORTRAIT_NAMES, embedding_features, face_check_features,
                                    image_feature_names, image_features, table_features)

MIN_EACH = 10  # decisions of each kind before a model is trained: fewer would rank by noise
RANK_FILE, RANK_INFO = "review.rank.parquet", "review.rank.json"
FOLDS = 5
BOOTSTRAP = 400
SEED = 0
RANK_SCHEMA = pa.schema([("crop_id", pa.string()), ("p_reject", pa.float32()), ("unusual", pa.float32())])
UNUSUAL_NAMES = PORTRAIT_NAMES + FACE_CHECK_NAMES  # the features `unusual_scores` measures a crop on
Z_CAP, MAD_FLOOR = 10.0, 0.1  # one feature cannot outweigh the rest; a binary feature's MAD is 0


@dataclass
class Ranking:
    """What a ranking run decided: the model's predictions (None without a model) and its figures."""

    crop_ids: list[str]
    p_reject: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)
    unusual: np.ndarray | None = None  # unusual_scores, for every crop, model or not


def labels_from_log(wd: Workdir) -> dict[str, int]:
    """crop_id -> 1 (latest decision: rejected) or 0 (accepted); pending crops are not labels."""
    return {c: int(s == "rejected") for c, s in latest_decisions(wd.review_db).items() if s in ("rejected", "accepted")}


def feature_matrix(wd: Workdir, crops: pa.Table, workers: int | None = None, progress: bool = False,
                   models_root: str | os.PathLike | None = None) -> tuple[np.ndarray, list[str], int]:
    """[N, D] features of every crop (crops-table order), their names, and how many crops were featurised now;
    illustration2vec's embedding joins them when it is installed."""
    scores = None
    if wd.scores_table.exists():
        have = set(pq.read_schema(wd.scores_table).names)
        scores = pq.read_table(wd.scores_table, columns=[c for c in ("crop_id", "kept", "person", "rating_safe",
                               "rating_questionable", "rating_explicit", "top_tags", "top_probs") if c in have])
    tab, names = table_features(crops, scores)
    feats, reasons, computed = image_features(wd, crops, workers=workers, progress=progress)
    inames = image_feature_names()
    img = np.zeros((crops.num_rows, len(inames)), np.float32)
    unreadable = np.zeros((crops.num_rows, 1), np.float32)
    for i, cid in enumerate(crops.column("crop_id").to_pylist()):
        v = feats.get(cid)
        if v is not None and v.shape[0] == len(inames):
            img[i] = v
        else:
            unreadable[i, 0] = 1.0  # a crop that cannot be read is a strong hint in itself
    parts = [tab, img, unreadable, face_check_features(tab, names, img, inames), score_rejected(crops, scores)]
    all_names = names + inames + ["unreadable"] + FACE_CHECK_NAMES + ["score_rejected"]
    parts.append(unusual_scores(np.concatenate(parts, axis=1), all_names)[:, None])
    all_names.append("unusual")
    embedded = embedding_features(wd, crops, models_root, progress=progress)
    if embedded is not None:
        vectors, now = embedded
        width = next((v.shape[0] for v in vectors.values()), 0)
        emb = np.zeros((crops.num_rows, width), np.float32)
        for i, cid in enumerate(crops.column("crop_id").to_pylist()):
            if cid in vectors:
                emb[i] = vectors[cid]
        parts.append(emb)
        all_names += [f"i2v_{j}" for j in range(width)]
        computed += now
    return np.concatenate(parts, axis=1), all_names, computed


def score_rejected(crops: pa.Table, scores: pa.Table | None) -> np.ndarray:
    """float32 [N, 1]: 1 where the score stage rejected the crop (flat, few colours, blurry, ...), else 0."""
    out = np.zeros((crops.num_rows, 1), np.float32)
    if scores is None or "kept" not in scores.column_names:
        return out
    kept = dict(zip(scores.column("crop_id").to_pylist(), scores.column("kept").to_pylist()))
    for i, cid in enumerate(crops.column("crop_id").to_pylist()):
        out[i, 0] = float(kept.get(cid) is False)
    return out


def unusual_scores(X: np.ndarray, names: list[str]) -> np.ndarray:
    """float32 [N]: how unlike the workdir's typical crop each crop is, from its features alone (no decision).

    Each of the UNUSUAL_NAMES features is standardised over every crop, then measured as a robust z score,
    |x - median| / (MAD + MAD_FLOOR), capped at Z_CAP; a crop's score is their mean. The median and MAD
    are the typical crop's, which a minority of bad crops hardly moves (a mean and standard deviation
    would follow them). Deterministic: the same crops give the same scores.
    """
    cols = [j for j, n in enumerate(names) if n in UNUSUAL_NAMES]
    if not cols or not len(X):
        return np.zeros(len(X), np.float32)
    x = X[:, cols].astype(np.float64)
    z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    med = np.median(z, 0)
    mad = np.median(np.abs(z - med), 0)
    return np.minimum(np.abs(z - med) / (mad + MAD_FLOOR), Z_CAP).mean(1).astype(np.float32)


def make_model(names: list[str], seed: int = SEED, folds: int = 3):
    """Two standardised logistic regressions, averaged, calibrated by Platt scaling on inner folds:
    L1 on every feature (`names`, feature_matrix's), L2 on the few that say whether it is a portrait."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # L1 (lasso) regularisation: ~900 features and, at first, a few dozen decisions; it keeps the few
    # that separate the rejections seen so far (sharpness, edges, a few HOG cells) instead of spreading
    # weight over every HOG cell. But what separates the blur and flat crops a reviewer meets first
    # (sharpness) then explains away "no face found", and a sharp crop without a face ranks as good.
    # The L2 half sees only the portrait features (PORTRAIT_NAMES, FACE_CHECK_NAMES) and spreads its
    # weight over them, so "no face" and "a face of the wrong size" carry to defects not yet seen.
    # bench/review_rank.py, from the score order: the pair finds 95% of the bad crops after 38.5% looked
    # at, L1 alone after 43.1%; with `unusual` and `score_rejected` in the L2 half, 36.4% (docs/review-model.md).
    portrait = [j for j, n in enumerate(names) if n in PORTRAIT_NAMES or n in FACE_CHECK_NAMES
                or n in ("score_rejected", "unusual")]
    every = make_pipeline(StandardScaler(), LogisticRegression(C=2.0, l1_ratio=1.0, solver="liblinear", max_iter=20000,
                                                               class_weight="balanced", random_state=seed))
    small = make_pipeline(ColumnTransformer([("portrait", "passthrough", portrait)]), StandardScaler(),
                          LogisticRegression(C=1.0, solver="liblinear", max_iter=20000, class_weight="balanced",
                                             random_state=seed))
    base = VotingClassifier([("every", every), ("portrait", small)], voting="soft")
    return CalibratedClassifierCV(base, method="sigmoid", cv=StratifiedKFold(folds, shuffle=True, random_state=seed))


def _needs(counts: dict[str, int]) -> str | None:
    missing = [f"{MIN_EACH - counts[k]} more {k}" for k in ("rejected", "accepted") if counts[k] < MIN_EACH]
    return " and ".join(missing) if missing else None


def train_and_rank(wd: Workdir, workers: int | None = None, progress: bool = False, seed: int = SEED,
                   models_root: str | os.PathLike | None = None) -> Ranking:
    """Fit the reject model on the log's decisions and predict every crop (see the module's docstring)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    t0 = time.perf_counter()
    crops = pq.read_table(wd.crops_table)
    ids = crops.column("crop_id").to_pylist()
    labels = labels_from_log(wd)
    where = {c: i for i, c in enumerate(ids)}
    labelled = [(where[c], y) for c, y in labels.items() if c in where]
    counts = {"rejected": sum(y for _, y in labelled), "accepted": sum(1 - y for _, y in labelled)}
    info: dict[str, Any] = {"crops": len(ids), "decisions": counts, "min_each": MIN_EACH}
    X, names, computed = feature_matrix(wd, crops, workers=workers, progress=progress, models_root=models_root)
    unusual = X[:, names.index("unusual")].copy()
    why = _needs(counts)
    if why is not None:
        info.update(model=None, why=f"the model needs {why} decisions", featurised_now=computed,
                    seconds=round(time.perf_counter() - t0, 2))
        return Ranking(ids, None, info, unusual)
    rows = np.array(sorted(i for i, _ in labelled), np.int64)
    y = np.array([labels[ids[i]] for i in rows], np.int64)
    folds = min(FOLDS, int(min(counts.values())))
    held = cross_val_predict(make_model(names, seed), X[rows], y, method="predict_proba",
                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed))[:, 1]
    model = make_model(names, seed).fit(X[rows], y)
    p = model.predict_proba(X)[:, 1].astype(np.float32)
    unreviewed = np.ones(len(ids), bool)
    unreviewed[rows] = False
    info.update(model="two logistic regressions averaged (L1, C=2 on every feature; L2, C=1 on the portrait "
                      "features; balanced, standardised), Platt-calibrated",
                features=len(names), embedding="illustration2vec" if any(n.startswith("i2v_") for n in names) else None,
                featurised_now=computed, folds=folds,
                held_out={"decisions": int(len(y)), "auc": round(float(roc_auc_score(y, held)), 4),
                          "predicted_rejects": round(float(held.sum()), 2), "actual_rejects": int(y.sum())},
                estimate=estimate_bad(p[unreviewed], held, y, seed), seconds=round(time.perf_counter() - t0, 2))
    return Ranking(ids, p, info, unusual)


def estimate_bad(p_unreviewed: np.ndarray, held: np.ndarray, y: np.ndarray, seed: int = SEED) -> dict[str, Any]:
    """Expected bad crops among the unreviewed, with a 90% interval (see the module's docstring)."""
    expected = float(p_unreviewed.sum())
    spread = float(np.sqrt((p_unreviewed * (1 - p_unreviewed)).sum()))
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, len(y), len(y))
        predicted = held[pick].sum()
        if predicted > 0:
            ratios.append(y[pick].sum() / predicted)
    lo_r, hi_r = (np.quantile(ratios, [0.05, 0.95]) if ratios else (1.0, 1.0))
    low = max(0.0, expected * lo_r - 1.645 * spread)
    high = min(float(len(p_unreviewed)), expected * hi_r + 1.645 * spread)
    return {"unreviewed": int(len(p_unreviewed)), "expected_bad": round(expected, 1),
            "low": round(low, 1), "high": round(high, 1)}


def write_ranking(wd: Workdir, r: Ranking) -> None:
    """review.rank.parquet and review.rank.json, each atomic; p_reject is null where there is no model
    (also when the log no longer supports one, after decisions were undone: it must not rank the grid)."""
    path = wd.root / RANK_FILE
    n = len(r.crop_ids)
    p = pa.nulls(n, pa.float32()) if r.p_reject is None else pa.array(r.p_reject, pa.float32())
    u = pa.nulls(n, pa.float32()) if r.unusual is None else pa.array(r.unusual, pa.float32())
    table = pa.table({"crop_id": r.crop_ids, "p_reject": p, "unusual": u}, schema=RANK_SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    write_json(wd.root / RANK_INFO, {**r.info, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def read_ranking(wd: Workdir) -> tuple[dict[str, float], dict[str, Any] | None]:
    """(crop_id -> p_reject, the info) as last written; ({}, None) before the first ranking, {} without a model."""
    info = None
    with_info = wd.root / RANK_INFO
    if with_info.exists():
        try:
            info = json.loads(with_info.read_text())
        except ValueError:
            info = None
    path = wd.root / RANK_FILE
    if not path.exists():
        return {}, info
    return _rank_column(path, "p_reject"), info


def read_unusual(wd: Workdir) -> dict[str, float]:
    """crop_id -> unusual as last written ({} before the first ranking)."""
    return _rank_column(wd.root / RANK_FILE, "unusual")


def _rank_column(path, name: str) -> dict[str, float]:
    if not path.exists():
        return {}
    try:
        t = pq.read_table(path, columns=["crop_id", name])
    except (pa.ArrowException, OSError, KeyError):
        return {}  # a damaged or older ranking is only a ranking: the next one replaces it
    return {c: v for c, v in zip(t.column("crop_id").to_pylist(), t.column(name).to_pylist()) if v is not None}


def summary_line(r: Ranking, wd: Workdir) -> str:
    """The `curate review rank` summary."""
    d = r.info["decisions"]
    if r.p_reject is None:
        return (f"rank: no model yet ({d['rejected']} rejected, {d['accepted']} accepted; {r.info['why']}); "
                f"the grid shows the score stage's rejections, then the most unusual crops, first -> {wd.root / RANK_FILE}")
    e, h = r.info["estimate"], r.info["held_out"]
    return (f"rank: model from {h['decisions']} decisions ({d['rejected']} rejected, {d['accepted']} accepted), "
            f"held-out AUC {h['auc']:.2f}; {e['unreviewed']:,} unreviewed crops, about {e['expected_bad']:,.0f} bad "
            f"(90% interval {e['low']:,.0f}-{e['high']:,.0f}) -> {wd.root / RANK_FILE}")


class BackgroundRanker:
    """Retrains the reject model in a daemon thread whenever decisions change; the grid never waits.

    A change wakes it; it waits `settle` seconds for the reviewer's next few decisions, then trains
    on the log as it is (train_and_rank), writes the ranking, and hands it to the session. A failure
    is kept on the session (`model_problem`), shown by the page, and the grid goes on as before.
    """

    def __init__(self, session, settle: float = 2.0, workers: int = 1):
        import threading

        self.session, self.settle, self.workers = session, settle, workers
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="curate-ranker", daemon=True)
        self.trained = 0  # rankings written, for tests and the page

    def start(self, now: bool = False) -> "BackgroundRanker":
        self.session.listeners.append(self.poke)
        self._thread.start()
        if now:
            self._wake.set()
        return self

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.wait(self.settle):
                return
            self._wake.clear()
            s = self.session
            s.training = True
            try:
                r = train_and_rank(s.workdir, workers=self.workers)
                write_ranking(s.workdir, r)
                s.set_ranking(dict(zip(r.crop_ids, r.p_reject.tolist())) if r.p_reject is not None else {}, r.info,
                              dict(zip(r.crop_ids, r.unusual.tolist())) if r.unusual is not None else None)
                s.model_problem = None
                self.trained += 1
            except Exception as e:  # noqa: BLE001  the grid must keep working whatever the model does
                s.model_problem = f"{type(e).__name__}: {e}"
            finally:
                s.training = False
