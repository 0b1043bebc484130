"""curate run: plans, fingerprints, reruns, overrides, against real stage commands."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
from curate.testing.danbooru_api import FakeDanbooru

from curate.testing.metadata import metadata_lines
from curate.filter.metadata import image_path
from curate.core.settings import parse_value
from curate.pipeline.runner import PipelineError, load, plan, resolve, run


@pytest.fixture
def dump(tmp_path):
    (tmp_path / "dump" / "metadata").mkdir(parents=True)
    with open(tmp_path / "dump" / "metadata" / "2018000000000000", "w") as f:
        for line in metadata_lines(400, seed=3):
            f.write(line + "\n")
            post = json.loads(line)  # a dump has the images too (the filter only checks they exist)
            image = tmp_path / "dump" / image_path(int(post["id"]), post["file_ext"])
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(b"")
    return tmp_path / "dump"


def write_pipeline(tmp_path, body: str):
    path = tmp_path / "p.toml"
    path.write_text(body)
    return path


def quiet(lines):
    return lambda text: lines.append(text)


def test_unchanged_rerun_does_nothing_and_a_change_reruns(tmp_path, dump, monkeypatch):
    monkeypatch.setenv("DUMP", str(dump))
    path = write_pipeline(tmp_path, f'input = "${{DUMP}}"\nworkdir = "{tmp_path}/work"\n[filter]\nmin_favs = 3\nprogress = false\n')
    p = load(path)
    assert [s["action"] for s in plan(p)] == ["run"]
    log: list[str] = []
    run(p, echo=quiet(log))
    out = tmp_path / "work" / "filtered.parquet"
    first = pq.read_table(out).num_rows
    mtime = out.stat().st_mtime_ns
    log.clear()
    run(load(path), echo=quiet(log))
    assert log[-2] == "nothing to do: every stage is up to date" and out.stat().st_mtime_ns == mtime
    assert log[-1] == f"report: {tmp_path / 'work' / 'report.html'}"  # the first run wrote it
    # an override changes the fingerprint: the stage reruns with the new option
    p2 = load(path, ["filter.min_favs=50"])
    assert [(s["action"], s["why"]) for s in plan(p2)] == [("run", "inputs or options changed")]
    run(p2, echo=quiet(log))
    assert pq.read_table(out).num_rows < first
    assert json.loads((tmp_path / "work" / "filtered.stats.json").read_text())["rules"]["min_favs"] == 50
    # an input that changes reruns it too; a deleted output as well
    run(load(path), echo=quiet(log))
    out.unlink()
    assert plan(load(path))[0]["why"] == "outputs missing"


def test_fetch_then_filter_on_a_local_api(tmp_path):
    fake = FakeDanbooru()
    server, base = fake.serve()
    try:
        path = write_pipeline(tmp_path, f'''
input = "{tmp_path}/api"
workdir = "{tmp_path}/work"
[fetch]
limit = 5
per_page = 3
rate = 1000
base_url = "{base}"
progress = false
[filter]
min_height = 512
progress = false
''')
        log: list[str] = []
        run(load(path), echo=quiet(log))
        assert (tmp_path / "api" / "fetch.stats.json").exists()
        ids = pq.read_table(tmp_path / "work" / "filtered.parquet").column("id").to_pylist()
        assert ids and all((tmp_path / "api" / "original" / f"{i % 1000:04d}" / f"{i}.png").exists() for i in ids)
        # a changed fetch option reruns fetch and, because its fingerprint feeds filter's, filter too
        steps = plan(load(path, ["fetch.rate=500"]))
        assert [(s["stage"], s["action"]) for s in steps] == [("fetch", "run"), ("filter", "run")]
        assert steps[1]["why"] == "an earlier stage reran"
        # --from and --until select stages
        assert [s["action"] for s in plan(load(path), start="filter")] == ["skip", "run"]
        assert [s["action"] for s in plan(load(path), stop="fetch")] == ["skip", "skip"]
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "body, overrides, says",
    [
        ('workdir = "w"\n[filter]\n', [], "needs a top-level input"),
        ('input = "i"\nworkdir = "w"\n[filter]\nmin_fav = 3\n', [], "has no option 'min_fav'"),
        ('input = "i"\nworkdir = "w"\n[filtre]\n', [], "unknown stage [filtre]"),
        ('input = "${NOT_SET_ANYWHERE}"\nworkdir = "w"\n', [], "needs ${NOT_SET_ANYWHERE}"),
        ('input = "i"\nworkdir = "w"\n[filter]\n', ["filter.min_favs"], "write stage.option=value"),
        ('input = "i"\nworkdir = "w"\n = broken', [], "not valid TOML"),
    ],
)
def test_bad_pipelines_are_one_clear_error(tmp_path, body, overrides, says):
    os.environ.pop("NOT_SET_ANYWHERE", None)
    with pytest.raises(PipelineError, match=None) as e:
        plan(load(write_pipeline(tmp_path, body), overrides))
    assert says in str(e.value)


def test_resolve_and_values(tmp_path):
    with pytest.raises(PipelineError, match="no pipeline 'nope'"):
        resolve("nope", search=tmp_path)
    assert parse_value("10") == 10 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value('"a,b"') == "a,b" and parse_value("hat,bow") == "hat,bow"
