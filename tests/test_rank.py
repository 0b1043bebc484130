"""The reject model (curate.review.rank): appears only after enough decisions, ranks the bad crops first,
is reproducible for a fixed log, and goes away when the decisions that supported it are undone."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (make dev installs it)")

from curate.core.workdir import Workdir  # noqa: E402
from curate.review.features import CropFeaturizer, image_feature_names, image_features  # noqa: E402
from curate.review.rank import RANK_FILE, read_ranking, train_and_rank, write_ranking  # noqa: E402
from curate.review.session import DecisionStore  # noqa: E402
from curate.testing.defects import make_defect_workdir  # noqa: E402

N = 120


@pytest.fixture
def workdir(tmp_path) -> tuple[Workdir, set[str]]:
    """N generated crops, every third one given a defect; returns the workdir and the bad crops' ids."""
    return make_defect_workdir(tmp_path / "w", n=N)


def decide(wd: Workdir, bad: set[str], rejected: int, accepted: int) -> list[str]:
    """Log the first `rejected` bad and `accepted` good crops (table order); returns the decided ids."""
    import pyarrow.parquet as pq

    ids = pq.read_table(wd.crops_table, columns=["crop_id"]).column("crop_id").to_pylist()
    rej = [c for c in ids if c in bad][:rejected]
    acc = [c for c in ids if c not in bad][:accepted]
    store = DecisionStore(wd.review_db)
    store.append([(c, "rejected") for c in rej] + [(c, "accepted") for c in acc], origin="import")
    store.close()
    return rej + acc


def test_the_featurizer_pickles_and_names_its_outputs(workdir):
    wd, _ = workdir
    unit = pickle.loads(pickle.dumps(CropFeaturizer()))
    data = next((wd.root / "crops").rglob("*.png")).read_bytes()
    v = unit(data)
    assert v.dtype == np.float32 and v.shape == (len(image_feature_names()),) and np.isfinite(v).all()
    assert unit(b"not an image") == "not_an_image" and unit(b"") == "empty_file"


@pytest.mark.parametrize("rejected, accepted, missing", [(9, 30, "1 more rejected"), (30, 0, "10 more accepted")],
                         ids=["nine-rejected", "one-class-only"])
def test_no_model_until_ten_of_each_and_the_grid_shows_the_unusual_crops_first(workdir, rejected, accepted, missing):
    from curate.review.session import ReviewSession

    wd, bad = workdir
    s = ReviewSession(wd)
    assert s.default_sort() == "score"  # before any ranking: the score order
    s.close()
    decide(wd, bad, rejected=rejected, accepted=accepted)
    r = train_and_rank(wd, workers=1)
    assert r.p_reject is None and missing in r.info["why"] and r.unusual is not None
    write_ranking(wd, r)
    assert read_ranking(wd)[0] == {} and read_ranking(wd)[1]["model"] is None
    s = ReviewSession(wd)
    assert s.default_sort() == "unusual" and not s.model_summary()["ready"] and s.page()["items"]
    assert s.model_summary()["unusual"]  # the header says the unusual crops come first
    s.close()


def test_unusual_crops_come_first_without_a_decision(workdir):
    from sklearn.metrics import roc_auc_score

    from curate.review.session import KEPT_LABEL, UNSCORED_LABEL, ReviewSession

    wd, bad = workdir
    r = train_and_rank(wd, workers=1)  # no decision at all
    assert r.p_reject is None and r.unusual.shape == (N,) and np.isfinite(r.unusual).all()
    truth = [int(c in bad) for c in r.crop_ids]
    assert roc_auc_score(truth, r.unusual) > 0.8  # the defects are unlike the typical crop
    assert np.array_equal(train_and_rank(wd, workers=1).unusual, r.unusual)  # deterministic
    write_ranking(wd, r)
    s = ReviewSession(wd)
    order = s.order("unusual")
    doubted = [s.index.label_names[s.index.labels[row]] not in (KEPT_LABEL, UNSCORED_LABEL) for row in order]
    assert doubted == sorted(doubted, reverse=True)  # the score stage's rejections first
    rest = [r.unusual[row] for row, d in zip(order, doubted) if not d]
    assert rest == sorted(rest, reverse=True)  # then the most unusual
    s.close()


