"""Faults in score (issue 13): a second run into one workdir, `kill -9`, a no-op rerun, and a
read-only or full workdir. Each through the CLI as a user runs it, where the process matters.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import ROOT, assert_one_line_error, group_alive, run_curate, stop_when
from curate.core.workdir import CROPS_SCHEMA, Workdir
from curate.score.runner import run_score, stats_path, summary_line
from curate.score.scorer import ScoreRules
from curate.testing.images import textured

HEURISTIC = ("--scorer", "heuristic", "--no-progress")


def make_workdir(root: Path, n: int = 8, crops_elsewhere: Path | None = None) -> Workdir:
    """A workdir of n small drawn crops; with `crops_elsewhere` its crops/ is a link there (to keep a tiny disk free)."""
    wd = Workdir(root)
    root.mkdir(parents=True)
    if crops_elsewhere is not None:
        crops_elsewhere.mkdir(parents=True)
        wd.crops_dir.symlink_to(crops_elsewhere)
    rows = []
    for i in range(n):
        crop_id = f"{100 + i}_0"
        rel = Workdir.crop_file(crop_id)
        (wd.root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(wd.root / rel), textured(i, 64, 32))
        rows.append({"crop_id": crop_id, "post_id": 100 + i, "source": f"original/0100/{100 + i}.jpg",
                     "face_index": 0, "face_x": 1, "face_y": 1, "face_w": 10, "face_h": 10, "crop_x": 0, "crop_y": 0,
                     "crop_w": 32, "crop_h": 64, "scale": 1.0, "confidence": float(i), "source_width": 64,
                     "source_height": 64, "file": rel})
    pq.write_table(pa.Table.from_pylist(rows, schema=CROPS_SCHEMA), wd.crops_table)
    return wd


def _clean_scores(tmp_path: Path, n: int = 8) -> pa.Table:
    wd = make_workdir(tmp_path / "clean", n)
    run_score(wd, scorer="heuristic", progress=False)
    return pq.read_table(wd.scores_table)


def _temporaries(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name]


def test_a_second_score_is_refused_and_a_killed_one_leaves_nothing_running_and_reruns(tmp_path):
    # issue 13 #11 (and #10 for score): the first run is held (SIGSTOP) once it has written its first
    # part; 1,500 crops keep it busy far longer than the 2 ms between looks
    n = 1500
    wd = make_workdir(tmp_path / "w", n)
    parts = wd.root / ".score-parts"
    proc = subprocess.Popen([sys.executable, "-m", "curate", "score", str(wd.root), *HEURISTIC], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        stop_when(proc, lambda: any(parts.glob("*/part-*.parquet")))
        second = run_curate("score", wd.root, *HEURISTIC, timeout=60)
        assert_one_line_error(second, f"another run (pid {proc.pid})", str(wd.root), code=1)
        assert not wd.scores_table.exists()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with contextlib.suppress(ProcessLookupError):  # (none left: fine)
            os.killpg(proc.pid, signal.SIGCONT)  # anything else held with it may now run to its end
        deadline = time.monotonic() + 10
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not group_alive(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    r = run_curate("score", wd.root, *HEURISTIC)
    assert r.returncode == 0, r.stderr
    stats = json.loads(stats_path(wd).read_text())
    assert stats["chunks_reused"] >= 1, "the rerun redid the part the killed run had finished"
    assert pq.read_table(wd.scores_table).equals(_clean_scores(tmp_path, n))


def test_a_no_op_rerun_rewrites_neither_the_table_nor_the_stats(tmp_path):
    wd = make_workdir(tmp_path / "w")
    run_score(wd, scorer="heuristic", progress=False)
    files = (wd.scores_table, stats_path(wd))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    again = run_score(wd, scorer="heuristic", progress=False)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
    assert again["up_to_date"] and "already up to date" in summary_line(again)
    # a changed threshold re-decides: both are written anew
    changed = run_score(wd, ScoreRules(min_sharpness=1e9), scorer="heuristic", progress=False)
    assert not changed.get("up_to_date") and changed["kept"] == 0 and changed["rejected"]["blurry"] > 0
    assert {p: p.stat().st_mtime_ns for p in files} != {p: m for p, (m, _) in before.items()}


def test_a_read_only_workdir_is_one_line_naming_it(tmp_path, tiny_disk):
    disk, _ = tiny_disk
    wd = make_workdir(disk / "w")
    assert subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode == 0
    try:
        r = run_curate("score", wd.root, *HEURISTIC)
        line = assert_one_line_error(r, f"{wd.root}: Read-only file system", code=1)
        assert ".score" not in line
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], capture_output=True)


def test_a_full_workdir_is_one_line_leaves_nothing_half_written_and_the_rerun_completes(tmp_path, tiny_disk):
    # issue 13 #9: one page free (the lock file takes it), so writing the scores fails
    disk, grow = tiny_disk
    wd = make_workdir(disk / "w", crops_elsewhere=tmp_path / "crops")
    spare = disk / "spare"
    spare.write_bytes(b"\0" * 4096)
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    spare.unlink()
    r = run_curate("score", wd.root, *HEURISTIC)
    line = assert_one_line_error(r, f"{wd.root}: No space left on device", "free some space", code=1)
    assert ".score" not in line
    assert not wd.scores_table.exists() and not stats_path(wd).exists() and not _temporaries(wd.root)
    grow(2048)
    r = run_curate("score", wd.root, *HEURISTIC)
    assert r.returncode == 0, r.stderr
    assert pq.read_table(wd.scores_table).equals(_clean_scores(tmp_path))
