from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.filter import runner as filt
from curate.filter.runner import RULES, FilterRules, run_filter, stats_path
from curate.testing.metadata import metadata_lines, naive_filter_ids, with_copies_and_families
from curate.filter.metadata import Post, decode_line, parse_timestamp

US_DAY = 86400 * 1_000_000


def make_post(**kw) -> Post:
    """A post built the way real ones are: an API-form JSON line, decoded."""
    base = dict(id=1, created_at="2018-06-01T00:00:00+00:00", rating="s", image_width=1000, image_height=1500,
                file_ext="jpg", fav_count=20, score=10, is_deleted=False, is_banned=False,
                tag_string_general="1girl solo", tag_string_copyright="original")
    base.update(kw)
    post = decode_line(json.dumps(base).encode())
    assert isinstance(post, Post)
    return post


@pytest.mark.parametrize(
    "rules, post, failed",
    [
        (FilterRules(), make_post(), None),
        (FilterRules(), make_post(is_deleted=True, is_banned=True), "deleted"),
        (FilterRules(drop_deleted=False), make_post(is_deleted=True), None),
        (FilterRules(), make_post(is_banned=True), "banned"),
        (FilterRules(drop_banned=False), make_post(is_banned=True), None),
        (FilterRules(), make_post(file_ext="webm"), "file_ext"),
        (FilterRules(), make_post(rating="q"), "rating"),
        (FilterRules(), make_post(rating="g"), None),
        (FilterRules(ratings=frozenset("g")), make_post(rating="s"), "rating"),
        (FilterRules(), make_post(image_height=511), "too_small"),
        (FilterRules(), make_post(image_width=255), "too_small"),
        (FilterRules(min_favs=21), make_post(), "favs"),
        (FilterRules(min_favs=20), make_post(), None),
        (FilterRules(min_score=11), make_post(), "score"),
        (FilterRules(since=parse_timestamp("2018-06-02")), make_post(), "since"),
        (FilterRules(until=parse_timestamp("2018-06-01")), make_post(), "until"),
        (FilterRules(require_tags=frozenset({"solo", "smile"})), make_post(), "require_tags"),
        (FilterRules(require_tags=frozenset({"solo", "original"})), make_post(), None),
        (FilterRules(any_tags=frozenset({"smile", "hat"})), make_post(), "any_tags"),
        (FilterRules(any_tags=frozenset({"smile", "solo"})), make_post(), None),
        (FilterRules(), make_post(tag_string_general="lying"), "exclude_tags"),
        (FilterRules(exclude_tags=frozenset({"original"})), make_post(), "exclude_tags"),
        (FilterRules(exclude_tags=frozenset()), make_post(tag_string_general="nude"), None),
    ],
)
def test_first_failure(rules, post, failed):
    assert rules.first_failure(post) == failed


def test_age_cutoff_counts_back_from_as_of_or_newest():
    newest = parse_timestamp("2018-12-31")
    assert FilterRules().age_cutoff(newest) is None
    six = FilterRules(max_age_years=6).age_cutoff(newest)
    assert abs(six - parse_timestamp("2012-12-31")) < 2 * US_DAY
    anchored = FilterRules(max_age_years=1, as_of=parse_timestamp("2010-01-01")).age_cutoff(newest)
    assert abs(anchored - parse_timestamp("2009-01-01")) < US_DAY


def write_lines(path: Path, lines, opener=open) -> Path:
    with opener(path, "wt") as f:
        for line in lines:
            f.write(line + "\n")
    return path


@pytest.fixture
def mixed(tmp_path) -> tuple[Path, list[str]]:
    lines = list(metadata_lines(3000, seed=7, generation="mixed"))
    return write_lines(tmp_path / "posts.json", lines), lines


RULESETS = [
    FilterRules(),
    FilterRules(min_favs=5, max_age_years=6, ratings=frozenset("gsq"), exclude_tags=frozenset({"hat"})),
    FilterRules(require_tags=frozenset({"1girl", "solo"}), any_tags=frozenset({"smile", "blush"}), min_score=2,
                since=parse_timestamp("2010-01-01"), until=parse_timestamp("2017-01-01"), exts=frozenset({"jpg"})),
]


