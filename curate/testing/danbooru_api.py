"""A local server shaped like the Danbooru API, for tests (no network in tests)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


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
