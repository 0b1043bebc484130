from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from curate.dataset import schema as R
from curate.core.hashing import file_sha256
from curate.cli import cli
from curate.dataset.inspect import inspect_dataset
from curate.dataset.pack import LabelSpec, PackConfig, run_pack, shuffled_order
from curate.core.workdir import CROPS_SCHEMA, REVIEW_SQL, SCORES_SCHEMA, Workdir
from conftest import stop_when
from test_records import nvlabs_levels  # the transcribed NVlabs loop

ROOT = Path(__file__).resolve().parents[1]


def crop_image(i: int, h: int, w: int) -> np.ndarray:
    """A seeded HWC RGB picture: a gradient plus noise, different per crop."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 7 + i * 13) % 256, (y * 5 + i * 29) % 256, (x * y + i) % 256], -1)
    return (base + rng.integers(0, 40, base.shape)).clip(0, 255).astype(np.uint8)


def make_workdir(root: Path, n: int, h: int = 32, w: int = 16, score_rejects=(), review_rejects=()) -> Workdir:
    """A tiny workdir: crops.parquet + PNG crops; scores.parquet and review.sqlite when rejects are given."""
    wd = Workdir(root)
    ids = [f"{100 + i}_0" for i in range(n)]
    for i, c in enumerate(ids):
        p = root / Workdir.crop_file(c)
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop_image(i, h, w)).save(p)
    cols = {f.name: pa.array([0] * n, f.type) for f in CROPS_SCHEMA if pa.types.is_integer(f.type)}
    cols.update({f.name: pa.array([1.0] * n, f.type) for f in CROPS_SCHEMA if pa.types.is_floating(f.type)})
    cols.update(crop_id=pa.array(ids), post_id=pa.array([100 + i for i in range(n)], pa.int64()),
                source=pa.array(["s"] * n), file=pa.array([Workdir.crop_file(c) for c in ids]))
    pq.write_table(pa.table(cols, schema=CROPS_SCHEMA), wd.crops_table)
    if score_rejects or review_rejects:
        s = {f.name: [None] * n for f in SCORES_SCHEMA}
        s.update(crop_id=ids, scorer=["heuristic"] * n, kept=[c not in score_rejects for c in ids],
                 person=[i / n for i in range(n)], rating_safe=[0.9] * n, rating_questionable=[0.08] * n,
                 rating_explicit=[0.02] * n)
        pq.write_table(pa.table(s, schema=SCORES_SCHEMA), wd.scores_table)
        con = sqlite3.connect(wd.review_db)
        con.executescript(REVIEW_SQL)
        for c in review_rejects:
            con.execute("INSERT INTO decisions (crop_id, status, decided_at) VALUES (?, 'rejected', '2026-01-01')", (c,))
        con.commit()
        con.close()
    return wd


def read_level(paths: list[Path]) -> list[np.ndarray]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.extend(R.decode_example(r) for r in R.iter_records(f))
    return out


def dir_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_levels_equal_reference_in_seeded_order_without_rejected_crops(tmp_path):
    wd = make_workdir(tmp_path / "wd", 14, score_rejects={"102_0"}, review_rejects={"105_0", "111_0"})
    stats = run_pack(wd.root, tmp_path / "ds", PackConfig(seed=7), workers=2, progress=False)
    survivors = [f"{100 + i}_0" for i in range(14) if i not in (2, 5, 11)]
    expected_ids = [survivors[i] for i in shuffled_order(len(survivors), 7)]
    manifest = json.loads((tmp_path / "ds" / R.MANIFEST).read_text())
    assert manifest["record_crop_ids"] == expected_ids and manifest["count"] == 11
    assert manifest["source"]["counts"] == {"crops": 14, "removed_by_score": 1, "removed_by_review": 2, "surviving": 11}
    assert set(manifest["source"]["tables"]) == {"crops.parquet", "scores.parquet", "review.sqlite"}

    files = R.dataset_files(tmp_path / "ds")
    assert list(files) == [5, 4, 3, 2] and [lv["height"] for lv in stats["levels"]] == [32, 16, 8, 4]
    levels = {lvl: read_level(paths) for lvl, paths in files.items()}
    for k, crop in enumerate(expected_ids):
        rgb = np.asarray(Image.open(wd.root / Workdir.crop_file(crop)).convert("RGB"))  # not curate's decoder
        want = nvlabs_levels(rgb.transpose(2, 0, 1), 4)
        for j, lvl in enumerate([5, 4, 3, 2]):
            assert np.array_equal(levels[lvl][k], want[j]), (crop, lvl)
    for name, entry in manifest["files"].items():
        assert file_sha256(tmp_path / "ds" / name) == entry["sha256"] and entry["records"] == 11


def test_output_is_byte_identical_across_runs_and_worker_counts_and_a_rerun_changes_nothing(tmp_path):
    wd = make_workdir(tmp_path / "wd", 9)
    run_pack(wd.root, tmp_path / "a", PackConfig(), workers=1, progress=False)
    run_pack(wd.root, tmp_path / "b", PackConfig(), workers=2, progress=False)
    a = dir_bytes(tmp_path / "a")
    assert a == dir_bytes(tmp_path / "b") and len(a) == 5  # 4 levels + dataset.json
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    again = run_pack(wd.root, tmp_path / "a", PackConfig(), workers=1, progress=False)
    assert again["up_to_date"] and {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()} == before


def test_workers_reuse_shared_memory_slots_without_mixing_crops(tmp_path):
    # 75 crops in chunks of 8 over a 4-chunk window: the arena's slots are reused twice, and the
    # skipped crops and the short last chunk must not shift any record into another's place
    wd = make_workdir(tmp_path / "wd", 75)
    (wd.root / Workdir.crop_file("130_0")).write_bytes(b"not a png")
    (wd.root / Workdir.crop_file("161_0")).unlink()
    one = run_pack(wd.root, tmp_path / "one", PackConfig(), workers=1, progress=False)
    two = run_pack(wd.root, tmp_path / "two", PackConfig(), workers=2, progress=False)
    assert one["count"] == two["count"] == 73
    assert dir_bytes(tmp_path / "one") == dir_bytes(tmp_path / "two")
    levels = {lvl: [R.decode_example(r) for r in R.iter_records(open(tmp_path / "two" / f, "rb"))]
              for lvl, (f,) in R.dataset_files(tmp_path / "two").items()}
    top = max(levels)
    for k, crop in enumerate(two["record_crop_ids"]):
        i = int(crop.split("_")[0]) - 100
        assert np.array_equal(levels[top][k], crop_image(i, 32, 16).transpose(2, 0, 1)), crop


def test_shards_hold_the_same_records_as_one_file(tmp_path):
    wd = make_workdir(tmp_path / "wd", 12)
    run_pack(wd.root, tmp_path / "one", PackConfig(), workers=1, progress=False)
    run_pack(wd.root, tmp_path / "sh", PackConfig(shard_size=5), workers=1, progress=False)
    sharded = R.dataset_files(tmp_path / "sh")
    assert [p.name for p in sharded[5]] == [f"portraits-r05-{i}-of-3.tfrecords" for i in range(3)]
    for lvl, paths in R.dataset_files(tmp_path / "one").items():
        assert b"".join(p.read_bytes() for p in sharded[lvl]) == paths[0].read_bytes()
    m = json.loads((tmp_path / "sh" / R.MANIFEST).read_text())
    assert m["shards"] == 3 and [m["files"][p.name]["records"] for p in sharded[2]] == [5, 5, 2]


def test_labels_follow_record_order(tmp_path):
    wd = make_workdir(tmp_path / "wd", 6, score_rejects={"101_0"})
    posts = tmp_path / "filtered.parquet"
    tags = {"tags_general": [["1girl", "smile"], ["1girl"], [], ["smile"], ["1girl", "blonde_hair"], None],
            "tags_character": [[]] * 6, "tags_copyright": [[]] * 6, "tags_artist": [[]] * 6, "tags_meta": [[]] * 6}
    pq.write_table(pa.table({"id": pa.array(range(100, 106), pa.int64()),
                             **{k: pa.array(v, pa.list_(pa.string())) for k, v in tags.items()}}), posts)
    run_pack(wd.root, tmp_path / "t", PackConfig(labels=LabelSpec.parse("tags:1girl,smile"), posts=str(posts)),
             workers=1, progress=False)
    run_pack(wd.root, tmp_path / "s", PackConfig(labels=LabelSpec("scores")), workers=1, progress=False)
    m = json.loads((tmp_path / "t" / R.MANIFEST).read_text())
    assert m["labels"]["names"] == ["1girl", "smile"]
    got = np.load(tmp_path / "t" / "portraits-rxx.labels")
    want = {f"{100 + i}_0": [1.0 * ("1girl" in (t or [])), 1.0 * ("smile" in (t or []))]
            for i, t in enumerate(tags["tags_general"])}
    assert got.dtype == np.float32 and got.tolist() == [want[c] for c in m["record_crop_ids"]]
    scores = np.load(tmp_path / "s" / "portraits-rxx.labels")
    person = {f"{100 + i}_0": np.float32(i / 6) for i in range(6)}
    assert scores.shape == (5, 4) and scores[:, 0].tolist() == [person[c] for c in m["record_crop_ids"]]


def test_unreadable_and_wrong_size_crops_are_skipped_with_a_reason(tmp_path):
    wd = make_workdir(tmp_path / "wd", 8)
    (wd.root / Workdir.crop_file("103_0")).write_bytes(b"\x89PNG not really")
    Image.fromarray(crop_image(0, 64, 32)).save(wd.root / Workdir.crop_file("106_0"))
    (wd.root / Workdir.crop_file("107_0")).unlink()
    stats = run_pack(wd.root, tmp_path / "ds", PackConfig(), workers=2, progress=False)
    assert stats["count"] == 5
    assert stats["source"]["skipped"] == {"not_an_image": 1, "wrong_size": 1, "missing_file": 1}  # the reader's codes
    assert {"103_0", "106_0", "107_0"}.isdisjoint(stats["record_crop_ids"])


@pytest.mark.parametrize("shard_size", [None, 7])
def test_a_killed_pack_leaves_no_partial_file_and_resumes_to_the_same_bytes(tmp_path, shard_size):
    n = 400
    wd = make_workdir(tmp_path / "wd", n)
    run_pack(wd.root, tmp_path / "clean", PackConfig(shard_size=shard_size), workers=1, progress=False)
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "curate", "pack", str(wd.root), "--out", str(out), "-j", "1",
           "--checkpoint-every", "5", "--no-progress", *(["--shard-size", str(shard_size)] if shard_size else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    progress = out / ".pack-staging" / "progress.json"

    def checkpointed() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(progress.read_text())["done"] >= 20
        return False

    # Held (SIGSTOP) past its fourth checkpoint, then killed: 400 crops outlast the 2 ms between looks.
    stop_when(proc, checkpointed)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGCONT)
    state = json.loads(progress.read_text())
    assert 20 <= state["done"] < n and not list(out.glob("*.tfrecords")) and not (out / R.MANIFEST).exists()
    # bytes past the checkpoint (records written after it, before the kill) must not survive the resume:
    # add a megabyte to every level file the checkpoint was writing into
    current = state["records"] // shard_size if shard_size else 0
    grown = 0
    for p in sorted((out / ".pack-staging").glob("*.part")):
        if p.stem.endswith(f"-{current}"):
            with open(p, "ab") as f:
                f.write(os.urandom(1 << 20))
            grown += 1
    assert grown == 4 or (shard_size and state["records"] % shard_size == 0)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert f"resumed at crop {state['done']}" in done.stdout
    assert dir_bytes(out) == dir_bytes(tmp_path / "clean") and not (out / ".pack-staging").exists()


def test_cli_misuse_is_one_line_and_exit_2(tmp_path):
    wd = make_workdir(tmp_path / "wd", 3)
    cases = [
        ([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "not a folder"),
        ([str(wd.root), "--out", str(tmp_path / "o"), "--min-size", "4x3"], "powers of two"),
        ([str(wd.root), "--out", str(tmp_path / "o"), "--min-size", "4x4"], "aspect"),
        ([str(wd.root), "--out", str(tmp_path / "o"), "--labels", "tags:a"], "--posts"),
        ([str(wd.root), "--out", str(tmp_path / "o"), "--labels", "colour"], "not a label source"),
    ]
    for args, message in cases:
        r = subprocess.run([sys.executable, "-m", "curate", "pack", *args, "--no-progress"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    run_pack(wd.root, tmp_path / "o", PackConfig(seed=1), workers=1, progress=False)
    r = CliRunner().invoke(cli, ["pack", str(wd.root), "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 2 and "different dataset" in r.output
    r = CliRunner().invoke(cli, ["pack", str(wd.root), "--out", str(tmp_path / "o"), "--no-progress", "--overwrite"])
    assert r.exit_code == 0 and json.loads((tmp_path / "o" / R.MANIFEST).read_text())["seed"] == R.SEED


def test_inspect_reads_with_tf_data_and_names_damaged_files(tmp_path):
    pytest.importorskip("tensorflow")
    wd = make_workdir(tmp_path / "wd", 7)
    ds = tmp_path / "ds"
    run_pack(wd.root, ds, PackConfig(shard_size=4, labels=None), workers=1, progress=False)
    r = CliRunner().invoke(cli, ["inspect", str(ds), "-n", "3", "--grid", str(tmp_path / "g.png")])
    assert r.exit_code == 0, r.output
    assert "r05    32x16      2        7         7" in r.output
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (3 * 34 + 2, 4 * 16 + 5 * 2, 3)
    # the 8x4 level's first sample, scaled x4 with nearest neighbour, sits in the grid at column 3
    first = read_level(R.dataset_files(ds)[3])[0].transpose(1, 2, 0)
    assert np.array_equal(grid[2:34, 2 + 2 * 18:2 + 2 * 18 + 16], first.repeat(4, 0).repeat(4, 1))

    flip = ds / "portraits-r04-0-of-2.tfrecords"
    b = bytearray(flip.read_bytes())
    b[R.record_size(16, 8) + 100] ^= 0xFF  # second record's pixels
    flip.write_bytes(bytes(b))
    cut = ds / "portraits-r03-1-of-2.tfrecords"
    cut.write_bytes(cut.read_bytes()[:-7])
    report = inspect_dataset(ds, samples=2)
    kinds = sorted((p.file, p.kind) for p in report.problems)
    assert kinds == [(cut.name, "hash mismatch"), (cut.name, "truncated record"),
                     (flip.name, "bad crc"), (flip.name, "hash mismatch")]
    assert "record #1" in next(p.detail for p in report.problems if p.kind == "bad crc")
    r = CliRunner().invoke(cli, ["inspect", str(ds), "-n", "0"])
    assert r.exit_code == 1
    assert sum(flip.name in line for line in r.stderr.splitlines()) == 2
