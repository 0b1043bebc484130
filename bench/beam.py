"""Benchmark: the crop and pack stages on Beam's local multi-process runner against the local engine.

The corpus is bench/crop.py's (the real Danbooru sample upscaled to Danbooru-original sizes, cached).
In alternating rounds, each in a fresh process with the same number of workers:

  local   curate's own process pool (run_crop / run_pack), as `curate crop` and `curate pack` run
  beam    the same stage as a Beam pipeline (curate.beam), DirectRunner in multi_processing mode with
          --direct_num_workers equal to the local worker count; the pipeline's start-up (Beam starts
          its worker processes) is inside the time: a user waits for it too

Prints each engine's throughput, Beam's as a fraction of the local engine's (target >= 0.7), checks
that both wrote the same bytes, and projects the crop stage's time for N Beam workers from the
measured rate per worker (linear: no shuffle or storage limit is modelled, so read it as a floor).

    python bench/beam.py                      # 100 images, 3 rounds, 2 workers
    python bench/beam.py --images 40 --rounds 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from curate.testing.process import in_fresh_process  # noqa: E402


def _crop_config():
    from curate.crop.cascades import ANIMEFACE_FILE, CASCADE_DIR, sha256_of
    from curate.crop.cropper import CropConfig

    cascade = CASCADE_DIR / ANIMEFACE_FILE
    return CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade))


def _beam_options(workers: int):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                            f"--direct_num_workers={workers}", "--default_sdk_harness_log_level=ERROR"])


def _crop(engine: str, corpus: str, out: str, workers: int, q) -> None:
    from curate.crop.runner import open_sources, run_crop

    sources, _ = open_sources(corpus)
    config = _crop_config()
    t = time.perf_counter()
    if engine == "local":
        run_crop(sources, out, config, workers=workers, progress=False)
    else:
        import apache_beam as beam

        from curate.beam.crop import CropTransform

        with beam.Pipeline(options=_beam_options(workers)) as p:
            _ = p | CropTransform(sources, out, config)
    q.put(time.perf_counter() - t)


def _pack(engine: str, workdir: str, out: str, workers: int, q) -> None:
    from curate.dataset.pack import PackConfig, prepare, run_pack

    t = time.perf_counter()
    if engine == "local":
        run_pack(workdir, out, PackConfig(), workers=workers, progress=False)
    else:
        import apache_beam as beam

        from curate.beam.pack import PackTransform

        with beam.Pipeline(options=_beam_options(workers)) as p:
            _ = p | PackTransform(prepare(workdir, out, PackConfig()))
    q.put(time.perf_counter() - t)


def _startup(workers: int, q) -> None:
    """Beam's fixed cost: a pipeline of one element on the same runner (worker processes started)."""
    import apache_beam as beam

    t = time.perf_counter()
    with beam.Pipeline(options=_beam_options(workers)) as p:
        _ = p | beam.Create([1]) | beam.Reshuffle() | beam.Map(lambda x: x)
    q.put(time.perf_counter() - t)


