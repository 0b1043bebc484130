"""The Beam engine gives what the local engine gives: same kept posts, same crops byte for byte, same stats.

Runs on Beam's own local runners, offline: the in-process FnApiRunner for the quick checks, the
DirectRunner in multi-process mode (two SDK worker processes) for the sample, and the bundle-based
DirectRunner, which retries a failed bundle, for the injected failure.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

if os.environ.get("CI"):
    import apache_beam as beam  # CI installs the dev extras, which include Beam: a missing Beam is a failure
else:
    beam = pytest.importorskip("apache_beam", reason="apache-beam is not installed (make dev installs it)")
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from curate.beam.crop import CropTransform, _CropChunk
from curate.beam.filter import FilterTransform
from curate.crop.cascades import ANIMEFACE_FILE, CASCADE_DIR, sha256_of
from curate.crop.cropper import CropConfig, Source
from curate.crop.runner import open_sources, run_crop
from curate.core.workdir import Workdir
from curate.filter.runner import FilterRules, run_filter
from curate.testing.metadata import metadata_lines, with_copies_and_families

IN_PROCESS = ["--runner=FnApiRunner"]
TWO_PROCESSES = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
# Run-dependent fields: where the output went, how long it took, which engine and how many workers.
RUN_FIELDS = {"output", "seconds", "mb_per_s", "workers", "engine", "processed_now", "output_bytes", "output_mtime_ns",
              "fingerprint", "up_to_date", "crops_per_s"}


def run_beam(transform, options: list[str]) -> None:
    with beam.Pipeline(options=PipelineOptions(options)) as p:
        _ = p | transform


def same_stats(local: dict, beam_stats: dict) -> None:
    for key in local.keys() - RUN_FIELDS:
        assert beam_stats.get(key) == local[key], key
    assert beam_stats["engine"] == "beam"


def crop_config() -> CropConfig:
    cascade = CASCADE_DIR / ANIMEFACE_FILE
    return CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade))


def file_hashes(workdir: Path) -> dict[str, str]:
    return {p.relative_to(workdir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((workdir / "crops").rglob("*.png"))}


@pytest.fixture(scope="module")
def metadata(tmp_path_factory) -> list[str]:
    """Two inputs, one gzipped, with a bad line, a blank line and duplicate ids across them."""
    d = tmp_path_factory.mktemp("meta")
    lines = list(metadata_lines(3000, seed=7, generation="mixed"))
    lines.insert(5, '{"id": "12", "created_at": ')  # malformed JSON
    lines.insert(9, "")
    lines.insert(40, '{"id":"5","created_at":"2017-01-01 00:00:00 UTC","rating":"s","image_width":"wide",'
                     '"image_height":"900","file_ext":"jpg","favs":[],"tags":[]}')  # a bad value
    lines += lines[100:160]  # the same posts again, as in a second dump
    (d / "a.json").write_text("\n".join(lines[:2000]) + "\n")
    with gzip.open(d / "b.json.gz", "wt") as f:
        f.write("\n".join(lines[2000:]) + "\n")
    return [str(d / "a.json"), str(d / "b.json.gz")]


@pytest.mark.parametrize("rules", [FilterRules(), FilterRules(min_favs=2, max_age_years=3)],
                         ids=["defaults", "newest-anchored-age-window"])
def test_filter_keeps_the_same_posts_with_the_same_reasons(metadata, tmp_path, rules):
    local = run_filter(metadata, tmp_path / "local.parquet", rules, workers=1, progress=False, block_bytes=1 << 18)
    run_beam(FilterTransform(metadata, str(tmp_path / "beam.parquet"), rules, block_bytes=1 << 18), IN_PROCESS)
    assert pq.read_table(tmp_path / "beam.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
    beam_stats = json.loads((tmp_path / "beam.stats.json").read_text())
    same_stats(local, beam_stats)
    assert local["bad_reasons"] == {"bad_value": 1, "malformed_json": 1}
    assert local["removed"].get("duplicate", 0) > 0 or local["kept"] == 0


@pytest.mark.parametrize("rules", [FilterRules(exclude_tags=frozenset()),
                                   FilterRules(exclude_tags=frozenset(), one_per_family=True, max_age_years=6)],
                         ids=["copies", "one-per-family"])
def test_same_pictures_and_families_are_removed_alike(tmp_path, rules):
    lines = with_copies_and_families(list(metadata_lines(2000, seed=5, generation="mixed")), seed=2)
    (tmp_path / "posts.json").write_text("\n".join(lines) + "\n")
    metadata = [str(tmp_path / "posts.json")]
    local = run_filter(metadata, tmp_path / "local.parquet", rules, workers=1, progress=False, block_bytes=1 << 17)
    run_beam(FilterTransform(metadata, str(tmp_path / "beam.parquet"), rules, block_bytes=1 << 17), IN_PROCESS)
    assert pq.read_table(tmp_path / "beam.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
    same_stats(local, json.loads((tmp_path / "beam.stats.json").read_text()))
    assert local["removed"]["duplicate_file"] > 5
    assert (local["removed"].get("family_variant", 0) > 5) == rules.one_per_family


def test_crop_on_two_beam_workers_writes_the_same_crops(sample_root, tmp_path):
    run_filter([sample_root / "metadata"], tmp_path / "f.parquet", FilterRules(ratings=frozenset("gsq")),
               dataset_root=sample_root, workers=1, progress=False)
    sources, _ = open_sources(tmp_path / "f.parquet", sample_root)
    sources.append(Source(str(sample_root / "original" / "nope.jpg"), "original/nope.jpg", "999", 999))
    config = crop_config()
    local = run_crop(sources, tmp_path / "local", config, workers=2, progress=False)
    run_beam(CropTransform(sources, str(tmp_path / "beam"), config), TWO_PROCESSES)
    assert pq.read_table(tmp_path / "beam" / "crops.parquet").equals(pq.read_table(tmp_path / "local" / "crops.parquet"))
    assert file_hashes(tmp_path / "beam") == file_hashes(tmp_path / "local") and local["crops"] > 0
    same_stats(local, json.loads((tmp_path / "beam" / "crops.stats.json").read_text()))
    assert local["reasons"]["missing_file"] == 1


def test_crop_with_both_detectors_on_beam_gives_the_local_landmarks(sample_root, tmp_path):
    sources, _ = open_sources(sample_root / "original")
    sources = sources[:12]  # AnimeFace is slow: a few images show the same unit and schema on Beam
    config = dataclasses.replace(crop_config(), detector="both", pad=True)
    local = run_crop(sources, tmp_path / "local", config, workers=2, progress=False)
    run_beam(CropTransform(sources, str(tmp_path / "beam"), config), IN_PROCESS)
    table = pq.read_table(tmp_path / "beam" / "crops.parquet")
    assert table.equals(pq.read_table(tmp_path / "local" / "crops.parquet")) and "left_eye_x" in table.schema.names
    assert file_hashes(tmp_path / "beam") == file_hashes(tmp_path / "local") and local["found_by"]["both"] > 0
    same_stats(local, json.loads((tmp_path / "beam" / "crops.stats.json").read_text()))


class _FailsOnce(_CropChunk):
    """The real crop step, which fails the first time it meets chunk 1, after writing that chunk's crops
    and part: the retry must find the finished part and give the same result (a marker file remembers)."""

    def __init__(self, *args, marker: str):
        super().__init__(*args)
        self.marker = marker

    def process(self, item):
        out = list(super().process(item))
        if item[0] == 1 and not os.path.exists(self.marker):
            Path(self.marker).write_text("failed once")
            raise RuntimeError("injected failure")
        yield from out


def test_a_failed_bundle_is_retried_and_the_output_is_complete(sample_root, tmp_path, monkeypatch):
    import curate.beam.crop as beam_crop

    run_filter([sample_root / "metadata"], tmp_path / "f.parquet", FilterRules(ratings=frozenset("gsq")),
               dataset_root=sample_root, workers=1, progress=False)
    sources, _ = open_sources(tmp_path / "f.parquet", sample_root)
    config = crop_config()
    run_crop(sources, tmp_path / "local", config, workers=1, progress=False)
    marker = tmp_path / "marker"
    monkeypatch.setattr(beam_crop, "_CropChunk", lambda *a: _FailsOnce(*a, marker=str(marker)))
    run_beam(CropTransform(sources, str(tmp_path / "beam"), config, chunk=8), ["--runner=BundleBasedDirectRunner"])
    assert marker.exists(), "the failure was never injected"
    assert pq.read_table(tmp_path / "beam" / "crops.parquet").equals(pq.read_table(tmp_path / "local" / "crops.parquet"))
    assert file_hashes(tmp_path / "beam") == file_hashes(tmp_path / "local")


@pytest.mark.parametrize("shard_size", [None, 7], ids=["one-file-per-level", "shards-of-7"])
@pytest.mark.parametrize("broken", [False, True], ids=["all-encode", "one-crop-fails"])
@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "pieces"])
def test_pack_writes_byte_identical_records_and_manifest(tmp_path, shard_size, broken, in_place):
    from curate.beam.pack import PackTransform
    from curate.dataset.pack import PackConfig, prepare, run_pack
    from test_pack import dir_bytes, make_workdir

    wd = make_workdir(tmp_path / "wd", 40, score_rejects={"104_0"}, review_rejects={"107_0"})
    if broken:
        (wd.root / Workdir.crop_file("109_0")).write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # cannot encode
    config = PackConfig(shard_size=shard_size)
    local = run_pack(wd.root, tmp_path / "local", config, workers=2, progress=False)
    run_beam(PackTransform(prepare(wd.root, tmp_path / "beam", config), chunk=6, in_place=in_place), IN_PROCESS)
    assert sum(local["source"]["skipped"].values()) == int(broken)
    assert dir_bytes(tmp_path / "beam") == dir_bytes(tmp_path / "local")
    assert not (tmp_path / "beam" / ".pack-beam").exists()


def test_pack_on_two_beam_workers(tmp_path):
    from curate.beam.pack import PackTransform
    from curate.dataset.pack import PackConfig, prepare, run_pack
    from test_pack import dir_bytes, make_workdir

    wd = make_workdir(tmp_path / "wd", 30)
    config = PackConfig(shard_size=8)
    run_pack(wd.root, tmp_path / "local", config, workers=1, progress=False)
    run_beam(PackTransform(prepare(wd.root, tmp_path / "beam", config), chunk=4), TWO_PROCESSES)
    assert dir_bytes(tmp_path / "beam") == dir_bytes(tmp_path / "local")


def test_score_makes_the_same_decisions_from_the_same_parts(tmp_path):
    import shutil

    from curate.beam.score import ScoreTransform
    from curate.score.runner import run_score
    from test_pack import make_workdir

    wd = make_workdir(tmp_path / "local", 30)
    (wd.root / Workdir.crop_file("103_0")).write_bytes(b"not an image")  # scored as unreadable on both engines
    shutil.copytree(wd.root, tmp_path / "beam")
    local = run_score(wd, scorer="heuristic", chunk=8, progress=False)
    run_beam(ScoreTransform(str(tmp_path / "beam"), scorer="heuristic", chunk=8), TWO_PROCESSES)
    beam_wd = Workdir(tmp_path / "beam")
    assert pq.read_table(beam_wd.scores_table).equals(pq.read_table(wd.scores_table))
    assert (beam_wd.scores_table).read_bytes() == wd.scores_table.read_bytes()
    same_stats(local, json.loads((tmp_path / "beam" / "scores.stats.json").read_text()))
    assert local["rejected"].get("not_an_image") == 1, local["rejected"]


def run_sample(work: str, dump: str, beam_options: list[str] | None = None) -> None:
    """`curate run sample` as a user types it: the local engine, or Beam with these options after `--`."""
    import subprocess
    import sys

    extra = ["--engine", "beam", "--", *beam_options] if beam_options is not None else []
    r = subprocess.run([sys.executable, "-m", "curate", "run", "sample", *extra], capture_output=True, text=True,
                       env={**os.environ, "WORK": work, "DANBOORU": dump}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "INFO:apache_beam" not in r.stderr  # Beam's workers are told to keep their start-up chatter to themselves


@pytest.fixture(scope="module")
def local_sample(tmp_path_factory) -> Path:
    """The sample pipeline's workdir, from the local engine (once for the module)."""
    from tests.conftest import SAMPLE

    if not (SAMPLE / "metadata").is_dir():
        pytest.skip(f"the shared Danbooru sample is not at {SAMPLE} (a fresh clone has no ../shared)")
    work = tmp_path_factory.mktemp("local")
    run_sample(str(work), str(SAMPLE))
    return work / "sample"


