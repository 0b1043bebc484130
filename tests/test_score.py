from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.cli import main
from curate.score.models import ModelError, install_illustration2vec, load_illustration2vec
from curate.score.runner import run_score, summary_line
from curate.score.scorer import Illustration2VecScorer, ScoreRules, decide, image_stats, inspect_crop
from curate.core.workdir import CROPS_SCHEMA, SCORES_SCHEMA, Workdir
from curate.testing.images import textured
from curate.testing.i2v import numpy_forward, numpy_preprocess, random_weights, write_caffemodel, write_tags


def bad_crops() -> dict[str, np.ndarray]:
    flat = np.full((512, 256, 3), (230, 180, 170), np.uint8)
    two = np.zeros((512, 256, 3), np.uint8)
    two[:, :128] = (250, 250, 250)
    two[::16] = (250, 250, 250)  # stripes: contrast, but two colours
    return {"flat": flat, "few_colours": two, "blurry": cv2.GaussianBlur(textured(9), (0, 0), 8)}


def _reason(rgb: np.ndarray, rules=ScoreRules(), scorer="heuristic", confidence=3.0, person=None) -> str | None:
    return decide({"scorer": scorer, "person": person, "error": None, "confidence": confidence, **image_stats(rgb)}, rules)


def test_heuristic_rejects_flat_two_colour_and_blurred_crops_and_keeps_textured_ones():
    for seed in range(5):
        assert _reason(textured(seed)) is None
    for reason, img in bad_crops().items():
        assert _reason(img) == reason
    assert _reason(textured(1), ScoreRules(min_confidence=5.0), confidence=2.0) == "low_confidence"
    assert _reason(textured(1), ScoreRules(min_confidence=5.0), confidence=None) == "low_confidence"
    # illustration2vec: the person probability decides, the detector confidence does not.
    assert _reason(textured(1), ScoreRules(min_person=0.5, min_confidence=5.0), "illustration2vec", 0.0, 0.4) == "no_person"
    assert _reason(textured(1), ScoreRules(min_person=0.5), "illustration2vec", 0.0, 0.6) is None


