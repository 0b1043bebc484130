"""Benchmark: `curate pack` against NVlabs' exporter loop, with the disk's write speed as the limit.

Generates (once, cached) a seeded workdir of 512x256 PNG crops (smooth shapes plus noise, so the PNGs
are about as large as real portraits), then in the same run, alternately and each in a fresh
interpreter:
  baseline  NVlabs dataset_tool's loop: Pillow open, np.asarray, CHW, float32 2x2 average per level,
            tf.train.Example, tf.io.TFRecordWriter per level; one process
  curate    curate.dataset.pack.run_pack (decode + levels in workers, ordered writes, hashes, fsync, manifest)
and the disk's sequential write speed (8 MB blocks, fsync) for as many bytes as a dataset takes.
Checks once that both wrote the same pixels, and prints crops/s, MB/s and the ratio.

    python bench/pack.py                      # 2000 crops, 3 rounds
    python bench/pack.py --crops 500 --rounds 1

Timings on a shared VM are noisy: the median of the rounds is reported, and every round with it.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.testing.process import in_fresh_process  # noqa: E402

import numpy as np  # noqa: E402

from curate.dataset import schema as R  # noqa: E402
from curate.dataset.pack import PackConfig, run_pack, shuffled_order  # noqa: E402
from curate.core.workdir import CROPS_SCHEMA, Workdir  # noqa: E402


def _crop(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:512, 0:256].astype(np.float32)
    img = np.zeros((512, 256, 3), np.float32) + rng.uniform(40, 220, 3)
    for _ in range(12):  # flat-coloured ellipses with soft noise: anime-like areas and edges
        cy, cx, ry, rx = rng.uniform(0, 512), rng.uniform(0, 256), rng.uniform(20, 160), rng.uniform(10, 90)
        img[((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 3, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def _write_crop(args: tuple[Path, int, str]) -> int:
    from PIL import Image

    root, i, rel = args
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_crop(i)).save(p)
    return p.stat().st_size


def make_workdir(root: Path, n: int) -> Workdir:
    """A seeded workdir of n 512x256 PNG crops and its crops.parquet, generated once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wd = Workdir(root)
    if wd.crops_table.exists():
        return wd
    ids = [f"{i}_0" for i in range(n)]
    files = [Workdir.crop_file(c) for c in ids]
    print(f"generating {n} crops into {root} ...", flush=True)
    with multiprocessing.Pool() as pool:
        sizes = pool.map(_write_crop, [(root, i, f) for i, f in enumerate(files)], chunksize=16)
    print(f"  mean PNG size {np.mean(sizes) / 1e3:.0f} kB")
    cols = {f.name: pa.array([0] * n, f.type) for f in CROPS_SCHEMA if pa.types.is_integer(f.type)}
    cols.update({f.name: pa.array([1.0] * n, f.type) for f in CROPS_SCHEMA if pa.types.is_floating(f.type)})
    cols.update(crop_id=pa.array(ids), source=pa.array(["bench"] * n), file=pa.array(files))
    tmp = root / ".crops.parquet.tmp"
    pq.write_table(pa.table(cols, schema=CROPS_SCHEMA), tmp)
    os.replace(tmp, wd.crops_table)
    return wd


