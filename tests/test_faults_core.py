"""Faults in the shared machinery: stage locks, pool workers outliving a killed run, OSErrors at the CLI."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, group_alive
from curate.core.atomic import write_bytes
from curate.core.errors import EnvironmentFailure, describe_os_error, is_environment_error
from curate.core.lock import LockedError, stage_lock

HOLDER = textwrap.dedent("""
    import os, sys, time
    from curate.core.lock import stage_lock
    from curate.core.pool import ordered_map

    def nap(x):
        time.sleep(x)
        return x

    with stage_lock(sys.argv[1], "the test output"):
        if sys.argv[2] == "fork":      # a child that keeps the lock's fd, as an orphan would
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        print("locked", flush=True)
        if sys.argv[2] == "pool":
            list(ordered_map(nap, [60] * 4, 2))
        time.sleep(60)
""")


def _hold(tmp_path, mode: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / ".lock"), mode], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT, start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    p = _hold(tmp_path, "plain")
    try:
        with pytest.raises(LockedError, match=rf"pid {p.pid}.*the test output"):
            with stage_lock(tmp_path / ".lock", "the test output"):
                pass
    finally:
        p.kill()
        p.wait()
    with stage_lock(tmp_path / ".lock", "the test output"):  # free once it is gone
        pass
    assert not (tmp_path / ".lock").exists()


def test_killing_the_parent_kills_its_pool_workers_and_frees_the_lock(tmp_path):
    p = _hold(tmp_path, "pool")
    time.sleep(1.0)  # let the two workers start and take their tasks
    workers = [int(x) for x in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                                              text=True).stdout.split()]
    assert workers, "the holder started no pool workers"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    while group_alive(p.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not group_alive(p.pid), "pool workers outlived their killed parent"
    with stage_lock(tmp_path / ".lock", "the test output"):
        pass


def test_a_lock_kept_by_an_orphan_of_a_dead_run_is_taken_over(tmp_path):
    p = _hold(tmp_path, "fork")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert group_alive(p.pid), "the forked child should still hold the lock's fd"
    try:
        with stage_lock(tmp_path / ".lock", "the test output"):
            assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    finally:
        os.killpg(p.pid, signal.SIGKILL)


def test_environment_errors_are_told_apart_from_bad_items():
    assert is_environment_error(OSError(errno.ENOSPC, "No space left on device"))
    assert is_environment_error(OSError(errno.EROFS, "Read-only file system"))
    assert not is_environment_error(OSError(errno.ENOENT, "No such file or directory"))
    assert not is_environment_error(ValueError("bad pixels"))
    line = describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/w/crops/a.png"))
    assert line.startswith("/w/crops/a.png: No space left on device; free some space")


def test_an_atomic_write_names_its_target_not_its_temporary(read_only_dir):
    with pytest.raises(OSError) as info:
        write_bytes(read_only_dir / "out.bin", b"x")
    assert info.value.filename == str(read_only_dir / "out.bin")
    assert EnvironmentFailure.exit_code == 1


def test_an_output_that_is_an_input_or_inside_one_is_refused(tmp_path):
    from curate.core.errors import InputError
    from curate.core.paths import refuse_output_among_inputs
    (tmp_path / "m.json").write_text("{}\n")
    (tmp_path / "meta").mkdir()
    (tmp_path / "link.json").symlink_to(tmp_path / "m.json")
    for out, kw in [("m.json", {"inputs": ["m.json"]}), ("link.json", {"inputs": ["m.json"]}),
                    ("meta/f.parquet", {"inputs": ["meta"]}), ("root/work", {"roots": ["root"]})]:
        kw = {k: [tmp_path / p for p in v] for k, v in kw.items()}
        with pytest.raises(InputError, match="choose"):
            refuse_output_among_inputs(tmp_path / out, **kw)
    refuse_output_among_inputs(tmp_path / "work", inputs=[tmp_path / "work" / "filtered.parquet"])


def test_a_read_only_or_full_output_is_one_line_naming_the_path(tmp_path, read_only_dir, tiny_disk):
    from conftest import assert_one_line_error, run_curate
    from curate.testing.metadata import metadata_lines
    meta = tmp_path / "m.json"
    meta.write_text("\n".join(metadata_lines(3000, seed=3)) + "\n")
    r = run_curate("filter", meta, "--out", read_only_dir / "f.parquet", "--workers", "1")
    assert_one_line_error(r, str(read_only_dir), "Read-only file system", code=1)
    disk, _ = tiny_disk
    (disk / "filler").write_bytes(b"\0" * (250 << 10))
    r = run_curate("filter", meta, "--out", disk / "f.parquet", "--workers", "1")
    assert_one_line_error(r, str(disk / "f.parquet"), "No space left on device", "free some space", code=1)
    assert not [p for p in disk.iterdir() if p.name != "filler"], "a failed write left files behind"


def test_the_image_reader_never_blocks_on_a_fifo_and_raises_only_for_the_machine(tmp_path):
    import resource

    from curate.core.image import DecodeFailure, read_bytes
    os.mkfifo(tmp_path / "x.jpg")
    got = read_bytes(tmp_path / "x.jpg")  # a blocking open would hang here forever
    assert isinstance(got, DecodeFailure) and got.reason == "unreadable" and "FIFO" in got.detail
    (tmp_path / "ok.jpg").write_bytes(b"\xff\xd8 not really")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        with contextlib.suppress(OSError):
            while True:  # use up every file descriptor
                held.append(os.open(os.devnull, os.O_RDONLY))
        with pytest.raises(OSError) as info:
            read_bytes(tmp_path / "ok.jpg")
        assert info.value.errno == errno.EMFILE
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