def _pack_corpus(crop_workdir: Path, dest: Path, copies: int) -> int:
    """The crops of the crop rounds, each repeated `copies` times under new ids: enough crops for pack."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.core.workdir import Workdir

    if (dest / "crops.parquet").exists():
        return pq.read_metadata(dest / "crops.parquet").num_rows
    table = pq.read_table(crop_workdir / "crops.parquet")
    rows = []
    for c in range(copies):
        for row in table.to_pylist():
            new_id = f"{row['crop_id']}-{c}"
            rel = Workdir.crop_file(new_id)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(crop_workdir / row["file"], dest / rel)
            rows.append({**row, "crop_id": new_id, "file": rel})
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), dest / "crops.parquet")
    return len(rows)




def _digest(workdir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((workdir / "crops").rglob("*.png")):
        h.update(p.relative_to(workdir).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "curate-bench")
    ap.add_argument("--stages", default="crop,pack", help="which stages to measure (pack reuses the crops the crop rounds cached)")
    ap.add_argument("--pack-crops", type=int, default=2000, help="crops for the pack rounds (the crop rounds' crops, repeated)")
    ap.add_argument("--project-images", type=int, default=1_000_000,
                    help="images in the projection table (the crop stage's input for a whole dump)")
    args = ap.parse_args()

    from crop import make_corpus  # bench/crop.py's corpus, shared so both benches measure the same images

    corpus = args.cache / f"crop-corpus-n{args.images}-seed{args.seed}"
    make_corpus(corpus, args.images, args.seed)
    times: dict[str, list[float]] = {"local": [], "beam": []}
    digests: dict[str, str] = {}
    keep = args.cache / f"beam-bench-crops-n{args.images}-seed{args.seed}"
    stages = set(args.stages.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds if "crop" in stages or not keep.exists() else 0):
            for engine in ("local", "beam") if r % 2 == 0 else ("beam", "local"):
                out = Path(tmp) / f"{engine}-{r}"
                seconds = in_fresh_process(_crop, engine, str(corpus), str(out), args.workers)
                times[engine].append(seconds)
                digests[engine] = _digest(out)
                if engine == "local" and not keep.exists():
                    shutil.copytree(out, keep)
                shutil.rmtree(out)
            print(f"  crop round {r + 1}: local {times['local'][-1]:6.1f}s  beam {times['beam'][-1]:6.1f}s", flush=True)
    assert digests.get("local") == digests.get("beam"), "the engines wrote different crops"
    rate = {e: args.images / statistics.median(ts) if ts else float("nan") for e, ts in times.items()}
    ratio = rate["beam"] / rate["local"]

    import pyarrow.parquet as pq

    per_crop = max(1, pq.read_metadata(keep / "crops.parquet").num_rows)
    pack_wd = args.cache / f"beam-bench-pack-{args.pack_crops}"
    n_crops = _pack_corpus(keep, pack_wd, -(-args.pack_crops // per_crop))
    pack_times: dict[str, list[float]] = {"local": [], "beam": []}
    records: dict[str, str] = {}
    startup = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for engine in ("local", "beam") if r % 2 == 0 else ("beam", "local"):
                out = Path(tmp) / f"pack-{engine}-{r}"
                pack_times[engine].append(in_fresh_process(_pack, engine, str(pack_wd), str(out), args.workers))
                h = hashlib.sha256()
                for f in sorted(out.glob("*.tfrecords")):
                    h.update(f.read_bytes())
                records[engine] = h.hexdigest()
                shutil.rmtree(out)
            startup.append(in_fresh_process(_startup, args.workers))
            print(f"  pack round {r + 1}: local {pack_times['local'][-1]:6.1f}s  beam {pack_times['beam'][-1]:6.1f}s"
                  f"  (an empty Beam pipeline: {startup[-1]:.1f}s)", flush=True)
    assert records["local"] == records["beam"], "the engines wrote different records"
    fixed = statistics.median(startup)
    prate = {e: n_crops / statistics.median(ts) for e, ts in pack_times.items()}
    prate_steady = n_crops / max(1e-9, statistics.median(pack_times["beam"]) - fixed)

    print(f"\ncrop, {args.images} images, {args.workers} workers each, same crop bytes on both engines")
    for e in ("local", "beam"):
        print(f"  {e:5s}  {rate[e]:6.2f} img/s   (runs {', '.join(f'{t:.1f}' for t in times[e])} s)")
    print(f"  beam / local: {ratio:.2f}   target: >= 0.7")
    print(f"\npack, {n_crops} crops ({per_crop} distinct, repeated), {args.workers} workers each, same record bytes")
    for e in ("local", "beam"):
        print(f"  {e:5s}  {prate[e]:7.1f} crops/s   (runs {', '.join(f'{t:.1f}' for t in pack_times[e])} s)")
    print(f"  beam / local: {prate['beam'] / prate['local']:.2f}   target: >= 0.7")
    print(f"  Beam's fixed start-up (an empty pipeline, same runner): {fixed:.1f} s; without it Beam packs "
          f"{prate_steady:.1f} crops/s ({prate_steady / prate['local']:.2f} of local)")
    per_worker = rate["beam"] / args.workers
    print(f"\nprojection for {args.project_images:,} images at {per_worker:.2f} img/s per Beam worker "
          "(linear in workers; storage and shuffle not modelled):")
    for n in (2, 8, 32, 128, 512):
        hours = args.project_images / (per_worker * n) / 3600
        print(f"  {n:4d} workers: {hours:8.2f} h")
    print(json.dumps({"crop_ratio": round(ratio, 3), "pack_ratio": round(prate["beam"] / prate["local"], 3),
                      "beam_startup_s": round(fixed, 2), "img_per_s": {k: round(v, 3) for k, v in rate.items()},
                      "crops_per_s": {k: round(v, 1) for k, v in prate.items()}}))


if __name__ == "__main__":
    main()
