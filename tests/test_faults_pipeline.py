"""Faults in `curate run` (issue 13): a failing stage is one line naming that stage with its exit code,
and one run at a time per workdir (a second one refuses; a killed one leaves nothing that blocks the next)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, assert_one_line_error, group_alive, run_curate
from curate.filter.metadata import image_path
from curate.testing.danbooru_api import FakeDanbooru
from curate.testing.metadata import metadata_lines


def make_dump(root, n: int) -> None:
    (root / "metadata").mkdir(parents=True)
    with open(root / "metadata" / "2018000000000000", "w") as f:
        for line in metadata_lines(n, seed=3):
            f.write(line + "\n")
            post = json.loads(line)  # the filter checks that each image exists
            image = root / image_path(int(post["id"]), post["file_ext"])
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(b"")


def write_pipeline(path, input_, workdir, body: str = "[filter]\nworkers = 1\nprogress = false\n"):
    path.write_text(f'input = "{input_}"\nworkdir = "{workdir}"\n{body}')
    return path


def state(workdir) -> dict:
    return json.loads((workdir / "pipeline.state.json").read_text())


def test_a_bad_input_is_the_stages_one_line_and_exit_code(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_curate("run", write_pipeline(tmp_path / "a.toml", tmp_path / "empty", tmp_path / "w1"))
    assert_one_line_error(r, "curate filter: error:", "metadata files", code=2)  # an InputError
    assert state(tmp_path / "w1") == {}  # not recorded as finished
    r = run_curate("run", write_pipeline(tmp_path / "b.toml", tmp_path / "nowhere", tmp_path / "w2"))
    assert_one_line_error(r, "curate filter: error:", "--dataset-root", code=2)  # click's usage error


def test_a_pipeline_or_state_file_that_is_not_text_is_one_line(tmp_path):
    (tmp_path / "bin.toml").write_bytes(b'input = "so\xfflo"\nworkdir = "w"\n')
    assert_one_line_error(run_curate("run", tmp_path / "bin.toml"), "not valid TOML", code=2)
    make_dump(tmp_path / "dump", 20)
    p = write_pipeline(tmp_path / "p.toml", tmp_path / "dump", tmp_path / "work")
    (tmp_path / "work").mkdir()
    for junk in (b"\xff\xfe garbage", b"[1, 2]", b'{"filter": 3}'):
        (tmp_path / "work" / "pipeline.state.json").write_bytes(junk)
        r = run_curate("run", p)
        assert_one_line_error(r, "curate run: error:", "pipeline.state.json is not a pipeline state file", code=2)


def test_a_full_disk_in_a_stage_names_the_stage_and_a_rerun_finishes(tmp_path, tiny_disk):
    make_dump(tmp_path / "dump", 600)
    disk, grow = tiny_disk
    # Room for the run's lock and state files, not for the filter's table.
    (disk / "reserve").write_bytes(b"\0" * (16 << 10))
    with open(disk / "filler", "ab", buffering=0) as f:
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
    (disk / "reserve").unlink()
    p = write_pipeline(tmp_path / "p.toml", tmp_path / "dump", disk / "work")
    r = run_curate("run", p)
    assert_one_line_error(r, "curate filter: error:", str(disk / "work"), "No space left on device", code=1)
    assert state(disk / "work") == {}
    grow(4096)
    r = run_curate("run", p)
    assert r.returncode == 0, r.stderr
    assert "filter" in state(disk / "work") and (disk / "work" / "filtered.parquet").exists()
    assert not (disk / "work" / ".run.lock").exists()


def test_a_read_only_workdir_or_stage_output_is_one_line(tmp_path, read_only_dir):
    make_dump(tmp_path / "dump", 50)
    r = run_curate("run", write_pipeline(tmp_path / "p.toml", tmp_path / "dump", read_only_dir / "work"))
    assert_one_line_error(r, "curate run: error:", str(read_only_dir / "work"), "Read-only file system", code=1)
    fake = FakeDanbooru()
    server, base = fake.serve()
    try:  # the fetch stage writes its dump into the pipeline's input folder: here a read-only one
        p = write_pipeline(tmp_path / "f.toml", read_only_dir / "api", tmp_path / "work",
                           f'[fetch]\nlimit = 3\nrate = 1000\nbase_url = "{base}"\nprogress = false\n')
        r = run_curate("run", p)
    finally:
        server.shutdown()
    assert_one_line_error(r, "curate fetch: error:", str(read_only_dir / "api"), "Read-only file system", code=1)
    assert state(tmp_path / "work") == {}
    assert not any(read_only_dir.iterdir())


class Gate(list):
    """FakeDanbooru's request log, holding each request until opened: a run that stays mid-stage."""

    def __init__(self):
        super().__init__()
        self.arrived, self.opened = threading.Event(), threading.Event()

    def append(self, path):
        super().append(path)
        self.arrived.set()
        self.opened.wait(60)


@pytest.fixture
def held_fetch(tmp_path):
    """(pipeline, gate): a fetch+filter pipeline whose fetch waits at its first request until gate opens."""
    fake = FakeDanbooru()
    fake.requests = gate = Gate()
    server, base = fake.serve()
    p = write_pipeline(tmp_path / "p.toml", tmp_path / "api", tmp_path / "work",
                       f'[fetch]\nlimit = 5\nper_page = 3\nrate = 1000\nbase_url = "{base}"\nprogress = false\n'
                       '[filter]\nworkers = 1\nprogress = false\n')
    yield p, gate
    gate.opened.set()
    server.shutdown()


def start_run(pipeline) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curate", "run", str(pipeline)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_second_run_on_the_same_workdir_is_refused_while_the_first_lives(tmp_path, held_fetch):
    p, gate = held_fetch
    first = start_run(p)
    try:
        assert gate.arrived.wait(60), first.stderr.read()
        r = run_curate("run", p)
        assert_one_line_error(r, "curate run: error:", f"another run (pid {first.pid})", str(tmp_path / "work"),
                              code=1)
        gate.opened.set()
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert set(state(tmp_path / "work")) == {"fetch", "filter"}
    assert "nothing to do" in run_curate("run", p).stdout


def test_a_killed_run_leaves_no_process_and_the_rerun_finishes(tmp_path, held_fetch):
    p, gate = held_fetch
    first = start_run(p)
    try:
        assert gate.arrived.wait(60), first.stderr.read()
        os.kill(first.pid, signal.SIGKILL)  # the run itself, mid-stage, as `kill -9 PID` does
        first.wait(timeout=30)
    finally:
        first.kill()
    assert not group_alive(first.pid), "a process of the killed run outlived it"
    assert state(tmp_path / "work") == {}
    gate.opened.set()
    r = run_curate("run", p)
    assert r.returncode == 0, r.stderr
    assert set(state(tmp_path / "work")) == {"fetch", "filter"}
    assert not (tmp_path / "work" / ".run.lock").exists()
