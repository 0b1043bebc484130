"""The whole pipeline on the real 50-post sample: `curate run sample`, reruns, and the report.

Skipped without ../shared/data/danbooru-sample (a fresh clone has none).
"""

from __future__ import annotations

import json

import pytest

from conftest import ARTIFACTS
from curate.dataset import schema as records
from curate.pipeline.runner import load, plan, resolve, run


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    from conftest import SAMPLE

    if not (SAMPLE / "metadata").is_dir():
        pytest.skip(f"the shared Danbooru sample is not at {SAMPLE}")
    work = tmp_path_factory.mktemp("work")
    mp = pytest.MonkeyPatch()
    mp.setenv("DANBOORU", str(SAMPLE))
    mp.setenv("WORK", str(work))
    log: list[str] = []
    pipeline = load(resolve("sample"), _quiet())
    run(pipeline, echo=log.append)
    yield pipeline, log
    mp.undo()


def test_sample_pipeline_runs_every_stage(sample_run):
    p, log = sample_run
    assert [line.split()[1] for line in log if line.startswith("== ")] == ["filter", "crop", "score", "dedup", "pack"]
    manifest = json.loads((p.dataset_dir / records.MANIFEST).read_text())
    crops = json.loads((p.workdir / "crops.stats.json").read_text())
    scores = json.loads((p.workdir / "scores.stats.json").read_text())
    dedup = json.loads((p.workdir / "dedup.stats.json").read_text())
    # every crop that scoring kept is a record (the sample recipe's crops hold no near-duplicates:
    # its tag exclusions drop 2142264, the known pair's other half), at every level from 512x256 down to 4x2
    assert dedup["crops"] == crops["crops"] and dedup["near_duplicate"] == 0
    assert manifest["count"] == scores["kept"] > 0 and crops["crops"] >= scores["kept"]
    assert [lv["height"] for lv in manifest["levels"]] == [512, 256, 128, 64, 32, 16, 8, 4]
    assert all(lv["records"] == manifest["count"] for lv in manifest["levels"])
    # the run ends with its report, and says where it is
    assert log[-1].startswith(f"report: {p.workdir / 'report.html'} ") and (p.workdir / "report.html").stat().st_size


def test_an_unchanged_rerun_does_nothing_and_a_change_reruns_from_that_stage(sample_run):
    p, _ = sample_run
    log: list[str] = []
    run(load(p.source, _quiet()), echo=log.append)
    assert log[-2:] == ["nothing to do: every stage is up to date", f"report: {p.workdir / 'report.html'}"]
    steps = plan(load(p.source, _quiet() + ["crop.k=2.2"]))
    assert [(s["stage"], s["action"]) for s in steps] == [
        ("filter", "skip"), ("crop", "run"), ("score", "run"), ("dedup", "run"), ("pack", "run")]


def test_report_renders_in_a_real_browser(sample_run, browser):
    p, _ = sample_run
    path = p.workdir / "report.html"  # the one `curate run` wrote
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(path.as_uri())
    rows = page.eval_on_selector_all("table tr td:nth-child(2)", "tds => tds.map(t => t.textContent)")
    assert rows[:2] == ["posts in the metadata", "posts kept by the filter"]
    assert "portrait crops" in rows and "records in the dataset" in rows
    # the sample crops with both detectors: the report shows who proposed the faces and how many AnimeFace confirmed
    assert "faces proposed by a detector" in rows and "faces confirmed by AnimeFace (with landmarks)" in rows
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.alt, i.naturalWidth])")
    assert len(images) >= 4 and all(width > 0 for _, width in images)  # every picture decoded
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    page.close()


def _quiet() -> list[str]:
    return [f"{stage}.progress=false" for stage in ("filter", "crop", "score", "dedup", "pack")]


def test_a_review_decision_reruns_pack_only_and_pack_drops_the_crop(sample_run):
    import pyarrow.parquet as pq

    from curate.review.session import DecisionStore

    p, _ = sample_run
    first = pq.read_table(p.workdir / "crops.parquet").column("crop_id")[0].as_py()
    store = DecisionStore(p.workdir / "review.sqlite")
    store.append([(first, "rejected")], origin="grid")
    steps = plan(load(p.source, _quiet()))
    assert [(s["stage"], s["action"]) for s in steps] == [
        ("filter", "skip"), ("crop", "skip"), ("score", "skip"), ("dedup", "skip"), ("pack", "run")]
    before = json.loads((p.dataset_dir / records.MANIFEST).read_text())["count"]
    run(load(p.source, _quiet()), echo=lambda _: None)
    manifest = json.loads((p.dataset_dir / records.MANIFEST).read_text())
    assert manifest["count"] == before - 1 and first not in manifest["record_crop_ids"]


def test_the_grid_shows_animeface_landmarks_on_hover(sample_run, browser):
    """The sample crops with both detectors: hovering a crop AnimeFace saw draws its five points, the
    eyes side by side in the upper (face) square."""
    import signal

    from test_review import start_server

    from curate.core.workdir import Workdir

    p, _ = sample_run
    proc, url = start_server(Workdir(p.workdir))
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(url)
        with_lm = page.locator(".tile[data-lm]")
        assert with_lm.count() > 0
        with_lm.first.hover()
        dots = page.eval_on_selector_all(".tile .lm", "ds => ds.map(d => [d.title, parseFloat(d.style.left), "
                                                      "parseFloat(d.style.top)])")
        assert [d[0] for d in dots] == ["left eye", "right eye", "nose", "mouth", "chin"]
        eyes = {name: (x, y) for name, x, y in dots[:2]}
        assert all(0 <= x <= 100 and 0 <= y <= 50 for x, y in eyes.values())  # in the face square
        assert eyes["right eye"][0] < eyes["left eye"][0]  # the character's left eye is on the image's right
        mouth_y = dots[3][2]
        assert mouth_y > max(y for _, y in eyes.values())  # the mouth below the eyes
        page.mouse.move(1, 1)
        page.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
