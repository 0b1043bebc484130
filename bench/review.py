"""Benchmark: `curate review grid` on 100,000 crops against a naive grid server, in the same run.

Builds (once, cached under work/bench-review/) a workdir of 100,000 crops with scores; the crop rows
share 2,000 generated 256x512 PNGs, but each row has its own crop_id and so its own thumbnail. Then,
alternating for a few rounds, with real server processes on loopback:

  first page   GET the grid page, then its 200 thumbnails over 6 connections (as a browser does)
               - curate, cold: WORKDIR/.thumbs emptied first, so every thumbnail is made
               - curate, warm: the same page again (thumbnails from the disk cache)
               - baseline: the seed's approach: every request reads the tables, renders every row as
                 an <img> of the full-size crop; the first page is that HTML plus the first 200 images
  decisions/s  sequential single-crop POSTs, each committed (curate: SQLite WAL, fsync per decision);
               baseline: the whole decision list rewritten to a JSON file per decision

    python bench/review.py                 # 100k crops, 3 rounds
    python bench/review.py --crops 20000 --rounds 1

Prints medians (this VM is shared and noisy) and the ratio to the baseline. Target: warm first page < 1 s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.testing.review import make_review_workdir  # noqa: E402
from curate.core.workdir import Workdir  # noqa: E402

PAGE = 200


def naive_app(workdir: Path):
    """The baseline server: tables read and every row rendered per request; full-size images."""
    import pandas as pd
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.routing import Route

    wd = Workdir(workdir)
    files = pd.read_parquet(wd.crops_table, columns=["file"])["file"].tolist()
    decisions_file = wd.root / "naive-decisions.json"

    def grid(request):
        crops = pd.read_parquet(wd.crops_table)
        scores = pd.read_parquet(wd.scores_table, columns=["crop_id", "person"])
        rows = crops.merge(scores, on="crop_id", how="left").reset_index().sort_values("person")
        tiles = "".join(f'<img src="/img/{i}" title="{c} {p:.3f}">' for i, c, p in
                        zip(rows["index"], rows["crop_id"], rows["person"].fillna(-1)))
        return HTMLResponse(f"<html><body>{tiles}</body></html>")

    def image(request):
        return FileResponse(wd.root / files[request.path_params["i"]])

    async def decide(request):
        body = await request.json()
        done = json.loads(decisions_file.read_text()) if decisions_file.exists() else {}
        done[body["crop_id"]] = body["status"]
        tmp = decisions_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(done, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, decisions_file)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/", grid), Route("/img/{i:int}", image),
                             Route("/decide", decide, methods=["POST"])])


def serve_naive(workdir: Path) -> None:
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, as curate
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"open http://127.0.0.1:{sock.getsockname()[1]}/", flush=True)
    uvicorn.Server(uvicorn.Config(naive_app(workdir), log_level="warning")).run(sockets=[sock])


def start(cmd: list[str]) -> tuple[subprocess.Popen, str, float]:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if "http://" in line:
            return proc, line.split("open ")[1].split()[0].rstrip("/"), time.perf_counter() - t0
    raise SystemExit(f"server did not start: {cmd}")


class Client:
    """Keep-alive HTTP/1.1, one connection per thread (a browser opens 6 per host).

    (Plain http.client: httpx measured ~50 ms per request on this VM, 30x what the servers take.)
    """

    def __init__(self, url: str):
        self.host, self.port = url.split("//")[1].split(":")
        self.local = threading.local()

    def request(self, method: str, path: str, body: dict | None = None) -> bytes:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=120)
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        content = r.read()
        if r.status != 200:
            raise SystemExit(f"{method} {path}: HTTP {r.status} {content[:200]!r}")
        return content


def first_page(url: str, pattern: str, limit: int = PAGE) -> tuple[float, int]:
    """Seconds to GET the page and its first `limit` images over 6 fresh connections; bytes received."""
    client = Client(url)
    t0 = time.perf_counter()
    html = client.request("GET", "/").decode()
    srcs = re.findall(pattern, html)[:limit]
    with ThreadPoolExecutor(6) as pool:
        sizes = list(pool.map(lambda s: len(client.request("GET", s)), srcs))
    assert len(srcs) == limit, len(srcs)
    return time.perf_counter() - t0, len(html) + sum(sizes)


def decisions_per_s(url: str, ids: list[str], naive: bool) -> float:
    client = Client(url)
    t0 = time.perf_counter()
    for k, cid in enumerate(ids):
        status = "rejected" if k % 2 == 0 else "accepted"
        if naive:
            client.request("POST", "/decide", {"crop_id": cid, "status": status})
        else:
            client.request("POST", "/api/decide", {"crop_ids": [cid], "status": status})
    return len(ids) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, default=100_000)
    ap.add_argument("--images", type=int, default=2_000, help="distinct PNG files shared by the crop rows")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decisions", type=int, default=300, help="POSTs per round and server")
    ap.add_argument("--cache", type=Path, default=ROOT / "work" / "bench-review")
    ap.add_argument("--serve-naive", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_naive:
        return serve_naive(args.serve_naive)

    root = args.cache / f"{args.crops}-{args.images}"
    t0 = time.perf_counter()
    wd = make_review_workdir(root, n=args.crops, images=args.images, seed=1)
    print(f"workdir {root}: {args.crops:,} crops over {args.images:,} PNGs ready in {time.perf_counter() - t0:.1f}s")
    ids = __import__("pyarrow.parquet", fromlist=["x"]).read_table(wd.crops_table, columns=["crop_id"])["crop_id"].to_pylist()

    res: dict[str, list[float]] = {k: [] for k in ("start", "cold", "warm", "naive", "dec", "naive_dec", "kb", "naive_kb")}
    for r in range(args.rounds):
        wd.review_db.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(wd.review_db) + suffix).unlink(missing_ok=True)
        shutil.rmtree(wd.root / ".thumbs", ignore_errors=True)
        (wd.root / "naive-decisions.json").unlink(missing_ok=True)
        sample = ids[r * args.decisions * 2::2][:args.decisions]

        # --no-rank: the grid's background ranking would measure the 100k crops' image features on the
        # same cores while the pages are timed; this bench measures the serving
        proc, url, started = start([sys.executable, "-m", "curate", "review", "grid", str(root), "--port", "0", "--no-rank"])
        try:
            cold, kb = first_page(url, r'src="(/thumb/[^"]+)"')
            warm, _ = first_page(url, r'src="(/thumb/[^"]+)"')
            dec = decisions_per_s(url, sample, naive=False)
        finally:
            proc.terminate()
            proc.wait()
        proc, nurl, _ = start([sys.executable, __file__, "--serve-naive", str(root)])
        try:
            naive, nkb = first_page(nurl, r'src="(/img/\d+)"')
            ndec = decisions_per_s(nurl, sample, naive=True)
        finally:
            proc.terminate()
            proc.wait()
        for k, v in zip(res, (started, cold, warm, naive, dec, ndec, kb / 1e3, nkb / 1e3)):
            res[k].append(v)
        print(f"round {r + 1}: start {started:.2f}s  first page cold {cold:.2f}s warm {warm:.3f}s "
              f"(baseline {naive:.2f}s)  decisions/s {dec:.0f} (baseline {ndec:.0f})", flush=True)

    med = {k: statistics.median(v) for k, v in res.items()}
    spread = {k: (min(v), max(v)) for k, v in res.items()}
    print(f"\n{args.crops:,} crops, median of {args.rounds} round(s) [min-max]:")
    print(f"  server start (tables loaded):      {med['start']:.2f}s")
    print(f"  first page, 200 thumbs, cold cache: {med['cold']:.2f}s [{spread['cold'][0]:.2f}-{spread['cold'][1]:.2f}]"
          f"  {med['kb']:.0f} kB  ratio to baseline {med['naive'] / med['cold']:.1f}x faster")
    print(f"  first page, 200 thumbs, warm cache: {med['warm']:.3f}s [{spread['warm'][0]:.3f}-{spread['warm'][1]:.3f}]"
          f"  ratio to baseline {med['naive'] / med['warm']:.1f}x faster  (target < 1 s: "
          f"{'met' if med['warm'] < 1 else 'NOT met'})")
    print(f"  baseline first page (all rows, full-size images): {med['naive']:.2f}s  {med['naive_kb']:.0f} kB")
    print(f"  decisions/s (one commit each):      {med['dec']:.0f}  vs baseline {med['naive_dec']:.0f}"
          f"  ratio {med['dec'] / med['naive_dec']:.1f}x")


if __name__ == "__main__":
    main()