def _run_baseline(root: str, out: str, q) -> None:
    """NVlabs dataset_tool.py create_from_images + TFRecordExporter, in TF 2 spelling."""
    import pyarrow.parquet as pq
    from PIL import Image

    tf = R.import_tensorflow()
    files = pq.read_table(Path(root) / "crops.parquet", columns=["file"]).column("file").to_pylist()
    t = time.perf_counter()
    order = shuffled_order(len(files), R.SEED)
    writers = []
    for lod in range(R.log2(512) - 1):
        writers.append(tf.io.TFRecordWriter(f"{out}/base-r{R.log2(512) - lod:02d}.tfrecords"))
    for idx in order:
        img = np.asarray(Image.open(Path(root) / files[idx]))
        img = img.transpose([2, 0, 1])  # HWC => CHW
        for lod, w in enumerate(writers):
            if lod:
                img = img.astype(np.float32)
                img = (img[:, 0::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 0::2] + img[:, 1::2, 1::2]) * 0.25
            quant = np.rint(img).clip(0, 255).astype(np.uint8)
            ex = tf.train.Example(features=tf.train.Features(feature={
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=quant.shape)),
                "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[quant.tobytes()]))}))
            w.write(ex.SerializeToString())
    for w in writers:
        w.close()
    q.put(time.perf_counter() - t)


def _run_curate(root: str, out: str, workers: int | None, q) -> None:
    t = time.perf_counter()
    stats = run_pack(root, out, PackConfig(name="curate"), workers=workers, progress=False)
    q.put((time.perf_counter() - t, stats["workers"], sum(lv["bytes"] for lv in stats["levels"])))




def disk_write_mb_s(path: Path, nbytes: int) -> float:
    """Sequential write speed: 8 MB blocks of random bytes, fsync at the end, file removed."""
    block = np.random.default_rng(0).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    t = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(max(1, nbytes // len(block))):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    dt = time.perf_counter() - t
    size = path.stat().st_size
    path.unlink()
    return size / 1e6 / dt


def _pixels_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for rec in R.iter_records(f):
                img = R.decode_example(rec)
                h.update(str(img.shape).encode())
                h.update(img.tobytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--workers", type=int, default=None, help="curate's processes (default: one per core)")
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "curate-bench")
    args = ap.parse_args()

    wd = make_workdir(args.data_dir / f"pack-workdir-{args.crops}", args.crops)
    out_base, out_cur = args.data_dir / "pack-out-baseline", args.data_dir / "pack-out-curate"
    print(f"{args.crops} crops of 512x256, {os.cpu_count()} cores, rounds={args.rounds}")
    base_t, cur_t, disk = [], [], []
    for r in range(args.rounds):
        for d in (out_base, out_cur):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        bt = in_fresh_process(_run_baseline, str(wd.root), str(out_base))
        ct, workers, nbytes = in_fresh_process(_run_curate, str(wd.root), str(out_cur), args.workers)
        mbs = disk_write_mb_s(args.data_dir / "disk-probe.bin", nbytes)
        if r == 0:
            for lvl, paths in R.dataset_files(out_cur).items():
                if _pixels_digest(paths) != _pixels_digest([out_base / f"base-r{lvl:02d}.tfrecords"]):
                    sys.exit(f"MISMATCH at level r{lvl:02d}: curate and the baseline wrote different pixels")
            print("  both wrote the same pixels at every level")
        base_t.append(bt)
        cur_t.append(ct)
        disk.append(mbs)
        print(f"  round {r + 1}: baseline {bt:6.1f}s  curate {ct:6.1f}s  disk {mbs:,.0f} MB/s", flush=True)
    b, c, d = statistics.median(base_t), statistics.median(cur_t), statistics.median(disk)
    mb = nbytes / 1e6
    print(f"\noutput: {mb:,.0f} MB per run (8 levels, 512x256 .. 4x2)")
    print(f"  baseline (NVlabs loop, 1 process): {args.crops / b:7.1f} crops/s  {mb / b:7.1f} MB/s   "
          f"(runs {', '.join(f'{t:.1f}' for t in base_t)} s)")
    print(f"  curate pack ({workers} workers):        {args.crops / c:7.1f} crops/s  {mb / c:7.1f} MB/s   "
          f"(runs {', '.join(f'{t:.1f}' for t in cur_t)} s)")
    print(f"  disk sequential write (fsync):     {d / (mb / args.crops):7.1f} crops/s  {d:7.1f} MB/s   (the limit)")
    print(f"  ratio: {b / c:.2f}x the baseline, {mb / c / d:.0%} of the disk's write speed   target: >= 3x")
    shutil.rmtree(out_base, ignore_errors=True)
    shutil.rmtree(out_cur, ignore_errors=True)


if __name__ == "__main__":
    main()
