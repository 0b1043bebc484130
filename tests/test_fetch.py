"""curate fetch against a local server shaped like the Danbooru API (no network in tests)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from curate.testing.danbooru_api import FakeDanbooru

from curate.fetch.client import Client, FetchError, FetchPlan, fetch
from curate.filter.runner import FilterRules, run_filter


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
    out = tmp_path.with_name(tmp_path.name + "-filtered.parquet")  # never inside the dump it reads
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


# ---- the one HTTP client (curate.core.http), against a scripted server on loopback ----------------------

@pytest.fixture
def scripted():
    """A loopback server answering each GET with the next (status, headers) of a script, then 200 b'ok'."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    script: list[tuple[int, dict]] = []
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen.append(self.headers["User-Agent"])
            status, headers = script.pop(0) if script else (200, {})
            body = b"ok" if status == 200 else b""
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield script, seen, f"http://127.0.0.1:{server.server_address[1]}/x"
    server.shutdown()
    server.server_close()


def test_retry_after_as_an_http_date_is_honoured(scripted):
    import email.utils
    from datetime import datetime, timedelta, timezone

    from curate.core.http import retry_after_seconds

    script, seen, url = scripted
    when = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    script += [(429, {"Retry-After": when}), (503, {"Retry-After": "7"})]
    waits: list[float] = []
    client = Client(rate=0, backoff=0.001, sleep=waits.append)
    assert client.get(url) == b"ok" and client.requests == 3
    assert 27 < waits[0] <= 30 and waits[1] == 7.0  # the date, then delta-seconds
    assert all(ua.startswith("curate/") for ua in seen)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: at once
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_transient_failures_back_off_exponentially_then_succeed(scripted):
    script, _, url = scripted
    script += [(500, {}), (502, {}), (503, {})]
    waits: list[float] = []
    client = Client(rate=0, backoff=0.5, sleep=waits.append)
    assert client.get(url) == b"ok"
    assert waits == [0.5, 1.0, 2.0] and client.requests == 4


def test_a_404_is_not_retried(scripted):
    import urllib.error

    script, _, url = scripted
    script += [(404, {})]
    waits: list[float] = []
    client = Client(rate=0, backoff=0.5, sleep=waits.append)
    with pytest.raises(urllib.error.HTTPError) as e:
        client.get(url)
    assert e.value.code == 404 and client.requests == 1 and waits == []


def test_a_killed_file_download_resumes_from_its_part_file(api, tmp_path):
    fake, base = api
    plan = FetchPlan(limit=6, per_page=4, base_url=base)
    fetch(tmp_path, plan, quick(), progress=False)
    dest = tmp_path / "original/0006/5006.png"
    whole = dest.read_bytes()
    dest.unlink()
    dest.with_name("5006.png.part").write_bytes(whole[:100])  # as if killed mid-file
    stats = fetch(tmp_path, plan, quick(), progress=False)
    assert stats["files"]["downloaded"] == 1 and dest.read_bytes() == whole  # the fake ignores Range: read again
    assert not dest.with_name("5006.png.part").exists()
