"""curate explore's web layer without a browser: the Host and same-origin refusals, bounded and checked
requests (a 4xx with one line, never a 500), PNGs that carry their latent, and the command's misuse.

The app runs in-process (Starlette's TestClient) over a real Explorer of a tiny run (curate.testing.runs).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from PIL import Image  # noqa: E402

from curate.core.web import allowed_hosts  # noqa: E402
from curate.explore import Explorer  # noqa: E402
from curate.explore.latent import read_png  # noqa: E402
from curate.testing.runs import make_run  # noqa: E402

from conftest import assert_one_line_error, run_curate  # noqa: E402

URL = "http://127.0.0.1:8766"


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    return Explorer(make_run(tmp_path_factory.mktemp("run") / "00000-tiny", height=32, width=16))


@pytest.fixture
def client(ex):
    from starlette.testclient import TestClient

    from curate.explore.app import create_app

    app = create_app(ex, allowed_hosts=allowed_hosts("127.0.0.1"))
    with TestClient(app, base_url=URL) as c:
        c.session = app.app.state.session
        yield c


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def generate(client, seeds="1-4", psi=0.7) -> list[int]:
    r = client.post("/api/generate", json={"seeds": seeds, "psi": psi})
    assert r.status_code == 200, r.text
    return [im["id"] for im in r.json()["images"]]


def test_a_foreign_host_is_refused_on_every_route(client):
    for path in ("/", "/api/state", "/static/explore.js", "/img/1.png"):
        r = client.get(path, headers={"Host": "evil.example:8766"})
        assert r.status_code == 403 and "unexpected Host" in r.json()["error"], path
    r = client.post("/api/generate", json={"seeds": "1"}, headers={"Host": "evil.example"})
    assert r.status_code == 403 and not client.session.images
    for host in ("127.0.0.1:8766", "localhost:8766"):
        assert client.get("/", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Origin": "http://127.0.0.1:9999"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"}])
def test_a_cross_origin_post_is_refused_and_changes_nothing(client, ex, headers):
    ids = generate(client, "1-4")
    held = len(client.session.images)
    posts = [("/api/generate", {"seeds": "9"}),
             ("/api/directions/mark", {"name": "evil", "with": ids[:2], "without": ids[2:]}),
             ("/api/edits/save", {"edit": {"name": "evil", "level": 3, "channels": [1], "region": [0, 0, 1, 1],
                                           "multiplier": 2}})]
    for path, body in posts:
        r = client.post(path, json=body, headers=headers)
        assert r.status_code == 403 and "refused" in r.json()["error"], (path, r.text)
    r = client.post("/api/drop", content=client.get(f"/img/{ids[0]}.png").content,
                    headers={"Content-Type": "image/png", **headers})
    assert r.status_code == 403
    r = client.post("/api/directions/import", content=b'{"directions": []}', headers=headers)
    assert r.status_code == 403
    assert len(client.session.images) == held and not (ex.run_dir / "explore").exists()
    ok = client.post("/api/generate", json={"seeds": "9"}, headers={"Origin": URL, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200


def test_a_generated_png_carries_its_latent_and_dropping_it_brings_the_image_back(client, ex):
    i = generate(client, "5", psi=0.5)[0]
    png = client.get(f"/img/{i}.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    found = read_png(png.content)
    assert found.latent.seed == 5 and found.latent.psi == 0.5
    assert found.latent.w.tobytes() == ex.from_seed(5, 0.5).w.tobytes()
    r = client.post("/api/drop", content=png.content, headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.json()["image"]["label"] == "dropped"
    again = client.get(r.json()["image"]["url"]).content
    assert np.array_equal(pixels(again), pixels(png.content))


def test_requests_the_run_cannot_serve_are_a_4xx_with_one_line(client):
    ids = generate(client, "1-4")
    plain = io.BytesIO()
    Image.new("RGB", (8, 16), (200, 10, 10)).save(plain, "PNG")
    cases = [
        (client.post("/api/generate", content=b'{"seeds": "1"}', headers={"Content-Type": "text/plain"}), 415, "JSON"),
        (client.post("/api/generate", content=b"[" * 10_000, headers={"Content-Type": "application/json"}), 400, "nests"),
        (client.post("/api/generate", content=b"{" + b" " * 300_000 + b"}", headers={"Content-Type": "application/json"}), 413, "over"),
        (client.post("/api/generate", json=[1, 2]), 400, "object"),
        (client.post("/api/generate", json={"seeds": "5-1"}), 400, "backwards"),
        (client.post("/api/generate", json={"seeds": "0-100000"}), 400, "at most"),
        (client.post("/api/generate", json={"seeds": "1", "psi": "high"}), 400, "psi"),
        (client.post("/api/drop", content=plain.getvalue(), headers={"Content-Type": "image/png"}), 400, "carries no latent"),
        (client.post("/api/drop", content=b"not a png", headers={"Content-Type": "image/png"}), 400, "is not an image"),
        (client.post("/api/drop", content=b"x", headers={"Content-Type": "image/jpeg"}), 415, "PNG"),
        (client.post("/api/derive", json={"id": 10 ** 6}), 404, "not held"),
        (client.post("/api/derive", json={"id": ids[0], "amounts": {"nope": 1}}), 404, "no direction"),
        (client.post("/api/derive", json={"id": ids[0], "edits": [{"level": 99, "channels": [0],
                                                                    "region": [0, 0, 1, 1], "multiplier": 1}]}), 400, "level"),
        (client.post("/api/derive", json={"id": ids[0], "edits": [{"level": 3, "channels": [999],
                                                                    "region": [0, 0, 1, 1], "multiplier": 1}]}), 400, "channels"),
        (client.post("/api/derive", content=json.dumps({"id": ids[0], "edits": [{"level": 3, "channels": [1],
                     "region": [0, 0, 1, 1], "multiplier": float("nan")}]}), headers={"Content-Type": "application/json"}),
         400, "multiplier"),
        (client.post("/api/derive", json={"id": ids[0], "edits": [{"level": 3, "channels": [1],
                                                                    "region": [0.5, 0, 0.2, 1], "multiplier": 1}]}), 400, "region"),
        (client.post("/api/interpolate", json={"a": ids[0], "b": ids[1], "frames": 1000}), 400, "frames"),
        (client.post("/api/interpolate", json={"a": ids[0], "b": ids[1], "space": "q"}), 400, "space"),
        (client.post("/api/cell", json={"id": ids[0], "level": 3, "x": 50, "y": 0}), 400, "x must"),
        (client.post("/api/directions/mark", json={"name": "smile", "with": ids[:1], "without": ids[2:]}), 400, "at least 2"),
        (client.post("/api/directions/mark", json={"name": "../../etc", "with": ids[:2], "without": ids[2:]}), 400, "name"),
        (client.post("/api/directions/import", content=b"[{]"), 400, "not JSON"),
        (client.post("/api/edits/save", json={"edit": {"level": 3, "channels": [1], "region": [0, 0, 1, 1],
                                                       "multiplier": 1}}), 400, "name"),
        (client.get("/img/123456.png"), 404, "not held"),
        (client.get("/media/1.gif"), 404, "not held"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (status, words, r.status_code, r.text)
        text = r.json()["error"] if r.headers["content-type"].startswith("application/json") else r.text
        assert words in text and "\n" not in text, (words, text)


def test_the_command_refuses_other_hosts_and_what_is_no_run(tmp_path):
    r = run_curate("explore", str(tmp_path), "--host", "0.0.0.0")
    assert_one_line_error(r, "--host", "loopback", code=2)
    r = run_curate("explore", str(tmp_path / "nope"))
    assert_one_line_error(r, "not a folder", code=2)
    r = run_curate("explore", str(tmp_path), "--port", "0")
    assert_one_line_error(r, "explore")
