from __future__ import annotations

import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.workdir import CROPS_SCHEMA, REVIEW_SQL, SCORES_SCHEMA, Workdir, latest_decisions, surviving_crops


def _crops(ids):
    n = len(ids)
    cols = {f.name: pa.array([0] * n, f.type) for f in CROPS_SCHEMA if pa.types.is_integer(f.type)}
    cols.update({f.name: pa.array([1.0] * n, f.type) for f in CROPS_SCHEMA if pa.types.is_floating(f.type)})
    cols.update(crop_id=pa.array(ids), source=pa.array(["s"] * n), file=pa.array([Workdir.crop_file(i) for i in ids]))
    return pa.table(cols, schema=CROPS_SCHEMA)


def test_crop_file_is_sharded_and_stable():
    assert Workdir.crop_file("263162_0") == Workdir.crop_file("263162_0")
    shard, name = Workdir.crop_file("263162_0").split("/")[1:]
    assert len(shard) == 2 and name == "263162_0.png"


def test_surviving_crops_applies_score_then_latest_review(tmp_path):
    wd = Workdir(tmp_path)
    pq.write_table(_crops(["a", "b", "c", "d"]), wd.crops_table)
    table, counts = surviving_crops(wd)
    assert table.column("crop_id").to_pylist() == ["a", "b", "c", "d"] and counts["surviving"] == 4

    scores = {f.name: [None] * 4 for f in SCORES_SCHEMA}
    scores.update(crop_id=["a", "b", "c", "d"], scorer=["heuristic"] * 4, kept=[True, False, True, True])
    pq.write_table(pa.table(scores, schema=SCORES_SCHEMA), wd.scores_table)
    con = sqlite3.connect(wd.review_db)
    con.executescript(REVIEW_SQL)
    for crop, status in [("c", "rejected"), ("d", "rejected"), ("d", "pending")]:  # d was undone
        con.execute("INSERT INTO decisions (crop_id, status, decided_at) VALUES (?, ?, '2026-01-01')", (crop, status))
    con.commit()
    con.close()
    assert latest_decisions(wd.review_db) == {"c": "rejected", "d": "pending"}
    table, counts = surviving_crops(wd)
    assert table.column("crop_id").to_pylist() == ["a", "d"]
    assert counts == {"crops": 4, "removed_by_score": 1, "removed_by_review": 1, "surviving": 2}