@pytest.mark.parametrize("rules", RULESETS)
@pytest.mark.parametrize("workers, block", [(1, 1 << 20), (2, 50_000)])
def test_kept_ids_match_the_naive_reference(tmp_path, mixed, rules, workers, block):
    path, lines = mixed
    out = tmp_path / "out.parquet"
    stats = run_filter([path], out, rules, workers=workers, block_bytes=block, progress=False)
    got = pq.read_table(out).column("id").to_pylist()
    assert got == naive_filter_ids(lines, rules)
    # the funnel adds up: every line is blank, bad, removed by exactly one rule, or kept
    assert stats["lines"] == 3000 and stats["posts"] == 3000 and stats["bad_lines"] == 0
    assert stats["posts"] == stats["kept"] + sum(stats["removed"].values())
    assert set(stats["removed"]) <= set(RULES)
    assert json.loads(stats_path(out).read_text())["kept"] == len(got)


def test_output_columns_and_types(tmp_path, mixed):
    path, _ = mixed
    out = tmp_path / "out.parquet"
    run_filter([path], out, FilterRules(), progress=False, workers=1)
    table = pq.read_table(out)
    assert table.schema == filt.FILTERED_SCHEMA
    row = table.slice(0, 1).to_pylist()[0]
    assert row["path"] == f"original/{row['id'] % 1000:04d}/{row['id']}.{row['file_ext']}"
    assert row["created_at"].tzinfo is not None and isinstance(row["tags_general"], list)


def test_bad_lines_are_counted_and_located(tmp_path):
    good = list(metadata_lines(20, seed=1))
    unusable = json.loads(good[0])
    unusable.update(id="99", image_width="wide", is_deleted=False, file_ext="jpg", rating="s", tags=[])
    lines = (good[:5] + ["{broken", ""] + good[5:10] + ['{"id": "x"}', "[]"] + good[10:]
             + [json.dumps(unusable)])
    path = write_lines(tmp_path / "m.json", lines)
    stats = run_filter([path], tmp_path / "o.parquet", FilterRules(), workers=2, block_bytes=3000, progress=False)
    assert stats["lines"] == 25 and stats["blank_lines"] == 1 and stats["posts"] == 20
    assert stats["bad_reasons"] == {"malformed_json": 1, "missing_field": 1, "wrong_type": 1, "bad_value": 1}
    assert [(s["line"], s["reason"]) for s in stats["bad_samples"]] == [
        (6, "malformed_json"), (13, "missing_field"), (14, "wrong_type"), (25, "bad_value")]
    assert all(s["file"] == str(path) for s in stats["bad_samples"])


def test_compressed_inputs_give_the_same_result(tmp_path, mixed):
    path, lines = mixed
    data = path.read_bytes()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.json.gz").write_bytes(gzip.compress(data[: len(data) // 2 // 1000 * 1000]))
    gz = tmp_path / "p.json.gz"; gz.write_bytes(gzip.compress(data))
    xz = tmp_path / "p.json.xz"; xz.write_bytes(lzma.compress(data))
    bz = tmp_path / "p.json.bz2"; bz.write_bytes(bz2.compress(data))
    tar = tmp_path / "metadata.json.tar.xz"
    with tarfile.open(tar, "w:xz") as t:
        info = tarfile.TarInfo("metadata/2018000000000000"); info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    expected = naive_filter_ids(lines, FilterRules())
    for src in (gz, xz, bz, tar):
        out = tmp_path / f"{src.name}.parquet"
        stats = run_filter([src], out, FilterRules(), workers=2, block_bytes=100_000, progress=False)
        assert pq.read_table(out).column("id").to_pylist() == expected, src
        assert stats["lines"] == 3000 and not stats["input_problems"]


