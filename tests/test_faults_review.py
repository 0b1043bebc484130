"""Faults in `curate review` (issue 13): hostile request bodies against the real server, a full or
read-only disk under the decision log and under the outputs, and outputs that are inputs."""

from __future__ import annotations

import csv
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.parse

import pytest

from conftest import ROOT, assert_one_line_error, run_curate
from curate.core.web import MAX_DEPTH, nesting_depth
from curate.review.session import ReviewSession
from curate.testing.review import make_review_workdir
from curate.core.workdir import Workdir
from test_review import start_server


def fill(folder) -> None:
    """Fill the file system under `folder` to the last byte."""
    with open(folder / "filler", "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def decisions(wd: Workdir) -> list[tuple]:
    con = sqlite3.connect(wd.review_db)
    try:
        return con.execute("SELECT crop_id, status, origin FROM decisions ORDER BY seq").fetchall()
    finally:
        con.close()


def curate_here(capsys, *args) -> subprocess.CompletedProcess:
    """`curate ARGS` in this process (what the console entry point prints and exits with): faster
    than a fresh interpreter, for the cases where how the process starts does not matter."""
    from curate.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, e.value.code, out, err)


def files_under(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def read_only_view():
    """make(folder): bind-mount an already filled folder read-only onto itself (needs root and mount(8))."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only test bind-mounts a folder read-only: needs root and mount(8)")
    mounted = []

    def make(folder):
        ok = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
        if ok:
            mounted.append(folder)
            ok = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode == 0
        if not ok:
            pytest.skip("a read-only bind mount was refused here (no CAP_SYS_ADMIN)")
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


class Server:
    """A real `curate review grid` process, spoken to over HTTP with any bytes as the body."""

    def __init__(self, wd: Workdir):
        self.proc, url = start_server(wd)
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        con = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            con.request(method, path, body=body, headers=headers)
            r = con.getresponse()
            return r.status, r.read()
        finally:
            con.close()

    def post(self, path: str, obj) -> tuple[int, dict]:
        status, data = self.request("POST", path, json.dumps(obj).encode())
        return status, json.loads(data)

    def stop(self) -> str:
        """Stop it; its stderr."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return err


def test_nesting_depth_skips_strings_and_counts_every_bracket_outside():
    assert nesting_depth(b"") == 0 and nesting_depth(b"{}") == 1
    assert nesting_depth(b'{"crop_ids": ["a[[[{{", "b\\"]]]["], "status": "x"}') == 2
    assert nesting_depth(b'["\\\\"]]]') == 1  # an escaped backslash ends the string
    assert nesting_depth(b"[" * 100_000) == 100_000
    assert nesting_depth(b'["' + b'\\"[' * 50_000) == 1  # an unterminated string: linear, no blow-up
    assert nesting_depth(b'[{"a": [[]]}]') == 4


HOSTILE = [  # (path, body, status, what the error says)
    ("/api/decide", b"[" * 100_000, 400, f"nests more than {MAX_DEPTH}"),
    ("/api/decide", b'{"a":' * 50_000, 400, "nests more than"),
    ("/api/undo", b"[" * 100_000, 400, "nests more than"),
    ("/api/decide", b'{"crop_ids": [[[[[[[["1000_0"]]]]]]]], "status": "rejected"}', 400, "nests more than"),
    ("/api/decide", b'{"crop_ids": ["1000_0\xff"], "status": "rejected"}', 400, "not UTF-8"),
    ("/api/decide", b'"rejected"', 400, "send an object"),
    ("/api/decide", b"12", 400, "send an object"),
    ("/api/decide", b"null", 400, "send an object"),
    ("/api/undo", b'"undo"', 400, "send an object"),
    ("/api/undo", b"[]", 400, "send an object"),
    ("/api/decide", b"9" * 5000, 400, "not JSON"),
    ("/api/decide", b'{"crop_ids": [1e999], "status": "rejected"}', 400, "crop_ids must be"),
    ("/api/decide", b'{"crop_ids": ["1000_0"], "status": "rejected", "origin": 1e999}', 400, "origin must be"),
    ("/api/decide", b"{}", 400, "status must be"),
    ("/api/decide", b'{"status": "rejected"}', 400, "crop_ids must be"),
    ("/api/decide", b'{"crop_ids": "1000_0", "status": "rejected"}', 400, "crop_ids must be"),
    ("/api/decide", b'{"crop_ids": [1000], "status": "rejected"}', 400, "crop_ids must be"),
    ("/api/decide", b'{"crop_ids": ["1000_0"], "status": ["rejected"]}', 400, "status must be"),
    ("/api/decide", b'{"crop_ids": ["1000_0"], "status": {"rejected": 1}}', 400, "status must be"),
    ("/api/decide", b'{"crop_ids": {"1000_0": 1}, "status": "rejected"}', 400, "crop_ids must be"),
    ("/api/decide", b'{"crop_ids": ["1000_0"], "status": "rejected", "origin": null}', 400, "origin must be"),
    ("/api/decide", b"NaN", 400, "send an object"),
]


def test_hostile_bodies_get_a_4xx_from_the_real_server_and_it_keeps_working(tmp_path):
    wd = make_review_workdir(tmp_path / "work", n=8)
    server = Server(wd)
    try:
        for path, body, status, says in HOSTILE:
            got, data = server.request("POST", path, body)
            assert got == status, (body[:60], got, data[:300])
            assert says in json.loads(data)["error"], (body[:60], data)
        # Still serving, and deciding as before.
        assert server.request("GET", "/api/page")[0] == 200
        assert server.post("/api/decide", {"crop_ids": ["1000_0"], "status": "rejected"})[0] == 200
        assert server.post("/api/undo", {})[0] == 200
    finally:
        err = server.stop()
    assert "Traceback" not in err and "RecursionError" not in err, err[-3000:]
    assert decisions(wd) == [("1000_0", "rejected", "grid"), ("1000_0", "pending", "undo")]


def test_a_full_disk_under_the_log_refuses_the_decision_and_the_server_recovers(tmp_path, tiny_disk):
    disk, grow = tiny_disk
    wd = make_review_workdir(disk / "work", n=4)
    server = Server(wd)
    try:
        assert server.post("/api/decide", {"crop_ids": ["1000_0"], "status": "rejected"})[0] == 200
        fill(disk)
        status, data = server.post("/api/decide", {"crop_ids": ["1000_1", "1001_0"], "status": "rejected"})
        assert status == 503 and str(wd.review_db) in data["error"] and "No space left" in data["error"], data
        assert server.post("/api/undo", {})[0] == 503
        # Thumbnails are only a cache: still shown on a full disk.
        assert server.request("GET", "/thumb/3")[0] == 200
        page = json.loads(server.request("GET", "/api/page?sort=table")[1])
        assert page["counts"]["rejected"] == 1  # nothing refused was applied
        grow(2048)
        status, data = server.post("/api/decide", {"crop_ids": ["1000_1"], "status": "rejected"})
        assert status == 200 and data["counts"]["rejected"] == 2
        assert server.request("GET", "/")[0] == 200
    finally:
        err = server.stop()
    assert "Traceback" not in err, err[-3000:]
    assert decisions(wd) == [("1000_0", "rejected", "grid"), ("1000_1", "rejected", "grid")]


def test_the_grid_on_a_full_or_read_only_log_is_one_line_naming_the_database(tmp_path, tiny_disk, read_only_view,
                                                                               capsys):
    disk, _ = tiny_disk
    wd = make_review_workdir(disk / "work", n=2)
    fill(disk)
    r = run_curate("review", "grid", wd.root, "--port", "0", timeout=60)
    assert_one_line_error(r, str(wd.review_db), "No space left on device", code=1)

    # The rest in this process, on a port already taken: a grid that got past its log would stop at
    # the port (a different error), not serve forever.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ro = make_review_workdir(tmp_path / "ro" / "work", n=2)
        read_only_view(tmp_path / "ro")
        r = curate_here(capsys, "review", "grid", ro.root, "--port", port)
        assert_one_line_error(r, str(ro.review_db), "Read-only file system", code=1)

        (tmp_path / "bad").mkdir()
        junk = make_review_workdir(tmp_path / "bad" / "work", n=2)
        junk.review_db.write_bytes(b"not a database at all " * 100)
        for command in ("grid", "export"):
            r = curate_here(capsys, "review", command, junk.root, *(["--port", port] if command == "grid" else []))
            assert_one_line_error(r, str(junk.review_db), "not a review decision log", code=2)


def test_export_and_sheet_read_a_read_only_workdir(tmp_path, read_only_view, capsys):
    wd = make_review_workdir(tmp_path / "ro" / "work", n=6)
    s = ReviewSession(wd)
    s.decide(s.index.crop_ids[:3], "rejected")
    # A copy made while the server was running: its last decisions are only in the WAL.
    shutil.copytree(wd.root, tmp_path / "ro" / "copy", ignore=shutil.ignore_patterns("*-shm"))
    s.close()
    read_only_view(tmp_path / "ro")
    before = files_under(tmp_path / "ro")

    r = run_curate("review", "export", wd.root, "--out", tmp_path / "d.csv")
    assert r.returncode == 0, r.stderr
    assert [row["status"] for row in csv.DictReader(open(tmp_path / "d.csv"))] == ["rejected"] * 3
    r = curate_here(capsys, "review", "sheet", wd.root, "--out", tmp_path / "s.png")
    assert r.returncode == 0 and "3 of 3 rejected" in r.stdout, r.stderr
    # SQLite cannot read a WAL without its -shm on a read-only disk: refuse, rather than export stale rows.
    r = curate_here(capsys, "review", "export", tmp_path / "ro" / "copy")
    assert_one_line_error(r, "review.sqlite-wal", "read-only", code=1)
    assert files_under(tmp_path / "ro") == before


@pytest.mark.parametrize("command", [["export", "--format", "json"], ["sheet", "--status", "pending"]])
def test_a_read_only_or_full_output_is_one_line_naming_it_and_leaves_nothing(tmp_path, read_only_dir, tiny_disk,
                                                                            command, capsys):
    wd = make_review_workdir(tmp_path / "work", n=6)
    s = ReviewSession(wd)
    s.decide(s.index.crop_ids[:3], "rejected")
    s.close()
    name = "out.json" if command[0] == "export" else "out.png"
    r = curate_here(capsys, "review", command[0], wd.root, *command[1:], "--out", read_only_dir / name)
    assert_one_line_error(r, str(read_only_dir / name), "Read-only file system", code=1)

    disk, grow = tiny_disk
    fill(disk)
    r = run_curate("review", command[0], wd.root, *command[1:], "--out", disk / name)
    assert_one_line_error(r, str(disk / name), "No space left on device", "free some space", code=1)
    assert [p.name for p in disk.iterdir()] == ["filler"], "a failed write left files behind"
    if command[0] == "export":  # to standard output, redirected to the full disk
        with open(disk / "redirected", "w") as f:
            r = subprocess.run([sys.executable, "-m", "curate", "review", *command, wd.root], stdout=f,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        r.stdout = ""  # it went to the file
        assert_one_line_error(r, "standard output", "No space left on device", code=1)
    grow(4096)
    r = curate_here(capsys, "review", command[0], wd.root, *command[1:], "--out", disk / name)
    assert r.returncode == 0 and (disk / name).stat().st_size > 0, r.stderr


def test_an_output_that_is_one_of_the_inputs_is_refused(tmp_path, capsys):
    wd = make_review_workdir(tmp_path / "work", n=6)
    s = ReviewSession(wd)
    s.decide(s.index.crop_ids[:2], "rejected")
    s.close()
    crop = wd.root / load_files(wd)[0]
    (tmp_path / "link.csv").symlink_to(wd.crops_table)
    before = files_under(wd.root)
    for out in (wd.review_db, wd.crops_table, tmp_path / "link.csv", wd.root / "review.sqlite-wal"):
        r = curate_here(capsys, "review", "export", wd.root, "--out", out)
        assert_one_line_error(r, "--out", "choose another --out", code=2)
    for out in (wd.review_db, wd.crops_table, wd.scores_table, crop, wd.crops_dir / "new.png"):
        r = curate_here(capsys, "review", "sheet", wd.root, "--out", out)
        assert_one_line_error(r, "--out", code=2)
    assert files_under(wd.root) == before
    r = curate_here(capsys, "review", "export", wd.root, "--out", wd.root / "decisions.csv")  # beside them is fine
    assert r.returncode == 0, r.stderr


def load_files(wd: Workdir) -> list[str]:
    import pyarrow.parquet as pq
    return pq.read_table(wd.crops_table, columns=["file"]).column("file").to_pylist()
