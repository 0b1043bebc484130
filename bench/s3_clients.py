"""Benchmark: a dedup of a workdir on an S3 bucket, with one boto3 client per call (Beam as it ships)
against one per option set (curate.beam.s3clients).

The bucket is moto's S3 server on this machine (curate.testing.objectstore), so the time is the
client-side cost, not a network's: a real bucket adds its round trips to both sides. The workdir is
bench/review.py's kind (curate.testing.review: N crops, crops.parquet, scores.parquet), uploaded
once. In alternating rounds, each in a fresh process (botocore's caches start cold, as on a worker):

  per-call   Beam's S3FileSystem as it ships: a new boto3 Session and client for each exists, match,
             open, rename (curate.beam.s3clients.uninstall())
  shared     the same dedup with curate.beam.s3clients installed, as curate runs it

Both run `BeamEngine("FnApiRunner", ...)` (the in-process runner: the pipeline's own start-up is the
same on both sides). Prints each side's median time, the clients each made, and shared's time as a
fraction of per-call's, and checks both wrote the same dedup table.

    python bench/s3_clients.py                 # 60 crops, 3 rounds
    python bench/s3_clients.py --crops 20 --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.testing.process import in_fresh_process  # noqa: E402


def _dedup(side: str, beam_options: list[str], work: str, q) -> None:
    import boto3.session

    from curate.beam import s3clients
    from curate.beam.engine import BeamEngine
    from curate.dedup import DedupConfig

    if side == "per-call":
        s3clients.uninstall()
    made = [0]
    real_client = boto3.session.Session.client

    def counted(self, *args, **kwargs):
        made[0] += 1
        return real_client(self, *args, **kwargs)

    boto3.session.Session.client = counted
    engine = BeamEngine("FnApiRunner", beam_options)
    t = time.perf_counter()
    engine.dedup(work, DedupConfig(), workers=1, progress=False)
    seconds = time.perf_counter() - t
    from apache_beam.io.filesystems import FileSystems

    import hashlib
    import io

    import pyarrow.parquet as pq

    with FileSystems.open(f"{work}/dedup.parquet") as f:
        rows = pq.read_table(io.BytesIO(f.read())).to_pylist()
    digest = hashlib.sha256(repr(sorted(rows, key=repr)).encode()).hexdigest()
    q.put((seconds, made[0], digest))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from curate.testing.objectstore import S3Server
    from curate.testing.review import make_review_workdir

    server = S3Server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = make_review_workdir(Path(tmp) / "w", n=args.crops)
            times: dict[str, list[float]] = {"per-call": [], "shared": []}
            clients: dict[str, int] = {}
            tables = set()
            for r in range(args.rounds):
                for side in ("per-call", "shared") if r % 2 == 0 else ("shared", "per-call"):
                    work = server.bucket(f"bench-{r}-{side.replace('-', '')}") + "/w"
                    server.upload_tree(local.root, work)
                    seconds, made, digest = in_fresh_process(_dedup, side, server.beam_options, work)
                    times[side].append(seconds)
                    clients[side] = made
                    tables.add(digest)
                    print(f"round {r + 1}: {side:8s} {seconds:6.2f} s, {made} boto3 clients", flush=True)
    finally:
        server.stop()
    per_call, shared = (statistics.median(times[s]) for s in ("per-call", "shared"))
    print(f"dedup of {args.crops} crops on a local S3 server, median of {args.rounds}:")
    print(f"  per-call (Beam as it ships) {per_call:6.2f} s  {clients['per-call']} clients")
    print(f"  shared (curate)             {shared:6.2f} s  {clients['shared']} clients")
    print(f"  shared / per-call = {shared / per_call:.2f}  ({per_call / shared:.1f}x faster)")
    print("  same dedup table on both sides" if len(tables) == 1 else "  DIFFERENT dedup tables")


if __name__ == "__main__":
    main()
