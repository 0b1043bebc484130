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
import multiprocessing
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


def _crop_config():
    from curate.crop.cascades import ANIMEFACE_FILE, CASCADE_DIR, sha256_of
    from curate.crop.cropper import CropConfig

    cascade = CASCADE_DIR / ANIMEFACE_FILE
    return CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade))


def _beam_options(workers: int):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                            f"--direct_num_workers={workers}"])


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


def _in_subprocess(target, *args) -> float:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    seconds = q.get()
    p.join()
    return seconds


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
    ap.add_argument("--project-images", type=int, default=1_000_000,
                    help="images in the projection table (the crop stage's input for a whole dump)")
    args = ap.parse_args()

    from crop import make_corpus  # bench/crop.py's corpus, shared so both benches measure the same images

    corpus = args.cache / f"crop-corpus-n{args.images}-seed{args.seed}"
    make_corpus(corpus, args.images, args.seed)
    times: dict[str, list[float]] = {"local": [], "beam": []}
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for engine in ("local", "beam") if r % 2 == 0 else ("beam", "local"):
                out = Path(tmp) / f"{engine}-{r}"
                seconds = _in_subprocess(_crop, engine, str(corpus), str(out), args.workers)
                times[engine].append(seconds)
                digests[engine] = _digest(out)
                shutil.rmtree(out)
            print(f"  round {r + 1}: local {times['local'][-1]:6.1f}s  beam {times['beam'][-1]:6.1f}s", flush=True)
    assert digests["local"] == digests["beam"], "the engines wrote different crops"
    rate = {e: args.images / statistics.median(ts) for e, ts in times.items()}
    ratio = rate["beam"] / rate["local"]
    print(f"\ncrop, {args.images} images, {args.workers} workers each, same crop bytes on both engines")
    for e in ("local", "beam"):
        runs = ", ".join(f"{t:.1f}" for t in times[e])
        print(f"  {e:5s}  {rate[e]:6.2f} img/s   (runs {runs} s)")
    print(f"  beam / local: {ratio:.2f}   target: >= 0.7")
    per_worker = rate["beam"] / args.workers
    print(f"\nprojection for {args.project_images:,} images at {per_worker:.2f} img/s per Beam worker "
          "(linear in workers; storage and shuffle not modelled):")
    for n in (2, 8, 32, 128, 512):
        hours = args.project_images / (per_worker * n) / 3600
        print(f"  {n:4d} workers: {hours:8.2f} h")
    print(json.dumps({"crop_ratio": round(ratio, 3), "img_per_s": {k: round(v, 3) for k, v in rate.items()}}))


if __name__ == "__main__":
    main()
