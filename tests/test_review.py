"""curate review: the index, the decision log and undo, paging, thumbnails, the HTTP API and its refusals,
a real server killed mid-review, and the export and sheet commands."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.review.session import ReviewSession, ThumbnailCache, load_index
from curate.testing.review import make_review_workdir
from curate.core.workdir import Workdir, latest_decisions

from conftest import start_curate_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def wd(tmp_path) -> Workdir:
    return make_review_workdir(tmp_path / "work", n=40, unscored=4)


def log(wd: Workdir) -> list[tuple]:
    con = sqlite3.connect(wd.review_db)
    try:
        return con.execute("SELECT crop_id, status, origin FROM decisions ORDER BY seq").fetchall()
    finally:
        con.close()


def test_index_joins_scores_and_sorts_most_doubtful_first(wd):
    index = load_index(wd)
    assert len(index) == 40
    assert {"kept", "unscored"} <= set(index.label_names)
    unscored = [index.crop_ids[r] for r in range(40) if index.label_names[index.labels[r]] == "unscored"]
    assert unscored == index.crop_ids[-4:]
    order = index.order("score")
    scores = index.scores[order]
    assert np.all(np.diff(scores[:36]) >= 0) and np.isnan(scores[36:]).all()
    assert index.order("table").tolist() == list(range(40))
    item = index.item(int(order[0]))
    assert item["post_id"] == 1000 + int(order[0]) // 2 and len(item["top_tags"]) == 4


def test_missing_scores_table_means_unscored_in_table_order(tmp_path):
    wd = make_review_workdir(tmp_path, n=6, scores=False)
    index = load_index(wd)
    assert index.label_names == ["unscored"] and index.order("score").tolist() == list(range(6))


def test_the_group_order_shows_each_near_duplicate_group_side_by_side(tmp_path):
    from curate.dedup.runner import run_dedup
    from test_dedup import jpeg, make_workdir, png
    from curate.testing.images import textured

    pictures = {f"x{i}": (png(textured(200 + i, 96, 48)), 50) for i in range(4)}
    pictures["x3_copy"] = (jpeg(textured(203, 96, 48)), 10)
    pictures["x0_copy"] = (jpeg(textured(200, 96, 48)), 90)  # the bigger face: kept before x0
    wd = make_workdir(tmp_path / "w", pictures)
    run_dedup(wd, workers=1, progress=False)
    index = load_index(wd)
    shown = [index.crop_ids[r] for r in index.order("group")]
    assert shown == ["x0_copy", "x0", "x3", "x3_copy", "x1", "x2"]
    session = ReviewSession(wd, index)
    try:
        page = session.page(sort="group", start=0, size=4)
    finally:
        session.close()
    assert [item["crop_id"] for item in page["items"]] == shown[:4]


def test_decisions_are_appended_and_undo_is_a_new_row(wd):
    s = ReviewSession(wd)
    a, b, c = s.index.crop_ids[:3]
    assert s.decide([a], "rejected") == [{"crop_id": a, "status": "rejected"}]
    assert s.decide([a], "rejected") == []  # no change, no row
    s.decide([a, b, c], "accepted", origin="accept-page")
    assert s.counts() == {"total": 40, "pending": 37, "accepted": 3, "rejected": 0}
    assert sorted(s.undo(), key=lambda d: d["crop_id"]) == sorted(
        [{"crop_id": a, "status": "rejected"}, {"crop_id": b, "status": "pending"}, {"crop_id": c, "status": "pending"}],
        key=lambda d: d["crop_id"])
    assert log(wd) == [(a, "rejected", "grid"), (a, "accepted", "accept-page"), (b, "accepted", "accept-page"),
                       (c, "accepted", "accept-page"), (a, "rejected", "undo"), (b, "pending", "undo"),
                       (c, "pending", "undo")]
    assert latest_decisions(wd.review_db) == {a: "rejected", b: "pending", c: "pending"}
    s.close()

    # A new session (a restarted server) has the same statuses and can still undo the first reject.
    s2 = ReviewSession(wd)
    assert s2.counts()["rejected"] == 1
    assert s2.undo() == [{"crop_id": a, "status": "pending"}]
    assert s2.undo() == []
    assert s2.counts()["pending"] == 40
    s2.close()
    assert len(log(wd)) == 8


def test_pages_are_addressed_by_position_so_accepting_skips_nothing(wd):
    s = ReviewSession(wd)
    full = [it["crop_id"] for it in s.page("pending", size=40)["items"]]
    p1 = s.page("pending", size=10)
    assert [it["crop_id"] for it in p1["items"]] == full[:10] and p1["prev_start"] is None
    s.decide([it["crop_id"] for it in p1["items"]], "accepted", origin="accept-page")
    p2 = s.page("pending", start=p1["next_start"], size=10)
    assert [it["crop_id"] for it in p2["items"]] == full[10:20]
    assert p2["offset"] == 0 and p2["matching"] == 30  # the accepted ten left the pending list
    a = s.page(None, size=10)
    b = s.page(None, start=a["next_start"], size=10)
    assert s.page(None, start=b["prev_start"], size=10)["items"] == a["items"] and b["offset"] == 10
    low = s.page(None, label="low_person", size=40)["items"]
    assert low and all(it["label"] == "low_person" for it in low)
    s.close()


def test_thumbnails_are_cached_per_crop_and_only_inside_the_workdir(tmp_path):
    wd = make_review_workdir(tmp_path, n=6, images=2)  # rows 0, 2, 4 share one file
    index = load_index(wd)
    thumbs = ThumbnailCache(wd, index)
    data, tag = thumbs.get(0)
    with Image.open(__import__("io").BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (128, 256)
    cached = list((wd.root / ".thumbs").rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == data
    assert thumbs.get(0) == (data, tag)
    data2, tag2 = thumbs.get(2)  # same file, another crop: its own entry
    assert data2 == data and tag2 != tag and len(list((wd.root / ".thumbs").rglob("*.jpg"))) == 2
    assert not list((wd.root / ".thumbs").rglob(".*"))  # no temporaries left

    (wd.root / index.files[1].as_py()).write_bytes(b"not a png")
    assert thumbs.get(1) == (None, "not_an_image")  # the reader's code (curate.core.image)
    (wd.root / index.files[1].as_py()).unlink()
    assert thumbs.get(1) == (None, "missing_file")
    t = pq.read_table(wd.crops_table).to_pydict()
    t["file"][3] = "../../etc/passwd"
    pq.write_table(pq.read_table(wd.crops_table).set_column(16, "file", [t["file"]]), wd.crops_table)
    assert ThumbnailCache(wd, load_index(wd)).get(3) == (None, "outside_workdir")


@pytest.fixture
def client(wd):
    from starlette.testclient import TestClient

    from curate.review.app import create_app

    s = ReviewSession(wd)
    app = create_app(s, allowed_hosts={"127.0.0.1", "localhost"}, per_page=12)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        c.session = s
        yield c
    s.close()


def test_grid_page_and_thumbnails(client):
    r = client.get("/")
    assert r.status_code == 200 and r.text.count('class="tile pending"') == 12
    assert "1–12 of 40" in r.text and 'id="next"' in r.text and "/static/grid.js" in r.text
    r = client.get("/?status=rejected")
    assert "No crop matches" in r.text
    assert client.get("/static/grid.js").status_code == 200
    page = client.get("/api/page", params={"n": 3, "reason": "kept", "sort": "-score"}).json()
    assert [it["label"] for it in page["items"]] == ["kept"] * 3
    assert page["items"][0]["score"] >= page["items"][1]["score"]

    token = client.session.index.token
    r = client.get(f"/thumb/5?v={token}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "immutable" in r.headers["cache-control"]
    assert client.get("/thumb/5").headers["cache-control"] == "no-cache"
    assert client.get("/thumb/5", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    for bad in ("/thumb/40", "/thumb/-1", "/thumb/abc", "/thumb/..%2Fcrops.parquet", "/thumb/../crops.parquet",
                "/crops.parquet", "/static/../review.py"):
        assert client.get(bad).status_code == 404, bad


def test_decide_and_undo_over_http(client, wd):
    ids = client.session.index.crop_ids
    r = client.post("/api/decide", json={"crop_ids": [ids[0]], "status": "rejected"},
                    headers={"Origin": "http://127.0.0.1:8765", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and r.json()["counts"]["rejected"] == 1
    r = client.post("/api/decide", json={"crop_ids": ids[1:4], "status": "accepted", "origin": "accept-page"})
    assert r.json()["counts"]["accepted"] == 3
    assert len(client.post("/api/undo", json={}).json()["changed"]) == 3
    assert latest_decisions(wd.review_db) == {ids[0]: "rejected", ids[1]: "pending", ids[2]: "pending", ids[3]: "pending"}
    assert 'data-id="%s" data-status="rejected"' % ids[0] in client.get("/?sort=table").text


@pytest.mark.parametrize("kwargs, status", [
    ({"headers": {"Origin": "http://evil.example"}}, 403),
    ({"headers": {"Origin": "http://127.0.0.1:9999"}}, 403),
    ({"headers": {"Origin": "null"}}, 403),
    ({"headers": {"Sec-Fetch-Site": "cross-site"}}, 403),
    ({"headers": {"Sec-Fetch-Site": "same-site"}}, 403),
    ({"headers": {"Host": "evil.example:8765"}}, 403),
    ({"content": b"crop_ids=1000_0&status=rejected", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415),
    ({"content": b"x" * 300_000, "headers": {"Content-Type": "application/json"}}, 413),
    ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
    ({"json": {"crop_ids": ["1000_0"], "status": "deleted"}}, 400),
    ({"json": {"crop_ids": ["1000_0"], "status": "pending", "origin": "undo"}}, 400),
    ({"json": {"crop_ids": [], "status": "rejected"}}, 400),
    ({"json": {"crop_ids": ["../../etc/passwd"], "status": "rejected"}}, 404),
])
def test_state_changes_are_refused_unless_same_origin_json_and_small(client, wd, kwargs, status):
    if "content" not in kwargs:
        kwargs.setdefault("json", {"crop_ids": ["1000_0"], "status": "rejected"})
    r = client.post("/api/decide", **kwargs)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert not wd.review_db.exists() or log(wd) == []


def test_refusals_beyond_decide(client, wd):
    assert client.get("/api/decide").status_code == 405
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 403  # DNS rebinding
    assert client.post("/api/undo", json={}, headers={"Origin": "http://evil.example"}).status_code == 403
    # A streamed body with no Content-Length is cut off at the bound too.
    chunks = iter([b'{"crop_ids": ["', b"x" * 200_000, b"x" * 200_000, b'"]}'])
    r = client.post("/api/decide", content=chunks, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert log(wd) == []


def curate(*args, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, env=env, **kw)


def start_server(wd: Workdir, *extra: str) -> tuple[subprocess.Popen, str]:
    """A real `curate review grid` process on a free port; returns it and its URL."""
    return start_curate_server("review", "grid", wd.root, "--port", "0", *extra)


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def test_a_killed_server_loses_no_decision(wd):
    proc, url = start_server(wd)
    try:
        ids = load_index(wd).crop_ids
        for cid in ids[:5]:
            post(url + "api/decide", {"crop_ids": [cid], "status": "rejected"})
        post(url + "api/decide", {"crop_ids": ids[5:15], "status": "accepted", "origin": "accept-page"})
        post(url + "api/undo", {})
        post(url + "api/decide", {"crop_ids": [ids[20]], "status": "accepted"})
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert latest_decisions(wd.review_db) == {**{c: "rejected" for c in ids[:5]}, **{c: "pending" for c in ids[5:15]},
                                              ids[20]: "accepted"}
    assert len(log(wd)) == 5 + 10 + 10 + 1


def test_grid_command_misuse_and_non_loopback_warning(tmp_path, wd):
    r = curate("review", "grid", str(tmp_path))
    assert r.returncode == 2 and "no crops.parquet" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = curate("review", "grid", str(wd.root), "--port", str(s.getsockname()[1]))
    assert r.returncode == 2 and "--port" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    proc, url = start_server(wd, "--host", "0.0.0.0")
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    assert "warning" in err and "not loopback" in err and url.startswith("http://127.0.0.1:")


def test_export_csv_json_and_history(wd, tmp_path):
    s = ReviewSession(wd)
    ids = s.index.crop_ids
    s.decide(ids[:2], "rejected")
    s.decide([ids[2]], "accepted")
    s.decide([ids[0]], "pending")
    s.close()
    r = curate("review", "export", str(wd.root), "--format", "csv", "--out", str(tmp_path / "d.csv"))
    assert r.returncode == 0 and "3 decided crops" in r.stdout
    rows = list(csv.DictReader(open(tmp_path / "d.csv")))
    assert [(x["crop_id"], x["status"], x["decisions"]) for x in rows] == [
        (ids[0], "pending", "2"), (ids[1], "rejected", "1"), (ids[2], "accepted", "1")]
    assert rows[1]["post_id"] == "1000" and rows[1]["file"].startswith("crops/")
    r = curate("review", "export", str(wd.root), "--format", "json", "--status", "rejected")
    assert [x["crop_id"] for x in json.loads(r.stdout)] == [ids[1]] and "1 decided crops" in r.stderr
    r = curate("review", "export", str(wd.root), "--format", "json", "--history")
    hist = json.loads(r.stdout)
    assert [x["seq"] for x in hist] == [1, 2, 3, 4] and hist[3]["status"] == "pending"


def test_contact_sheet(wd, tmp_path):
    out = tmp_path / "sheet.png"
    r = curate("review", "sheet", str(wd.root), "--status", "rejected", "--out", str(out))
    assert r.returncode == 0 and "no crop is rejected" in r.stdout and not out.exists()
    s = ReviewSession(wd)
    s.decide(s.index.crop_ids[:7], "rejected")
    s.close()
    r = curate("review", "sheet", str(wd.root), "--out", str(out), "--columns", "5", "--tile-width", "32")
    assert r.returncode == 0 and "7 of 7 rejected" in r.stdout, r.stderr
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (4 + 5 * 36, 4 + 2 * (64 + 14 + 4))
    r = curate("review", "sheet", str(wd.root), "--out", str(out), "--reason", "nope")
    assert r.returncode == 2 and "--reason" in r.stderr


def test_listening_socket_is_tcp_so_asyncio_sets_nodelay():
    from curate.core.web import bind_socket, is_loopback

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # else keep-alive responses stall ~40 ms (Nagle)
    finally:
        sock.close()
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_landmarks_become_crop_fractions_and_an_aligned_crop_has_level_eyes(tmp_path):
    import math

    import pyarrow as pa

    from curate.core.workdir import LANDMARK_FIELDS, crops_schema
    from curate.review.session import _landmark_fractions

    wd = make_review_workdir(tmp_path / "w", n=2, scores=False)
    t = pq.read_table(wd.crops_table)
    # crop 0: upright box (0, 0, 100, 200); crop 1: the same box turned by 30 degrees about its centre
    a = math.radians(30)
    cx, cy = 50.0, 100.0

    def turned(x, y):  # a point given in the upright crop, where it lies in the source when the box is turned
        dx, dy = x - cx, y - cy
        return cx + dx * math.cos(a) - dy * math.sin(a), cy + dx * math.sin(a) + dy * math.cos(a)

    upright = {"left_eye": (70, 50), "right_eye": (30, 50), "nose": (50, 62), "mouth": (50, 75), "chin": (50, 90)}
    cols = {f.name: [None, None] for f in pa.schema(LANDMARK_FIELDS)}
    for name, (x, y) in upright.items():
        tx, ty = turned(x, y)
        cols[f"{name}_x"], cols[f"{name}_y"] = [x, tx], [y, ty]
    cols["crop_angle"] = [0.0, 30.0]
    for name, v in {"crop_x": [0, 0], "crop_y": [0, 0], "crop_w": [100, 100], "crop_h": [200, 200]}.items():
        t = t.set_column(t.schema.get_field_index(name), name, pa.array(v, pa.int32()))
    for f in pa.schema(LANDMARK_FIELDS):
        t = t.append_column(f, pa.array(cols[f.name], f.type))
    pq.write_table(t.cast(crops_schema(True)), wd.crops_table)
    fr = _landmark_fractions(wd, pq.read_table(wd.crops_table), None)
    assert fr.shape == (2, 5, 2)
    assert np.allclose(fr[0], fr[1], atol=1e-4)  # turned back, the aligned crop's points are the upright ones
    assert np.allclose(fr[0, 0], [0.7, 0.25]) and abs(fr[1, 0, 1] - fr[1, 1, 1]) < 1e-4  # eyes level
