"""curate fetch against a local server shaped like the Danbooru API (no network in tests)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.fetch import Client, FetchError, FetchPlan, fetch
from curate.filter import FilterRules, run_filter


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 600), (seed * 40 % 256, 90, 160)).save(buf, "PNG")
    return buf.getvalue()


class FakeDanbooru:
    """Serves /posts.json (tags, limit, page=N or b<id>) and /data/<file>, newest first, like the API."""

    def __init__(self, n_posts: int = 7):
        self.files: dict[str, bytes] = {}
        self.posts = []
        self.requests: list[str] = []
        self.fail_next = 0
        for i in range(n_posts):
            pid = 5000 + i
            data = _png(i)
            md5 = hashlib.md5(data).hexdigest()
            post = {"id": pid, "created_at": f"2024-01-0{1 + i % 9}T10:00:00.000-05:00", "rating": "g",
                    "image_width": 300, "image_height": 600, "fav_count": 3 + i, "score": 2, "file_ext": "png",
                    "md5": md5, "tag_string": "1girl solo", "tag_string_general": "1girl solo",
                    "tag_string_character": "", "tag_string_copyright": "original", "tag_string_artist": "a",
                    "tag_string_meta": "", "is_deleted": False, "is_banned": False}
            if i == 2:
                post["md5"] = "0" * 32  # the served file will not match
            if i != 4:  # post 5004 is restricted: no file_url
                post["file_url"] = f"/data/{md5}.png"
                self.files[f"/data/{md5}.png"] = data
            self.posts.append(post)
        self.posts.sort(key=lambda p: -p["id"])

    def serve(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.requests.append(self.path)
                assert "curate/" in self.headers["User-Agent"]
                if fake.fail_next:
                    fake.fail_next -= 1
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                url = urllib.parse.urlparse(self.path)
                if url.path == "/posts.json":
                    q = urllib.parse.parse_qs(url.query)
                    limit, page = int(q["limit"][0]), q["page"][0]
                    if page.startswith("b"):
                        rows = [p for p in fake.posts if p["id"] < int(page[1:])][:limit]
                    else:
                        rows = fake.posts[(int(page) - 1) * limit:int(page) * limit]
                    body = json.dumps(rows).encode()
                elif url.path in fake.files:
                    body = fake.files[url.path]
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for p in self.posts:  # the API gives absolute file addresses
            if "file_url" in p and p["file_url"].startswith("/"):
                p["file_url"] = base + p["file_url"]
        return server, base


@pytest.fixture
def api():
    fake = FakeDanbooru()
    server, base = fake.serve()
    yield fake, base
    server.shutdown()


def quick() -> Client:
    return Client(rate=1000, backoff=0.001)


def test_fetch_writes_the_dump_layout_and_verifies_files(api, tmp_path):
    fake, base = api
    fake.fail_next = 1  # one transient 503 first: retried
    stats = fetch(tmp_path, FetchPlan(limit=6, per_page=4, base_url=base), quick(), progress=False)
    assert stats["posts"] == 6
    assert stats["files"] == {"downloaded": 4, "md5_mismatch": 1, "no_file_url": 1}
    pages = sorted((tmp_path / "metadata").glob("posts-*.json"))
    assert len(pages) == 2
    ids = [json.loads(l)["id"] for p in pages for l in p.open()]
    assert ids == [5006, 5005, 5004, 5003, 5002, 5001]  # newest first, paged with b<id>
    assert (tmp_path / "original/0006/5006.png").is_file()
    assert not (tmp_path / "original/0002/5002.png").exists()  # md5 mismatch: never written
    assert any("page=b5003" in r for r in fake.requests)
    # the rest of the pipeline reads it unchanged
    out = tmp_path / "f.parquet"
    fstats = run_filter([tmp_path], out, FilterRules(min_height=512), dataset_root=tmp_path, progress=False, workers=1)
    assert sorted(pq.read_table(out).column("id").to_pylist()) == [5001, 5003, 5005, 5006]
    assert fstats["removed"] == {"missing_file": 2}


def test_a_rerun_resumes_and_then_does_nothing(api, tmp_path):
    fake, base = api
    plan = FetchPlan(limit=6, per_page=4, base_url=base)
    fetch(tmp_path, plan, quick(), progress=False)
    (tmp_path / "original/0006/5006.png").unlink()  # as if killed before this file
    fake.requests.clear()
    stats = fetch(tmp_path, plan, quick(), progress=False)
    assert stats["files"]["downloaded"] == 1 and stats["files"]["already_present"] == 3
    assert not any("posts.json" in r for r in fake.requests)  # paging was complete
    fake.requests.clear()
    fetch(tmp_path, plan, quick(), progress=False)
    assert [r for r in fake.requests if "/data/" in r] == [fake.posts[4]["file_url"].split(base)[1]]  # the md5 mismatch retried only


def test_other_settings_in_the_same_folder_are_refused(api, tmp_path):
    _, base = api
    fetch(tmp_path, FetchPlan(limit=2, per_page=2, base_url=base), quick(), progress=False)
    with pytest.raises(FetchError, match="other settings"):
        fetch(tmp_path, FetchPlan(tags="hat", limit=2, per_page=2, base_url=base), quick(), progress=False)


def test_no_network_is_one_clear_error(tmp_path):
    # port 9 on loopback: nothing listens, the connection is refused at once
    with pytest.raises(FetchError, match="DANBOORU=/path/to/danbooru2018"):
        fetch(tmp_path, FetchPlan(limit=2, base_url="http://127.0.0.1:9"), Client(rate=1000, retries=1, backoff=0.001),
              progress=False)
