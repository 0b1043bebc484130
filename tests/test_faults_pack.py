"""Faults in pack, inspect and report (issue 13): hostile crops and tables, outputs that are inputs,
read-only and full outputs, a second run, and `kill -9` of a pack with pool workers.

Each case runs the CLI and checks the exit code, the one-line message, the reason codes in
dataset.json, that the inputs are untouched and that a rerun completes. Kills, locks, disks and
click's own usage errors go through a fresh process as a user runs it (conftest.run_curate); the
rest through `in_process`, the same command and error handler without the interpreter start-up.
"""

from __future__ import annotations

import importlib.util
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from click.testing import CliRunner

from conftest import ROOT, assert_one_line_error, group_alive, run_curate, stop_when
from curate.cli import cli
from curate.core.errors import InputError
from curate.core.workdir import Workdir
from curate.dataset import schema as R
from curate.dataset.pack import PackConfig, PackError, run_pack
from curate.testing.review import make_review_workdir
from test_pack import crop_image, dir_bytes, make_workdir


def in_process(*args) -> subprocess.CompletedProcess:
    """`curate ARGS` through click's test runner: the group's one-line handler, no new interpreter."""
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # what a user would see as a traceback
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def _manifest(out: Path) -> dict:
    return json.loads((out / R.MANIFEST).read_text())


def _first_crop(wd: Workdir) -> Path:
    """The crop first in crops-table order (the one a size probe would look at first)."""
    return wd.root / pq.read_table(wd.crops_table, columns=["file"]).column("file")[0].as_py()


# ---- hostile crops -------------------------------------------------------------------------------

def test_a_zero_byte_or_truncated_crop_is_skipped_with_the_readers_code(tmp_path):
    # issue 13 #5: the empty crop is first in table order, where the size used to be read from
    wd = make_workdir(tmp_path / "wd", 6)
    _first_crop(wd).write_bytes(b"")
    truncated = wd.root / Workdir.crop_file("103_0")
    truncated.write_bytes(truncated.read_bytes()[:-40])
    r = in_process("pack", wd.root, "--out", tmp_path / "ds", "--no-progress", "-j", "2")
    assert r.returncode == 0 and "skipped " in r.stdout, r.stderr
    m = _manifest(tmp_path / "ds")
    assert m["source"]["skipped"] == {"empty_file": 1, "truncated": 1} and m["count"] == 4
    assert {"100_0", "103_0"}.isdisjoint(m["record_crop_ids"])


@pytest.mark.parametrize("size_from", ["majority", "crops.stats.json", "--size"])
def test_one_wrong_size_crop_first_in_table_order_is_skipped_and_the_rest_pack(tmp_path, size_from):
    # issue 13 #6: a 100x100 crop first in table order used to set the level sizes and abort the pack
    wd = make_workdir(tmp_path / "wd", 7)
    Image.fromarray(crop_image(0, 100, 100)).save(_first_crop(wd))
    config = PackConfig()
    if size_from == "crops.stats.json":
        # what `curate crop` records; here it disagrees with most crops on disk, and it wins
        for i in range(1, 4):
            Image.fromarray(crop_image(i, 16, 8)).save(wd.root / Workdir.crop_file(f"{100 + i}_0"))
        (wd.root / "crops.stats.json").write_text(json.dumps({"config": {"out_height": 32, "out_width": 16}}))
    elif size_from == "--size":
        config = PackConfig(size=(32, 16))
    stats = run_pack(wd.root, tmp_path / "ds", config, workers=2, progress=False)
    skipped = {"wrong_size": 4} if size_from == "crops.stats.json" else {"wrong_size": 1}
    assert stats["source"]["skipped"] == skipped and stats["resolution"] == [32, 16]
    assert stats["count"] == 7 - sum(skipped.values())
    detail = next(s["detail"] for s in stats["source"]["skipped_crops"] if s["crop_id"] == "100_0")
    assert "100x100, expected 32x16" in detail