def assert_same_dataset(local: Path, beam_wd: Path) -> None:
    """Same posts, crops (rows and bytes), decisions, records and manifest; `curate report` reads both."""
    import subprocess
    import sys

    ids = lambda w: pq.read_table(w / "filtered.parquet").column("id").to_pylist()  # noqa: E731
    assert ids(beam_wd) == ids(local) and ids(local)
    assert pq.read_table(beam_wd / "crops.parquet").equals(pq.read_table(local / "crops.parquet"))
    assert file_hashes(beam_wd) == file_hashes(local)
    decisions = lambda w: pq.read_table(w / "scores.parquet", columns=["crop_id", "kept", "reason"]).to_pylist()  # noqa: E731
    assert decisions(beam_wd) == decisions(local)
    records = lambda w: {p.name: p.read_bytes() for p in sorted((w / "dataset").glob("*.tfrecords"))}  # noqa: E731
    assert records(beam_wd) == records(local) and len(records(local)) == 8
    manifests = [json.loads((w / "dataset" / "dataset.json").read_text()) for w in (local, beam_wd)]
    for m in manifests:
        m["source"].pop("workdir")
    assert manifests[0] == manifests[1]
    # the stats files are the local run's, so `curate report` reads a Beam workdir as it reads a local one
    pages = []
    for w in (local, beam_wd):
        r = subprocess.run([sys.executable, "-m", "curate", "report", str(w), "-o", str(w / "report.html")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        pages.append((w / "report.html").read_text())
    funnel = re.compile(r"<tr><td>(\w+)</td><td>[^<]*</td><td class=\"n\">([\d,]+)</td>")  # stage, count
    assert funnel.findall(pages[1]) == funnel.findall(pages[0]) and len(funnel.findall(pages[0])) >= 4


def test_the_sample_pipeline_gives_the_same_dataset_on_both_engines(local_sample, sample_root, tmp_path):
    run_sample(str(tmp_path), str(sample_root), ["--direct_num_workers=2"])
    assert_same_dataset(local_sample, tmp_path / "sample")


def test_the_sample_pipeline_on_object_storage(local_sample, sample_root, s3, tmp_path):
    """The dump and the workdir in S3 buckets (a real S3 server on this machine, reached by Beam's S3
    file system): the pipeline file unchanged, the same dataset as the local engine's on local disk."""
    dump, work = s3.bucket("dump") + "/danbooru-sample", s3.bucket("work")
    s3.upload_tree(sample_root, dump)
    run_sample(work, dump, [*s3.beam_options, "--direct_num_workers=2"])
    keys = s3.keys(work + "/sample")
    assert "pipeline.state.json" in keys and "dataset/dataset.json" in keys
    assert not [k for k in keys if ".tmp-" in k or ".pack-beam" in k]  # no temporary is left behind
    assert_same_dataset(local_sample, s3.download_tree(work + "/sample", tmp_path / "sample"))
    run_sample(work, dump, [*s3.beam_options, "--direct_num_workers=2"])  # a rerun: every stage up to date
    state = json.loads((s3.download_tree(work + "/sample", tmp_path / "again") / "pipeline.state.json").read_text())
    assert state == json.loads((tmp_path / "sample" / "pipeline.state.json").read_text())


def test_an_option_beam_does_not_know_is_warned_about_once(capsys):
    from curate.beam.engine import BeamEngine

    engine = BeamEngine("FnApiRunner", ["--no_such_option=1"])
    for _ in range(2):
        engine._run(beam.Create([1]) | beam.Map(lambda x: x))
    assert capsys.readouterr().err.count("Beam knows no option --no_such_option") == 1


def test_dedup_of_a_workdir_on_object_storage_matches_the_local_run(s3, tmp_path):
    """dedup runs its local runner on a mirror of the bucket's workdir: the same table, and its state
    kept in the bucket, so a rerun with nothing new is up to date and more crops are searched alone."""
    from curate.beam.engine import BeamEngine
    from curate.dedup import DedupConfig
    from curate.dedup.runner import run_dedup
    from test_dedup import make_workdir, many

    local = make_workdir(tmp_path / "local", many(9))
    run_dedup(local, workers=1, progress=False)
    work = s3.bucket("work") + "/w"
    s3.upload_tree(make_workdir(tmp_path / "up", many(9)).root, work)
    engine = BeamEngine("FnApiRunner", s3.beam_options)
    stats = engine.dedup(work, DedupConfig(), workers=1, progress=False)
    assert stats["near_duplicate"] == 3 and stats["output"] == work + "/dedup.parquet"
    back = s3.download_tree(work, tmp_path / "back")
    assert (back / "dedup.parquet").read_bytes() == local.dedup_table.read_bytes()
    assert any(k.startswith(".dedup-state/") for k in s3.keys(work))
    assert engine.dedup(work, DedupConfig(), workers=1, progress=False)["up_to_date"]
    s3.upload_tree(make_workdir(tmp_path / "more", {**many(9), **many(3, start=9)}).root, work)
    again = engine.dedup(work, DedupConfig(), workers=1, progress=False)
    assert again["searched_now"] == 3 and again["hashed_now"] == 3