def test_real_sample_crops_pass_the_image_checks(sample_root):
    files = sorted((sample_root / "original").glob("*/*.jpg"))
    assert files
    for f in files:
        img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        crop = cv2.resize(img[h // 4: h // 4 + 256, w // 2 - 64: w // 2 + 64], (256, 512), interpolation=cv2.INTER_CUBIC)
        assert _reason(crop) is None, f


def test_unreadable_and_missing_crops_are_data(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    assert inspect_crop(tmp_path / "junk.png").error == "not_an_image"  # the reader's codes (curate.core.image)
    assert inspect_crop(tmp_path / "nope.png").error == "missing_file"


def make_workdir(root, n_good=5, extra_bad=True):
    """A workdir with a crops table (CROPS_SCHEMA) and its PNGs: textured crops, then bad ones."""
    wd = Workdir(root)
    images = {f"{100 + i}_0": textured(i) for i in range(n_good)}
    if extra_bad:
        images.update({f"bad_{k}": v for k, v in bad_crops().items()})
    rows = []
    for i, (crop_id, img) in enumerate(images.items()):
        rel = Workdir.crop_file(crop_id)
        (wd.root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(wd.root / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append({"crop_id": crop_id, "post_id": 100 + i, "source": f"original/0100/{100 + i}.jpg", "face_index": 0,
                     "face_x": 10, "face_y": 10, "face_w": 50, "face_h": 50, "crop_x": 0, "crop_y": 0, "crop_w": 128,
                     "crop_h": 256, "scale": 2.0, "confidence": float(i), "source_width": 512, "source_height": 512,
                     "file": rel})
    rows.append({**rows[0], "crop_id": "gone_0", "file": Workdir.crop_file("gone_0")})  # image deleted
    pq.write_table(pa.Table.from_pylist(rows, schema=CROPS_SCHEMA), wd.crops_table)
    return wd


def test_heuristic_stage_writes_the_scores_table_and_says_which_scorer_ran(tmp_path):
    wd = make_workdir(tmp_path / "w")
    stats = run_score(wd, scorer="auto", models_root=tmp_path / "no-models", progress=False)
    table = pq.read_table(wd.scores_table)
    assert table.schema.equals(SCORES_SCHEMA)
    rows = {r["crop_id"]: r for r in table.to_pylist()}
    assert set(table.column("scorer").to_pylist()) == {"heuristic"}
    assert all(r["person"] is None and r["top_tags"] == [] for r in rows.values())
    assert {k: r["reason"] for k, r in rows.items() if not r["kept"]} == {
        "bad_flat": "flat", "bad_few_colours": "few_colours", "bad_blurry": "blurry", "gone_0": "missing_file"}
    assert stats["scorer"] == "heuristic" and "not installed" in stats["scorer_why"]
    assert stats["rejected"] == {"missing_file": 1, "flat": 1, "few_colours": 1, "blurry": 1}
    saved = json.loads((wd.root / "scores.stats.json").read_text())
    assert saved["scorer"] == "heuristic" and saved["kept"] == 5
    assert summary_line(stats).startswith("score (heuristic scorer): 9 crops -> kept 5")

    with pytest.raises(ModelError, match="not installed"):
        run_score(wd, scorer="illustration2vec", models_root=tmp_path / "no-models", progress=False)


def test_a_killed_run_resumes_to_the_same_table_and_thresholds_redecide_without_rescoring(tmp_path):
    a = make_workdir(tmp_path / "a")
    shutil.copytree(a.root, tmp_path / "b")
    b = Workdir(tmp_path / "b")
    whole = run_score(a, scorer="heuristic", chunk=2, progress=False)

    partial = run_score(b, scorer="heuristic", chunk=2, progress=False, stop_after_chunks=2)
    assert not partial["complete"] and partial["chunks_done"] == 2 and not b.scores_table.exists()
    resumed = run_score(b, scorer="heuristic", chunk=2, progress=False)
    assert resumed["chunks_reused"] == 2 and resumed["chunks"] == whole["chunks"] == 5
    assert pq.read_table(b.scores_table).equals(pq.read_table(a.scores_table))

    again = run_score(b, ScoreRules(min_confidence=2.5), scorer="heuristic", chunk=2, progress=False)
    assert again["chunks_reused"] == 5 and again["rejected"]["low_confidence"] == 3  # confidences 0, 1, 2


@pytest.fixture(scope="module")
def i2v_models(tmp_path_factory):
    """A 1/16-width illustration2vec installed from a generated caffemodel, and its weights."""
    root = tmp_path_factory.mktemp("models")
    weights = random_weights(16, seed=7)
    write_caffemodel(root / "w.caffemodel", weights)
    write_tags(root / "tag_list.json")
    install_illustration2vec(root / "w.caffemodel", root / "installed", progress=False)
    return root / "installed", weights


def test_batched_inference_matches_the_network_image_by_image(i2v_models):
    root, weights = i2v_models
    model, tags, _ = load_illustration2vec(root)
    scorer = Illustration2VecScorer(model, tags, batch_size=2, top_k=3)
    imgs = [textured(i) for i in range(3)] + [textured(3)[:300, :200]]  # odd batch, one odd size
    probs = scorer.probabilities(imgs)
    want = np.stack([numpy_forward(weights, numpy_preprocess(im)) for im in imgs])
    np.testing.assert_allclose(probs, want, atol=2e-4)
    cols = scorer.columns(probs)
    np.testing.assert_allclose(cols["person"], want[:, scorer.person_idx].max(axis=1), atol=2e-4)
    assert [tags[i] for i in scorer.person_idx] == ["1girl", "solo", "1boy", "multiple girls", "2girls"]
    # Random weights saturate some outputs (ties at 1.0 in float32), so check by probability, not name.
    top = cols["top_probs"][0]
    assert len(top) == 3 and top == sorted(top, reverse=True) and top[0] == pytest.approx(want[0, :512].max(), abs=2e-4)
    assert [probs[0, tags.index(t)] for t in cols["top_tags"][0]] == pytest.approx(top)
    np.testing.assert_allclose(cols["rating_explicit"], want[:, 1538], atol=2e-4)


def test_auto_takes_illustration2vec_when_installed_and_min_person_decides(tmp_path, i2v_models):
    root, _ = i2v_models
    wd = make_workdir(tmp_path / "w", n_good=4, extra_bad=False)
    stats = run_score(wd, scorer="auto", models_root=root, progress=False)
    table = pq.read_table(wd.scores_table).to_pylist()
    assert stats["scorer"] == "illustration2vec" and {r["scorer"] for r in table} == {"illustration2vec"}
    assert stats["model"]["person_tags"] == ["1girl", "solo", "1boy", "multiple girls", "2girls"]
    persons = [r["person"] for r in table if r["person"] is not None]
    assert len(persons) == 4 and all(0 <= p <= 1 for p in persons)
    assert all(len(r["top_tags"]) == 10 for r in table if r["person"] is not None)
    assert stats["rejected"].get("no_person", 0) == sum(p < 0.5 for p in persons)
    stats = run_score(wd, ScoreRules(min_person=0.0), scorer="auto", models_root=root, progress=False)
    assert stats["rejected"] == {"missing_file": 1} and stats["chunks_reused"] == 1
    stats = run_score(wd, ScoreRules(min_person=max(persons) + 1e-6), scorer="auto", models_root=root, progress=False)
    assert stats["rejected"] == {"missing_file": 1, "no_person": 4}
    assert summary_line(stats).startswith("score (illustration2vec scorer)")


def test_cli_misuse_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "nowhere"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "curate crop" in err
    wd = make_workdir(tmp_path / "w", n_good=1, extra_bad=False)
    with pytest.raises(SystemExit) as e:
        main(["score", str(wd.root), "--scorer", "illustration2vec", "--models-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "curate models install illustration2vec" in err
    with pytest.raises(SystemExit) as e:
        main(["score", str(wd.root), "--models-dir", str(tmp_path / "m"), "--no-progress"])
    assert e.value.code == 0 and "score (heuristic scorer): 2 crops" in capsys.readouterr().out