def test_an_odd_size_everywhere_is_one_line_not_a_traceback(tmp_path):
    wd = make_workdir(tmp_path / "wd", 3, h=24, w=12)
    r = in_process("pack", wd.root, "--out", tmp_path / "ds", "--no-progress")
    assert_one_line_error(r, "24x12 is not a power of two", "--size", code=2)


def test_posts_that_are_not_a_filtered_table_are_one_line_naming_the_file(tmp_path):
    # issue 13 #13: a text file, a missing file and a parquet without the columns gave ArrowInvalid
    wd = make_workdir(tmp_path / "wd", 3)
    text = tmp_path / "posts.txt"
    text.write_text("id,tags\n1,solo\n")
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"id": pa.array([100], pa.int64()), "rating": ["s"]}), other)
    cases = [(text, "cannot be read as a parquet table", run_curate),
             (tmp_path / "missing.parquet", "does not exist", run_curate),  # click's check: its own line
             (other, "has no column tags_general", in_process)]
    for posts, words, run in cases:
        r = run("pack", wd.root, "--out", tmp_path / "ds", "--labels", "tags:solo", "--posts", posts,
                       "--no-progress")
        assert_one_line_error(r, posts.name, words, code=2)
    assert not (tmp_path / "ds").exists()
    # the same through the API (the pipeline calls it): one PackError naming the file
    with pytest.raises(PackError, match="other.parquet has no column"):
        from curate.dataset.pack import LabelSpec
        run_pack(wd.root, tmp_path / "ds", PackConfig(labels=LabelSpec.parse("tags:solo"), posts=str(other)),
                 workers=1, progress=False)


def test_a_workdir_table_that_is_not_parquet_is_one_line_naming_it(tmp_path):
    wd = make_workdir(tmp_path / "wd", 3)
    wd.scores_table.write_text("not a table\n")
    r = in_process("pack", wd.root, "--out", tmp_path / "ds", "--no-progress")
    assert_one_line_error(r, "scores.parquet cannot be read", code=2)


# ---- outputs that are inputs -----------------------------------------------------------------------

def test_an_output_that_is_the_workdir_or_inside_its_crops_is_refused(tmp_path):
    # issue 13 #4
    wd = make_workdir(tmp_path / "wd", 3)
    before = dir_bytes(wd.root)
    r = in_process("pack", wd.root, "--out", wd.root, "--no-progress")
    assert_one_line_error(r, "is the workdir itself", code=2)
    for out in (wd.crops_dir, wd.crops_dir / "ds"):
        with pytest.raises(InputError, match="(is also an input|inside the input folder) .*/crops"):
            run_pack(wd.root, out, PackConfig(), workers=1, progress=False)
    assert dir_bytes(wd.root) == before and not (wd.crops_dir / "ds").exists()
    assert run_pack(wd.root, wd.root / "dataset", PackConfig(), workers=1, progress=False)["count"] == 3  # the pipeline's


# ---- read-only and full outputs --------------------------------------------------------------------

def test_a_read_only_output_is_one_line_naming_the_users_folder(tmp_path, read_only_dir):
    # issue 13 #9: an existing read-only folder (pack would make .pack-staging in it) and one below it
    wd = make_workdir(tmp_path / "wd", 3)
    for out, run in ((read_only_dir, run_curate), (read_only_dir / "ds", in_process)):
        r = run("pack", wd.root, "--out", out, "--no-progress", "-j", "1")
        line = assert_one_line_error(r, f"{out}: Read-only file system", code=1)
        assert ".pack-staging" not in line and "lock" not in line


