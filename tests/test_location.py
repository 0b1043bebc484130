"""curate.core.location: local paths stay Paths; URLs become RemotePaths that read and write a real
S3 server (moto's, on this machine) through Beam's FileSystems; the local engine refuses URLs in one line."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from curate.core.location import RemotePath, as_location, is_url, local_copy, readable
from tests.conftest import assert_one_line_error, run_curate


def test_a_local_path_stays_a_path_and_a_url_keeps_its_double_slash():
    assert as_location("work/x") == Path("work/x") and not is_url("work/x")
    where = as_location("s3://bucket/work/")
    assert isinstance(where, RemotePath) and str(where) == "s3://bucket/work"
    assert str(where / "crops" / "ab.png") == "s3://bucket/work/crops/ab.png"
    assert (where / "a.parquet").name == "a.parquet" and (where / "a.parquet").suffix == ".parquet"
    assert (where / "a.parquet").with_name("a.stats.json") == where / "a.stats.json"
    assert where.parent == RemotePath("s3://bucket") and RemotePath("s3://bucket").parent == RemotePath("s3://bucket")
    assert (where / "x").is_relative_to(where) and not RemotePath("s3://bucket/workshop").is_relative_to(where)
    assert pickle.loads(pickle.dumps(where / "x")) == where / "x"


def test_a_url_without_a_bucket_is_refused():
    from curate.core.errors import InputError

    with pytest.raises(InputError, match="needs a bucket"):
        RemotePath("s3://")


@pytest.fixture
def bucket(s3):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(s3.beam_options))
    return RemotePath(s3.bucket("location-test"))


def test_objects_are_written_whole_listed_and_read_back(bucket, s3):
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = bucket / "work"
    assert not work.exists() and not (work / "a.json").is_file()
    (work / "a.json").write_text('{"n": 1}')
    (work / "crops" / "ab" / "1_0.png").write_bytes(b"png")
    assert s3.keys(str(work)) == ["a.json", "crops/ab/1_0.png"]  # no temporary object is left behind
    assert work.is_dir() and work.exists() and (work / "a.json").is_file() and not (work / "a.json").is_dir()
    assert [p.name for p in work.iterdir()] == ["a.json", "crops"]
    assert [str(p) for p in work.rglob("*.png")] == [f"{work}/crops/ab/1_0.png"]
    assert (work / "a.json").read_text() == '{"n": 1}' and (work / "a.json").stat().st_size == 8
    with pytest.raises(FileNotFoundError):
        (work / "nope.json").read_bytes()
    table = pa.table({"x": [1, 2, 3]})
    with (work / "t.parquet").open("wb") as f:
        pq.write_table(table, f)
    assert pq.read_table(readable(work / "t.parquet")).equals(table)
    with local_copy(work / "a.json") as copy:
        assert copy.read_text() == '{"n": 1}'
    assert not copy.exists()
    (work / "a.json").unlink()
    assert not (work / "a.json").exists()


def test_the_local_engine_refuses_a_url_in_one_line(tmp_path):
    r = run_curate("crop", "s3://bucket/filtered.parquet", "--dataset-root", "s3://bucket/dump", "--out", tmp_path)
    assert_one_line_error(r, "s3://bucket/", "object storage", "--engine beam", code=2)
    toml = tmp_path / "p.toml"
    toml.write_text('input = "s3://bucket/dump"\nworkdir = "s3://bucket/work"\n[filter]\nmin_height = 512\n')
    for dry in ([], ["--dry-run"]):
        assert_one_line_error(run_curate("run", toml, *dry), "s3://bucket/dump", "object storage", "--engine beam")


def test_every_call_on_a_bucket_shares_one_boto3_client_and_reads_stay_apart(bucket, s3, monkeypatch):
    """Beam makes an S3 client per call; curate.beam.s3clients keeps one per option set, which must not
    mix up two downloads in flight at once (Beam's wrapper keeps per-download state of its own)."""
    import boto3.session
    from apache_beam.io.filesystems import FileSystems

    from curate.beam import s3clients

    made = []
    real_client = boto3.session.Session.client
    monkeypatch.setattr(boto3.session.Session, "client", lambda self, *a, **k: made.append(k) or real_client(self, *a, **k))
    work = bucket / "shared"
    (work / "a.bin").write_bytes(b"a" * 300_000)
    (work / "b.bin").write_bytes(b"b" * 300_000)
    for _ in range(5):
        assert (work / "a.bin").exists() and [p.name for p in work.iterdir()] == ["a.bin", "b.bin"]
    with FileSystems.open(str(work / "a.bin")) as fa, FileSystems.open(str(work / "b.bin")) as fb:
        parts = [(fa.read(1000), fb.read(1000)) for _ in range(3)]
        assert all(a == b"a" * 1000 and b == b"b" * 1000 for a, b in parts)
        assert fa.read() == b"a" * 297_000 and fb.read() == b"b" * 297_000
    assert s3clients.install() and len(made) <= 1  # 20-odd calls; one client at most (none if cached before)
