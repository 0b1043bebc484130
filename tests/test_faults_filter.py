"""Faults in `curate filter` (issue 13): hostile lines and inputs, outputs that are inputs, two runs on one
output, kill -9, full and read-only disks, damaged compressed files, resume and no-op reruns.

Each test drives the command as a user does (a fresh process) where the defect was a traceback or a
process left behind, and the runner directly where only the result matters.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, assert_one_line_error, group_alive, run_curate
from curate.core.errors import InputError
from curate.core.lock import LockedError
from curate.filter.metadata import CREATED_MIN, expand_inputs
from curate.filter.rules import FilterRules, PostFilter
from curate.filter.runner import lock_path, run_filter, staging_path, stats_path, summary_line
from curate.testing.metadata import metadata_lines

BLOCK = 256 << 10  # small blocks, so that a small input has many and a run can be stopped between them
BLOCK_MB = str(BLOCK / (1 << 20))
# Every post that is a valid line is kept: what is left out is then exactly the bad lines.
KEEP_ALL = FilterRules(exclude_tags=frozenset(), ratings=frozenset("gsqe"), min_height=1, min_width=1,
                       exts=frozenset({"jpg", "png", "gif", "zip", "webm", "swf"}), drop_deleted=False,
                       drop_banned=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_lines(path: Path, lines) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))
    return path


def stats_of(out: Path) -> dict:
    return json.loads(stats_path(out).read_text())


def _line(**kw) -> bytes:
    """A valid 2017-2020 export line (every number a string), with fields replaced by raw JSON bytes."""
    base = {"id": b'"5"', "created_at": b'"2018-06-01 00:00:00.1 UTC"', "rating": b'"s"',
            "image_width": b'"1000"', "image_height": b'"1500"', "file_ext": b'"jpg"', "favs": b'["1","2"]',
            "score": b'"3"', "tags": b'[{"name":"solo","category":"0"},{"name":"1girl","category":"0"}]'}
    base.update(kw)
    return b"{" + b",".join(b'"' + k.encode() + b'":' + v for k, v in base.items()) + b"}"


BIG = b'"99999999999999999999"'  # 2^66: more than any int64 column holds
# (the line, the reason it is bad); each carries a distinct id so that a kept one would show
HOSTILE = [
    (_line(id=b'"11"', tags=b'[{"name":"so\xfflo","category":"0"}]'), "malformed_json"),  # a raw 0xff byte
    (_line(id=b'"12"', rating=b'"\xff"'), "malformed_json"),
    (_line(id=b'"13"', tags=b'[{"name":"\xc3","category":"0"}]'), "malformed_json"),  # a cut UTF-8 sequence
    (_line(id=BIG), "bad_value"),
    (_line(id=b"99999999999999999999"), "bad_value"),  # the same as a JSON number
    (_line(id=b'"9223372036854775808"'), "bad_value"),  # exactly 2^63
    (_line(id=b'"14"', image_height=BIG), "bad_value"),
    (_line(id=b'"15"', image_width=BIG), "bad_value"),
    (_line(id=b'"16"', favs=b"null", fav_count=BIG), "bad_value"),
    (_line(id=b'"17"', score=BIG), "bad_value"),
    (_line(id=b'"18"', score=b'"-99999999999999999999"'), "bad_value"),
    (_line(id=b'"0"'), "bad_value"),
    (_line(id=b'"-3"'), "bad_value"),
    (_line(id=b'"19"', created_at=b'"0001-01-01 00:00:00 UTC"'), "bad_value"),
    (_line(id=b'"20"', created_at=b'"1970-01-01 00:00:00 UTC"'), "bad_value"),
    (_line(id=b'"21"', created_at=b'"2200-01-01T00:00:00+00:00"'), "bad_value"),
    (_line(id=b'"22"', pools=b"[" * 100_000 + b"]" * 100_000), "malformed_json"),  # RecursionError before
    (b'{"x":' * 50_000 + b"1" + b"}" * 50_000, "malformed_json"),
]
GOOD = [_line(id=b'"1"'), _line(id=b'"2"', created_at=b'"2005-01-01 00:00:00 UTC"'),
        _line(id=b'"9223372036854775807"', tags=b'[{"name":"caf\xc3\xa9","category":"0"}]')]  # 2^63 - 1, valid UTF-8


def test_hostile_lines_are_bad_lines_with_a_reason_never_a_traceback(tmp_path):
    path = write_lines(tmp_path / "m.json", GOOD[:1] + [line for line, _ in HOSTILE] + GOOD[1:])
    out = tmp_path / "f.parquet"
    r = run_curate("filter", path, "-o", out, "--no-progress", "-j", "1")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    stats = stats_of(out)
    assert [(s["line"], s["reason"]) for s in stats["bad_samples"]] == [
        (i + 2, reason) for i, (_, reason) in enumerate(HOSTILE)]
    assert stats["bad_samples"][0]["detail"].startswith("tags: invalid UTF-8")
    assert pq.read_table(out).column("id").to_pylist() == [1, 2, 2**63 - 1]
    assert pq.read_table(out).column("tags_general").to_pylist()[2] == ["café"]


@pytest.mark.parametrize("line, reason", HOSTILE)
def test_the_post_filter_unit_gives_the_same_reasons(line, reason):
    row, got, detail = PostFilter(KEEP_ALL)(line)
    assert row is None and got == reason and detail


def test_invalid_utf8_in_a_tag_is_caught_whichever_tag_rule_reads_it():
    line = HOSTILE[0][0]
    for rules in (FilterRules(), FilterRules(require_tags=frozenset({"solo"})), FilterRules(exclude_tags=frozenset())):
        assert PostFilter(rules)(line)[1] == "malformed_json"


def test_dates_before_danbooru_are_refused_and_its_first_day_is_not():
    assert PostFilter(KEEP_ALL)(_line(created_at=b'"2004-12-31T23:59:59+00:00"'))[1] == "bad_value"
    row, reason, _ = PostFilter(KEEP_ALL)(_line(created_at=b'"2005-05-24T00:00:00+00:00"'))
    assert reason is None and row["created_at"] > CREATED_MIN


def test_a_byte_order_mark_does_not_cost_the_first_post(tmp_path):
    lines = list(metadata_lines(5, seed=2))
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    stats = run_filter([path], tmp_path / "f.parquet", KEEP_ALL, workers=1, progress=False)
    assert stats["bad_lines"] == 0 and stats["kept"] == 5


# --- inputs ------------------------------------------------------------------------------------------

def test_unusable_entries_of_a_metadata_folder_are_input_problems_and_the_rest_is_read(tmp_path):
    meta = tmp_path / "dump" / "metadata"
    meta.mkdir(parents=True)
    write_lines(meta / "good.json", metadata_lines(30, seed=4))
    (meta / "dangling.json").symlink_to(tmp_path / "missing.json")
    (meta / "loop.json").symlink_to(meta / "loop.json")
    (meta / "folder.json").mkdir()
    (meta / "to_a_folder.json").symlink_to(meta / "folder.json")
    os.mkfifo(meta / "pipe.json")  # reading it would block forever
    (meta / "2019").mkdir()  # a plain subfolder, as a dump may have: not metadata, not a problem
    (meta / "README.txt").write_text("not metadata")
    (meta / ".hidden.json").write_text("{}")
    out = tmp_path / "f.parquet"
    r = run_curate("filter", tmp_path / "dump", "-o", out, "--no-progress", "-j", "1", timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    problems = {Path(p["file"]).name: p["reason"] for p in stats_of(out)["input_problems"]}
    assert problems == {"dangling.json": "broken_link", "loop.json": "broken_link", "folder.json": "not_a_file",
                        "to_a_folder.json": "not_a_file", "pipe.json": "not_a_file"}
    warnings = [l for l in r.stderr.splitlines() if "warning:" in l]
    assert len(warnings) == 5 and all(any(name in w for w in warnings) for name in problems)
    assert stats_of(out)["lines"] == 30 and "5 input problem(s)" in r.stdout


def _without_root_powers() -> list[str]:
    """A command prefix under which a mode-000 file is unreadable: root reads it all the same unless it
    gives up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv), which is what is done as root."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("as root, a real permission error needs setpriv(1) to drop CAP_DAC_OVERRIDE")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_a_file_without_read_permission_is_unreadable_not_a_traceback(tmp_path):
    meta = tmp_path / "dump" / "metadata"
    meta.mkdir(parents=True)
    write_lines(meta / "a.json", metadata_lines(20, seed=4))
    secret = write_lines(meta / "b.json", metadata_lines(20, seed=5, first_id=9000))
    secret.chmod(0)
    prefix = _without_root_powers()

    def filter_(*args):
        return subprocess.run([*prefix, sys.executable, "-m", "curate", "filter", *map(str, args), "--no-progress",
                               "-j", "1"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    out = tmp_path / "f.parquet"
    r = filter_(tmp_path / "dump", "-o", out)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert [(Path(p["file"]).name, p["reason"]) for p in stats_of(out)["input_problems"]] == [("b.json", "unreadable")]
    assert "b.json: unreadable (Permission denied)" in r.stderr and stats_of(out)["lines"] == 20
    # named directly, the same file is a request that cannot be met: one line, exit 2
    assert_one_line_error(filter_(secret, "-o", tmp_path / "g.parquet"), "b.json", "not readable", code=2)


def test_a_folder_with_nothing_readable_or_a_dangling_link_named_directly_is_one_line(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "x.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(InputError, match="no readable metadata files in this folder .*x.json"):
        run_filter([tmp_path / "meta"], tmp_path / "f.parquet", FilterRules(), progress=False)
    r = run_curate("filter", tmp_path / "meta" / "x.json", "-o", tmp_path / "f.parquet")
    assert_one_line_error(r, "x.json", "does not exist", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta"]


def _truncated(kind: str, data: bytes) -> bytes:
    if kind == "gz":
        c = gzip.compress(data)
    elif kind == "xz":
        c = lzma.compress(data)
    else:
        c = bz2.compress(data, compresslevel=1)  # 100 kB blocks: a cut one leaves the whole ones before it
    return c[: len(c) * 3 // 4]


def _decompressible_prefix(kind: str, cut: bytes) -> bytes:
    """What the codec itself yields from a damaged stream when fed all of it at once."""
    d = {"gz": lambda: zlib.decompressobj(wbits=31), "xz": lzma.LZMADecompressor, "bz2": bz2.BZ2Decompressor}[kind]()
    return d.decompress(cut)


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2"])
def test_a_small_truncated_compressed_file_keeps_every_line_that_decompresses(tmp_path, kind):
    lines = list(metadata_lines(300, seed=6))
    data = ("\n".join(lines) + "\n").encode()
    cut = _truncated(kind, data)
    assert len(cut) < 1 << 20  # the size at which nothing at all was recovered before
    path = tmp_path / f"m.json.{kind}"
    path.write_bytes(cut)
    prefix = _decompressible_prefix(kind, cut)
    intact = prefix[: prefix.rfind(b"\n") + 1].count(b"\n")
    assert 0 < intact < 300
    out = tmp_path / "f.parquet"
    stats = run_filter([path], out, KEEP_ALL, workers=1, progress=False)
    assert pq.read_table(out).column("id").to_pylist() == [1000 + i for i in range(intact)]
    assert [p["reason"] for p in stats["input_problems"]] == ["truncated_or_corrupt"]
    assert stats["bad_lines"] <= 1  # the line the damage cut in two, if it did


def test_a_truncated_tar_keeps_what_it_can_and_says_so_once(tmp_path):
    data = ("\n".join(metadata_lines(300, seed=6)) + "\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as t:
        info = tarfile.TarInfo("metadata/2018000000000000")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    path = tmp_path / "metadata.json.tar.xz"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 3 // 4])
    stats = run_filter([path], tmp_path / "f.parquet", KEEP_ALL, workers=1, progress=False)
    assert stats["kept"] > 0 and [p["reason"] for p in stats["input_problems"]] == ["truncated_or_corrupt"]


# --- outputs -----------------------------------------------------------------------------------------

def test_an_output_that_is_an_input_or_inside_one_is_refused_and_the_input_is_untouched(tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    m = write_lines(meta / "m.json", metadata_lines(10, seed=1))
    root = tmp_path / "root"
    (root / "original").mkdir(parents=True)
    posts_stats = write_lines(tmp_path / "posts.stats.json", metadata_lines(10, seed=1))
    before = {p: sha256(p) for p in (m, posts_stats)}
    assert_one_line_error(run_curate("filter", m, "-o", m), "is also an input", "choose another --out", code=2)
    for inputs, out, root_, words in [
        ([meta], meta / "f.parquet", None, "inside the input folder"),
        ([m], root / "work" / "f.parquet", root, "inside the dataset root"),
        ([posts_stats], tmp_path / "posts.parquet", None, "stats file .* is also an input"),
    ]:
        with pytest.raises(InputError, match=words):
            run_filter(inputs, out, FilterRules(), dataset_root=root_, workers=1, progress=False)
    assert {p: sha256(p) for p in before} == before
    assert sorted(p.name for p in meta.iterdir()) == ["m.json"] and not (root / "work").exists()
    assert not (tmp_path / "posts.parquet").exists()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Metadata of ~35 blocks of BLOCK bytes, and the output an uninterrupted run makes of it."""
    where = tmp_path_factory.mktemp("big")
    path = write_lines(where / "posts.json", metadata_lines(4000, seed=11, generation="mixed"))
    ref = where / "reference.parquet"
    stats = run_filter([path], ref, FilterRules(), workers=1, block_bytes=BLOCK, progress=False)
    assert stats["blocks"] > 25 and stats["kept"] > 0
    return path, sha256(ref)


def _start_filter(path: Path, out: Path, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "curate", "filter", str(path), "-o", str(out), "--no-progress",
           "--block-mb", BLOCK_MB, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    """Poll until `condition()`; fail (with the run's stderr) if the run ends first or 60 s go by."""
    for _ in range(60_000):
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.001)
    pytest.fail(f"never saw {what}")


def _staged(out: Path) -> list[Path]:
    return sorted(staging_path(out).glob("b*.parquet")) if staging_path(out).is_dir() else []


def test_kill_9_leaves_no_worker_and_the_rerun_resumes_to_the_same_bytes(tmp_path, big):
    path, reference = big
    out = tmp_path / "f.parquet"
    proc = _start_filter(path, out, "-j", "2")
    _wait_for(lambda: len(_staged(out)) >= 2, proc, "two finished blocks")
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(proc.pid, signal.SIGKILL)  # the main process only: its workers must follow it by themselves
    assert len(workers) >= 2, "the run had no pool workers to orphan"
    proc.wait()
    for _ in range(100):  # up to ~10 s
        if not group_alive(proc.pid):
            break
        time.sleep(0.1)
    assert not group_alive(proc.pid), "filter's pool workers outlived their killed parent"
    assert not out.exists() and not stats_path(out).exists()
    done = len(_staged(out))
    stats = run_filter([path], out, FilterRules(), workers=2, block_bytes=BLOCK, progress=False)  # the same command
    assert done <= stats["blocks_resumed"] < stats["blocks"]  # the killed run's blocks were not decoded again
    assert f"{stats['blocks_resumed']} of {stats['blocks']} blocks resumed" in summary_line(stats)
    assert sha256(out) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet", "f.stats.json"]  # no lock, no staging


@pytest.mark.parametrize("rules", [FilterRules(), FilterRules(max_age_years=6)], ids=["one pass", "two passes"])
def test_a_resumed_run_redoes_no_finished_block_and_writes_the_same_bytes(tmp_path, big, monkeypatch, rules):
    from curate.filter import runner
    path, reference = big
    if rules != FilterRules():
        run_filter([path], tmp_path / "clean.parquet", rules, workers=1, block_bytes=BLOCK, progress=False)
        reference = sha256(tmp_path / "clean.parquet")
    out = tmp_path / "f.parquet"
    real, staged = runner._stage_block, []

    def stage_then_stop(where, r):
        if len(staged) == 7:
            raise KeyboardInterrupt  # as a kill between two blocks would
        real(where, r)
        staged.append(where)

    monkeypatch.setattr(runner, "_stage_block", stage_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_filter([path], out, rules, workers=2, block_bytes=BLOCK, progress=False)
    assert _staged(out) == staged and not out.exists()
    decoded = []
    decode = runner.filter_block
    monkeypatch.setattr(runner, "_stage_block", real)
    monkeypatch.setattr(runner, "filter_block", lambda block, rules: decoded.append(block) or decode(block, rules))
    stats = run_filter([path], out, rules, workers=1, block_bytes=BLOCK, progress=False)  # workers=1: in this process
    assert stats["blocks_resumed"] == 7 and len(decoded) == stats["blocks"] - 7  # the finished ones not decoded
    assert sha256(out) == reference
    assert not staging_path(out).exists()
    if rules != FilterRules():
        return
    # the staging of a run with other rules is not taken for this one's
    out.unlink()
    monkeypatch.setattr(runner, "_stage_block", stage_then_stop)
    staged.clear()
    with pytest.raises(KeyboardInterrupt):
        run_filter([path], out, FilterRules(min_favs=2), workers=1, block_bytes=BLOCK, progress=False)
    monkeypatch.setattr(runner, "_stage_block", real)
    assert run_filter([path], out, rules, workers=1, block_bytes=BLOCK, progress=False)["blocks_resumed"] == 0
    assert sha256(out) == reference


def test_a_second_run_on_the_same_output_refuses_while_the_first_lives(tmp_path, big):
    path, reference = big
    out = tmp_path / "f.parquet"
    first = _start_filter(path, out, "-j", "1")
    try:
        _wait_for(lambda: len(_staged(out)) >= 1, first, "the first run's first block")
        os.killpg(first.pid, signal.SIGSTOP)  # hold it there, lock and all
        r = run_curate("filter", path, "-o", out, "--no-progress", "--block-mb", BLOCK_MB, "-j", "1")
        assert_one_line_error(r, "another run", f"pid {first.pid}", str(out), code=1)
        # other rules are refused all the same: the lock is on the output, not on the work
        with pytest.raises(LockedError, match="another run"):
            run_filter([path], out, FilterRules(min_favs=3), workers=1, progress=False)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert first.wait(60) == 0, first.stderr.read().decode()[-2000:]
    assert sha256(out) == reference and not lock_path(out).exists()


def test_a_no_op_rerun_writes_nothing_and_a_change_reruns(tmp_path):
    path = write_lines(tmp_path / "m.json", metadata_lines(300, seed=3))
    root = tmp_path / "root"
    (root / "original" / "0000").mkdir(parents=True)
    out = tmp_path / "f.parquet"

    def run(rules=FilterRules()):
        return run_filter([path], out, rules, dataset_root=root, workers=1, progress=False)

    first = run()  # the root holds no image yet: every post that passes the rules is missing_file
    assert first["up_to_date"] is False and first["kept"] == 0 and first["removed"]["missing_file"] > 0
    written = {p: p.stat().st_mtime_ns for p in (out, stats_path(out))}
    again = run()
    assert again["up_to_date"] is True and again["kept"] == first["kept"]
    assert {p: p.stat().st_mtime_ns for p in written} == written  # neither the table nor the stats rewritten
    r = run_curate("filter", path, "--dataset-root", root, "-o", out, "--no-progress")
    assert r.returncode == 0 and "already up to date" in r.stdout, r.stderr
    assert {p: p.stat().st_mtime_ns for p in written} == written
    # an image appears: the missing-file rule may now decide otherwise, so the stage runs again
    kept = run_filter([path], tmp_path / "no_root.parquet", FilterRules(), workers=1, progress=False)
    assert kept["kept"] == first["removed"]["missing_file"]
    table = pq.read_table(tmp_path / "no_root.parquet")
    image = root / table.column("path")[0].as_py()
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(b"x")
    rerun = run()
    assert rerun["up_to_date"] is False and rerun["kept"] == 1
    assert run(FilterRules(min_favs=3))["up_to_date"] is False  # other rules
    assert run(FilterRules(min_favs=3))["up_to_date"] is True
    os.utime(path, ns=(1, 1))  # the input changed (as far as its size and time tell)
    assert run(FilterRules(min_favs=3))["up_to_date"] is False


# --- full and read-only disks --------------------------------------------------------------------------

def test_a_read_only_output_is_one_line_naming_it(tmp_path, read_only_dir):
    path = write_lines(tmp_path / "m.json", metadata_lines(50, seed=3))
    out = read_only_dir / "f.parquet"
    r = run_curate("filter", path, "-o", out, "--no-progress", "-j", "1")
    last = assert_one_line_error(r, f"{out}: Read-only file system", "writable", code=1)
    assert ".lock" not in last and ".staging" not in last
    assert list(read_only_dir.iterdir()) == []


def test_a_stats_file_that_cannot_be_written_is_one_line_naming_it_and_the_rerun_finishes(tmp_path, big):
    path, reference = big
    out = tmp_path / "f.parquet"
    stats_path(out).mkdir()  # in the way of the stats file, as no chmod can be for root
    r = run_curate("filter", path, "-o", out, "--no-progress", "--block-mb", BLOCK_MB, "-j", "2")
    assert_one_line_error(r, f"{stats_path(out)}: Is a directory", code=1)
    assert len(_staged(out)) > 0  # kept: the work is done, only its record is missing
    stats_path(out).rmdir()
    stats = run_filter([path], out, FilterRules(), workers=2, block_bytes=BLOCK, progress=False)
    assert stats["blocks_resumed"] == stats["blocks"] and sha256(out) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet", "f.stats.json"]


def test_a_full_disk_stops_with_one_line_and_the_rerun_resumes_once_there_is_room(tmp_path, big, tiny_disk):
    path, reference = big
    disk, grow = tiny_disk
    (disk / "filler").write_bytes(b"\0" * (96 << 10))
    out = disk / "f.parquet"
    r = run_curate("filter", path, "-o", out, "--no-progress", "--block-mb", BLOCK_MB, "-j", "2")
    assert_one_line_error(r, str(out), "No space left on device", "run the same command again to resume", code=1)
    assert not out.exists() and not stats_path(out).exists() and not lock_path(out).exists()
    assert not [p for p in [*disk.iterdir(), *staging_path(out).iterdir()] if ".tmp-" in p.name], \
        "a temporary was left behind"
    done = len(_staged(out))
    assert done > 0, "nothing was staged before the disk filled: nothing to resume"
    grow(8192)
    stats = run_filter([path], out, FilterRules(), workers=2, block_bytes=BLOCK, progress=False)  # the same command
    assert stats["blocks_resumed"] >= done
    assert sha256(out) == reference
    assert sorted(p.name for p in disk.iterdir()) == ["f.parquet", "f.stats.json", "filler"]


def test_expand_inputs_reports_problems_only_for_folder_entries(tmp_path):
    (tmp_path / "a.json").write_text("{}\n")
    (tmp_path / "b.json").symlink_to(tmp_path / "nowhere")
    problems: list = []
    assert [p.name for p in expand_inputs([tmp_path], problems)] == ["a.json"]
    assert [(Path(p.file).name, p.reason) for p in problems] == [("b.json", "broken_link")]
    assert stat.S_ISLNK(os.lstat(tmp_path / "b.json").st_mode)  # reported, left as it was