def test_a_full_disk_stops_pack_with_one_line_and_a_rerun_resumes_to_the_same_bytes(tmp_path, tiny_disk):
    # issue 13 #9: 40 crops of 64x32 make ~330 KB of records; the disk holds 256 KiB
    disk, grow = tiny_disk
    wd = make_workdir(tmp_path / "wd", 40, h=64, w=32)
    run_pack(wd.root, tmp_path / "clean", PackConfig(), workers=1, progress=False)
    out = disk / "ds"
    args = ("pack", wd.root, "--out", out, "--no-progress", "-j", "1", "--checkpoint-every", "4")
    r = run_curate(*args)
    line = assert_one_line_error(r, f"{out}: No space left on device", "free some space", code=1)
    assert ".part" not in line
    left = [p.name for p in out.iterdir()]
    assert left == [".pack-staging"], left  # no level file, no manifest, no temporary: only the resume state
    assert json.loads((out / ".pack-staging" / "progress.json").read_text())["done"] > 0
    grow(2048)
    r = run_curate(*args)
    assert r.returncode == 0 and "resumed at crop" in r.stdout, (r.stdout, r.stderr)
    assert dir_bytes(out) == dir_bytes(tmp_path / "clean") and not (out / ".pack-staging").exists()
    # a no-op rerun rewrites nothing
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert run_pack(wd.root, out, PackConfig(), workers=1, progress=False)["up_to_date"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


# ---- a second run, and kill -9 -------------------------------------------------------------------

def test_a_second_pack_is_refused_and_a_killed_pack_leaves_no_worker_and_resumes(tmp_path):
    # issue 13 #10 and #11: two workers; the run is held (SIGSTOP, its whole group) once it has
    # checkpointed; 800 crops keep it busy far longer than the 2 ms between looks
    n = 800
    wd = make_workdir(tmp_path / "wd", n)
    run_pack(wd.root, tmp_path / "clean", PackConfig(), workers=1, progress=False)
    out = tmp_path / "ds"
    args = ["pack", str(wd.root), "--out", str(out), "-j", "2", "--checkpoint-every", "5", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "curate", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    progress = out / ".pack-staging" / "progress.json"
    try:
        stop_when(proc, lambda: progress.exists())
        second = run_curate(*args, timeout=60)
        assert_one_line_error(second, f"another run (pid {proc.pid})", str(out), code=1)

        os.kill(proc.pid, signal.SIGKILL)  # its workers are stopped: they must still die with it
        proc.wait()
        with contextlib.suppress(ProcessLookupError):  # (none left: fine)
            os.killpg(proc.pid, signal.SIGCONT)  # a helper without a death signal (multiprocessing's resource tracker) exits once it runs
        deadline = time.monotonic() + 10
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not group_alive(proc.pid), "pack's pool workers outlived the killed pack"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    done = json.loads(progress.read_text())["done"]
    assert 0 < done < n
    r = run_curate(*args)
    assert r.returncode == 0 and f"resumed at crop {done:,}" in r.stdout, (r.stdout, r.stderr)
    assert dir_bytes(out) == dir_bytes(tmp_path / "clean") and not (out / ".pack-staging").exists()


# ---- inspect ----------------------------------------------------------------------------------------

def test_inspect_names_the_folder_once(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_curate("inspect", "empty", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert "inspect: empty: missing file: no <name>-r<NN>.tfrecords files in empty" in lines, lines
    assert "empty/empty" not in r.stderr


def test_inspect_refuses_a_grid_over_a_dataset_file_and_names_a_read_only_grid(tmp_path, read_only_dir):
    if importlib.util.find_spec("tensorflow") is None:  # (found, not imported: these cases never read a record)
        pytest.skip("curate inspect refuses to start without TensorFlow")
    wd = make_workdir(tmp_path / "wd", 3)
    ds = tmp_path / "ds"
    run_pack(wd.root, ds, PackConfig(), workers=1, progress=False)
    before = dir_bytes(ds)
    for victim in (ds / R.MANIFEST, ds / "portraits-r03.tfrecords"):
        r = in_process("inspect", ds, "--grid", victim)
        assert_one_line_error(r, "--grid", victim.name, "is also an input", code=2)
    assert dir_bytes(ds) == before
    for grid, run in ((read_only_dir / "g.png", run_curate), (read_only_dir / "new" / "g.png", in_process)):
        r = run("inspect", ds, "-n", "2", "--grid", grid)  # checked before the slow read
        assert_one_line_error(r, f"{grid}: Read-only file system", code=1)


def _fill(disk: Path) -> None:
    """Use up every byte of the small disk."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * (64 << 10))
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- report -----------------------------------------------------------------------------------------

def test_report_refuses_an_input_as_out_and_names_a_read_only_or_full_out(tmp_path, read_only_dir, tiny_disk):
    wd = make_review_workdir(tmp_path / "w", n=4)
    before = dir_bytes(wd.root)
    for victim in (wd.crops_table, wd.scores_table):
        r = in_process("report", wd.root, "--out", victim)
        assert_one_line_error(r, "--out", victim.name, "is also an input", code=2)
    assert dir_bytes(wd.root) == before
    empty = tmp_path / "nothing-ran"  # a page without plots: what matters here is where it goes
    empty.mkdir()
    r = run_curate("report", empty, "--out", read_only_dir / "r.html")
    assert_one_line_error(r, f"{read_only_dir / 'r.html'}: Read-only file system", code=1)
    disk, _ = tiny_disk
    _fill(disk)
    r = run_curate("report", empty, "--out", disk / "r.html")
    assert_one_line_error(r, f"{disk / 'r.html'}: No space left on device", code=1)
    assert [p.name for p in disk.iterdir()] == ["filler"], "a failed report left a file behind"


def test_report_names_a_workdir_file_it_cannot_read(tmp_path):
    for name, body, says in [("crops.parquet", "junk\n", "cannot be read as a table"),
                             ("scores.stats.json", "{bad", "is not a stats file"),
                             ("review.sqlite", "junk" * 40, "is not a review decision log")]:
        w = tmp_path / name.replace(".", "-")
        w.mkdir()
        (w / name).write_text(body)
        r = in_process("report", w)
        assert_one_line_error(r, str(w / name), says, code=2)
        assert not (w / "report.html").exists()


def test_size_that_confirms_the_crop_size_is_the_same_dataset(tmp_path):
    wd = make_workdir(tmp_path / "wd", 3)
    first = run_pack(wd.root, tmp_path / "ds", PackConfig(), workers=1, progress=False)
    again = run_pack(wd.root, tmp_path / "ds", PackConfig(size=(32, 16)), workers=1, progress=False)
    assert again["up_to_date"] and again["fingerprint"] == first["fingerprint"]
    with pytest.raises(PackError, match="different dataset"):  # another size is another dataset
        run_pack(wd.root, tmp_path / "ds", PackConfig(size=(16, 8)), workers=1, progress=False)


def test_pack_reads_a_workdir_with_review_decisions_on_read_only_media(tmp_path, tiny_disk):
    # the review log in WAL mode cannot be opened plainly where SQLite cannot create its -shm file
    import shutil
    import sqlite3

    from curate.review.session import DecisionStore

    disk, grow = tiny_disk
    grow(4096)
    src = make_workdir(tmp_path / "wd", 6)
    shutil.copytree(src.root, disk / "wd")
    wd = Workdir(disk / "wd")
    rejected = pq.read_table(wd.crops_table, columns=["crop_id"]).column("crop_id")[2].as_py()
    store = DecisionStore(wd.review_db)
    store.append([(rejected, "rejected")], origin="grid")
    store.close()
    con = sqlite3.connect(wd.review_db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # what a server that shut down cleanly leaves
    con.close()
    for extra in ("-wal", "-shm"):
        wd.review_db.with_name(wd.review_db.name + extra).unlink(missing_ok=True)
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode == 0
    stats = run_pack(wd.root, tmp_path / "ds", PackConfig(), workers=1, progress=False)
    assert stats["count"] == 5 and rejected not in stats["record_crop_ids"]