def test_empty_and_truncated_inputs_are_recorded(tmp_path, mixed):
    path, lines = mixed
    empty = tmp_path / "empty.json"; empty.write_bytes(b"")
    data = gzip.compress(path.read_bytes())
    cut = tmp_path / "cut.json.gz"; cut.write_bytes(data[: len(data) // 3])
    stats = run_filter([empty, cut], tmp_path / "o.parquet", FilterRules(), workers=1, progress=False)
    reasons = {(Path(p["file"]).name, p["reason"]) for p in stats["input_problems"]}
    assert reasons == {("empty.json", "empty_file"), ("cut.json.gz", "truncated_or_corrupt")}
    assert 0 < stats["posts"] < 3000


def test_duplicates_across_dumps_are_kept_once(tmp_path, mixed):
    path, lines = mixed
    copy = write_lines(tmp_path / "again.json", lines[:100])
    stats = run_filter([path, copy], tmp_path / "o.parquet", FilterRules(), workers=2, progress=False)
    single = len(naive_filter_ids(lines, FilterRules()))
    assert stats["kept"] == single and stats["removed"]["duplicate"] > 0


def test_max_age_defaults_to_newest_post(tmp_path):
    def line(i, date):
        return json.dumps({"id": i, "created_at": f"{date}T00:00:00+00:00", "rating": "g", "image_width": 600,
                           "image_height": 900, "fav_count": 1, "file_ext": "jpg", "tag_string_general": "solo"})
    path = write_lines(tmp_path / "m.json", [line(1, "2010-01-01"), line(2, "2013-06-01"), line(3, "2018-12-01"),
                                               line(4, "2012-01-01")])
    out = tmp_path / "o.parquet"
    stats = run_filter([path], out, FilterRules(max_age_years=6), workers=1, progress=False)
    assert pq.read_table(out).column("id").to_pylist() == [2, 3]
    assert stats["removed"] == {"max_age": 2} and stats["as_of"].startswith("2018-12-01")
    # the window is a lower bound only (--until is the upper one): post 3, newer than as_of, stays
    run_filter([path], out, FilterRules(max_age_years=3, as_of=parse_timestamp("2013-12-31")), workers=1, progress=False)
    assert pq.read_table(out).column("id").to_pylist() == [2, 3, 4]


def test_missing_images_are_counted(tmp_path):
    lines = list(metadata_lines(300, seed=3))
    path = write_lines(tmp_path / "m.json", lines)
    kept = naive_filter_ids(lines, FilterRules())
    root = tmp_path / "root"
    for pid in kept[::2]:
        ext = json.loads(next(l for l in lines if json.loads(l)["id"] == str(pid)))["file_ext"]
        f = root / f"original/{pid % 1000:04d}/{pid}.{ext}"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    stats = run_filter([path], tmp_path / "o.parquet", FilterRules(), dataset_root=root, workers=1, progress=False)
    assert stats["kept"] == len(kept[::2]) and stats["removed"]["missing_file"] == len(kept) - len(kept[::2])


@pytest.mark.parametrize("rules", [FilterRules(), FilterRules(max_age_years=6)], ids=["one pass", "two passes"])
def test_an_interrupted_write_leaves_no_output(tmp_path, mixed, monkeypatch, rules):
    path, _ = mixed
    out = tmp_path / "o.parquet"

    def boom(*a, **k):
        raise KeyboardInterrupt

    real = filt._whole_input_rules
    monkeypatch.setattr(filt, "_whole_input_rules", boom)  # while the output is being written
    with pytest.raises(KeyboardInterrupt):
        run_filter([path], out, rules, workers=1, progress=False)
    # no output, no temporary, no lock: only the finished block, kept for the rerun to resume from
    assert sorted(p.name for p in tmp_path.iterdir()) == [".o.parquet.staging", path.name]
    monkeypatch.setattr(filt, "_whole_input_rules", real)
    stats = run_filter([path], out, rules, workers=1, progress=False)
    assert stats["blocks_resumed"] == stats["blocks"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.parquet", "o.stats.json", path.name]


def test_a_killed_run_leaves_no_output_and_the_rerun_cleans_up(tmp_path):
    path = write_lines(tmp_path / "m.json", metadata_lines(40000, seed=5))
    out = tmp_path / "o.parquet"
    cmd = [sys.executable, "-m", "curate", "filter", str(path), "-o", str(out), "--no-progress", "-j", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".o.parquet") for p in tmp_path.iterdir()):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not stats_path(out).exists()
    subprocess.run(cmd, check=True, capture_output=True)
    assert out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "o.parquet", "o.stats.json"]


def test_real_sample(sample_root, tmp_path):
    out = tmp_path / "f.parquet"
    stats = run_filter([sample_root], out, FilterRules(), dataset_root=sample_root, progress=False)
    assert stats["lines"] == 55 and stats["bad_lines"] == 0
    # 5 listed posts have no file on disk; 2 of those are webm/swf, removed earlier by file type
    assert stats["removed"]["file_ext"] == 2 and stats["removed"]["missing_file"] == 3
    table = pq.read_table(out)
    assert stats["kept"] == table.num_rows > 0
    assert all((sample_root / p).is_file() for p in table.column("path").to_pylist())


OPEN = dict(exclude_tags=frozenset(), ratings=frozenset("gsqe"))  # most posts reach the whole-input rules


@pytest.mark.parametrize("rules", [FilterRules(**OPEN), FilterRules(one_per_family=True, **OPEN),
                                   FilterRules(one_per_family=True, min_favs=2, max_age_years=6, **OPEN)],
                         ids=["copies", "one-per-family", "one-per-family-age-window"])
def test_same_pictures_and_families_match_the_naive_reference(tmp_path, rules):
    lines = with_copies_and_families(list(metadata_lines(3000, seed=11, generation="mixed")), seed=3)
    path = write_lines(tmp_path / "posts.json", lines)
    stats = run_filter([path], tmp_path / "out.parquet", rules, workers=2, block_bytes=60_000, progress=False)
    got = pq.read_table(tmp_path / "out.parquet").column("id").to_pylist()
    assert got == naive_filter_ids(lines, rules)
    assert stats["removed"]["duplicate_file"] > 5
    assert (stats["removed"].get("family_variant", 0) > 5) == rules.one_per_family
    assert stats["removed"].get("max_age", 0) > 20 or not rules.max_age_years
    assert stats["posts"] == stats["kept"] + sum(stats["removed"].values())


def api_line(post_id: int, **kw) -> str:
    base = dict(id=post_id, created_at="2018-06-01T00:00:00+00:00", rating="s", image_width=1000,
                image_height=1500, file_ext="jpg", fav_count=5, tag_string_general="1girl solo")
    return json.dumps({**base, **kw})


def test_duplicate_file_keeps_the_first_copy_by_md5_then_pixel_hash(tmp_path):
    lines = [api_line(1, md5="a" * 32), api_line(2, md5="a" * 32),  # the same file twice
             api_line(3, md5="b" * 32, pixel_hash="p1"), api_line(4, md5="c" * 32, media_asset={"pixel_hash": "p1"}),
             api_line(5, md5="d" * 32, pixel_hash="", media_asset=None), api_line(6, md5=None),
             api_line(7), api_line(8, md5="a" * 32, is_deleted=True)]
    out = tmp_path / "out.parquet"
    stats = run_filter([write_lines(tmp_path / "p.json", lines)], out, FilterRules(), workers=1, progress=False)
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [1, 3, 5, 6, 7]
    assert table.column("pixel_hash").to_pylist() == [None, "p1", None, None, None]
    assert stats["removed"] == {"deleted": 1, "duplicate_file": 2}


def test_one_per_family_keeps_the_most_favourited_then_the_lowest_id(tmp_path):
    lines = [api_line(10, fav_count=3), api_line(11, parent_id=10, fav_count=9), api_line(12, parent_id=10, fav_count=9),
             api_line(20, fav_count=4), api_line(21, parent_id=20, fav_count=4),
             api_line(30, parent_id=None), '{"id":"40","created_at":"2018-01-01 00:00:00 UTC","rating":"s",'
             '"image_width":"900","image_height":"900","file_ext":"jpg","favs":[],"tags":[],"parent_id":"0"}',
             api_line(41, parent_id=99, fav_count=1), api_line(42, parent_id=99, fav_count=2)]
    out = tmp_path / "out.parquet"
    path = write_lines(tmp_path / "p.json", lines)
    stats = run_filter([path], out, FilterRules(one_per_family=True), workers=1, progress=False)
    assert pq.read_table(out).column("id").to_pylist() == [11, 20, 30, 40, 42]  # 99 is not in the input
    assert stats["removed"] == {"family_variant": 4}
    off = run_filter([path], tmp_path / "off.parquet", FilterRules(), workers=1, progress=False)
    assert off["kept"] == 9 and pq.read_table(tmp_path / "off.parquet").column("parent_id").to_pylist()[:3] == [None, 10, 10]


def test_an_unusable_parent_id_is_a_bad_line(tmp_path):
    path = write_lines(tmp_path / "p.json", [api_line(1, parent_id="x1"), api_line(2, parent_id=-4), api_line(3)])
    stats = run_filter([path], tmp_path / "o.parquet", FilterRules(), workers=1, progress=False)
    assert stats["kept"] == 1 and stats["bad_reasons"] == {"bad_value": 2}