def test_the_model_ranks_the_unreviewed_bad_crops_first_and_is_reproducible(workdir):
    from sklearn.metrics import roc_auc_score

    wd, bad = workdir
    decided = set(decide(wd, bad, rejected=12, accepted=20))
    r = train_and_rank(wd, workers=1)
    assert r.p_reject is not None and r.info["held_out"]["decisions"] == 32
    rest = [i for i, c in enumerate(r.crop_ids) if c not in decided]
    truth = [int(r.crop_ids[i] in bad) for i in rest]
    assert roc_auc_score(truth, r.p_reject[rest]) > 0.85  # defects it never saw labelled still rank first
    e = r.info["estimate"]
    assert e["unreviewed"] == N - 32 and e["low"] <= e["expected_bad"] <= e["high"]
    again = train_and_rank(wd, workers=1)
    assert np.array_equal(again.p_reject, r.p_reject)  # same log, same predictions
    assert again.info["featurised_now"] == 0  # the image features were kept in the workdir
    write_ranking(wd, r)
    p, info = read_ranking(wd)
    assert len(p) == N and info["held_out"]["auc"] == r.info["held_out"]["auc"]


def test_undoing_decisions_removes_the_model(workdir):
    wd, bad = workdir
    decided = decide(wd, bad, rejected=10, accepted=10)
    write_ranking(wd, train_and_rank(wd, workers=1))
    assert (wd.root / RANK_FILE).exists()
    store = DecisionStore(wd.review_db)
    store.append([(decided[0], "pending")], origin="undo")
    store.close()
    write_ranking(wd, train_and_rank(wd, workers=1))
    assert read_ranking(wd)[0] == {}  # no p_reject left to rank the grid by


def test_a_crop_that_cannot_be_read_is_a_feature_not_a_failure(workdir):
    import pyarrow.parquet as pq

    wd, _ = workdir
    crops = pq.read_table(wd.crops_table)
    first = wd.root / crops.column("file")[0].as_py()
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    feats, reasons, computed = image_features(wd, crops, workers=1)
    assert computed == N and reasons == {crops.column("crop_id")[0].as_py(): "truncated"}
    assert len(feats) == N - 1


def test_rank_and_export_from_the_command_line(workdir):
    import csv
    import io

    from tests.conftest import run_curate

    wd, bad = workdir
    r = run_curate("review", "rank", wd.root, "--no-progress")
    assert r.returncode == 0 and "no model yet" in r.stdout and "10 more rejected and 10 more accepted" in r.stdout
    decide(wd, bad, rejected=12, accepted=12)
    r = run_curate("review", "rank", wd.root, "--no-progress", "-j", "2")
    assert r.returncode == 0, r.stderr
    assert "model from 24 decisions (12 rejected, 12 accepted)" in r.stdout and "90% interval" in r.stdout
    r = run_curate("review", "export", wd.root, "--all")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == N and sum(row["status"] == "pending" for row in rows) == N - 24
    assert all(0 <= float(row["p_reject"]) <= 1 for row in rows)
    pending = [row for row in rows if row["status"] == "pending"]
    top = sorted(pending, key=lambda row: -float(row["p_reject"]))[: len(pending) // 4]
    base = sum(row["crop_id"] in bad for row in pending) / len(pending)
    assert sum(row["crop_id"] in bad for row in top) / len(top) >= 2 * base  # bad crops crowd the top quarter
    assert run_curate("review", "export", wd.root, "--all", "--history").returncode == 2


def test_the_grid_session_ranks_by_the_model_and_accepts_below_p_as_one_undo(workdir):
    from curate.review.session import ReviewSession

    wd, bad = workdir
    decide(wd, bad, rejected=12, accepted=12)
    write_ranking(wd, train_and_rank(wd, workers=1))
    s = ReviewSession(wd)
    assert s.default_sort() == "reject"
    page = s.page(sort="reject", size=N)
    ps = [it["p_reject"] for it in page["items"]]
    assert ps == sorted(ps, reverse=True) and None not in ps
    below = int(len(s.below(0.5)))
    assert 0 < below < s.counts()["pending"]
    changed = s.accept_below(0.5)
    assert len(changed) == below and s.counts()["accepted"] == 12 + below
    s.close()
    s = ReviewSession(wd)  # after a restart the batch is still one action
    assert len(s.undo()) == below and s.counts()["accepted"] == 12
    origins = [r[4] for r in s.store.history()]
    assert origins.count("accept-below") == below  # one logged decision per crop
    s.close()


def test_the_background_ranker_trains_once_there_are_enough_decisions(workdir):
    import time

    from curate.review.rank import BackgroundRanker
    from curate.review.session import ReviewSession

    wd, bad = workdir
    decide(wd, bad, rejected=9, accepted=10)
    s = ReviewSession(wd)
    ranker = BackgroundRanker(s, settle=0.1).start(now=True)
    try:
        deadline = time.monotonic() + 60
        while ranker.trained < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        summary = s.model_summary()
        assert not summary["ready"] and "1 more rejected" in summary["why"]  # the page says what is missing
        more = next(c for c in s.index.crop_ids if c in bad and s.status[s.index.position[c]] == 0)
        s.decide([more], "rejected")
        while ranker.trained < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert s.model_summary()["ready"] and s.default_sort() == "reject" and s.model_problem is None
    finally:
        ranker.stop()
        s.close()


def test_illustration2vec_s_embedding_joins_the_features_when_installed(workdir, tmp_path):
    pytest.importorskip("tensorflow", reason="TensorFlow is not installed (make dev installs it)")
    from curate.review.features import EMBEDDINGS_FILE
    from curate.score.models import install_illustration2vec
    from curate.testing.i2v import random_weights, write_caffemodel, write_tags

    models = tmp_path / "models"
    models.mkdir()
    write_caffemodel(models / "w.caffemodel", random_weights(16, seed=7))  # a 1/16-width network, random weights
    write_tags(models / "tag_list.json")
    install_illustration2vec(models / "w.caffemodel", models / "installed", progress=False)
    wd, bad = workdir
    decide(wd, bad, rejected=10, accepted=10)
    plain = train_and_rank(wd, workers=1, models_root=tmp_path / "none")
    r = train_and_rank(wd, workers=1, models_root=models / "installed")
    assert plain.info["embedding"] is None and r.info["embedding"] == "illustration2vec"
    assert r.info["features"] == plain.info["features"] + 1024 // 16  # conv6_3's channels at this width
    assert (wd.root / EMBEDDINGS_FILE).exists()
    again = train_and_rank(wd, workers=1, models_root=models / "installed")
    assert again.info["featurised_now"] == 0 and np.array_equal(again.p_reject, r.p_reject)


def test_the_face_found_again_is_checked_against_the_box_the_crop_was_cut_for():
    from curate.review.features import FACE_CHECK_NAMES, face_check_features

    tnames, inames = ["face_share", "face_centre_x", "face_centre_y"], ["face_x", "face_y", "face_w", "no_face"]
    table = np.array([[0.5, 0.5, 0.25], [0.5, 0.5, 0.25], [0.5, 0.5, 0.25]], np.float32)
    image = np.array([[0.5, 0.25, 0.5, 0.0],    # found where and as wide as the box says
                      [0.6, 0.35, 0.25, 0.0],   # a far shot: half as wide, off the box's centre
                      [0.0, 0.0, 0.0, 1.0]],    # no face found again: nothing to compare
                     np.float32)
    out = face_check_features(table, tnames, image, inames)
    assert out.shape == (3, len(FACE_CHECK_NAMES))
    assert np.allclose(out[0], 0) and np.allclose(out[2], 0)
    assert np.allclose(out[1], [np.log(0.5), np.log(0.5) ** 2, 0.01, 0.01], atol=1e-5)
