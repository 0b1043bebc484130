"""Benchmark: batched illustration2vec inference (tf.data, as `curate score` runs it) against a per-image
`model.predict` loop, on the same full-size network and the same random weights, in one run.

Random weights cost the same as the real ones (the arithmetic does not look at the values), so the
bench needs no download. Rounds alternate between the two ways and the median is reported, because
the VM is shared and noisy. Prints crops/s of each, their ratio, and which device ran it.

    python bench/score.py                    # 32 crops, batch 32, 3 rounds
    python bench/score.py --crops 64 --batch-size 16 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, default=32, help="crops per round (512x256 RGB)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf

    from curate.score.illust2vec import build_model, preprocess
    from curate.score.scorer import Illustration2VecScorer

    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU: {gpus[0].name}" if gpus else f"CPU only ({os.cpu_count()} cores; no GPU is lent to this task)"
    print(f"device: {device}; TensorFlow {tf.__version__}")
    model = build_model(1)  # full width, Keras' random initialisation: 47.0M parameters
    print(f"illustration2vec: {model.count_params():,} parameters")
    tags = ["1girl"] + [f"t{i}" for i in range(1538)]
    scorer = Illustration2VecScorer(model, tags, batch_size=args.batch_size)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (512, 256, 3), dtype=np.uint8) for _ in range(args.crops)]

    def batched() -> np.ndarray:
        return scorer.probabilities(crops)

    def per_image() -> np.ndarray:
        return np.concatenate([model.predict(preprocess(c[None]), verbose=0) for c in crops])

    # Warm up both (tracing, oneDNN kernel choice) and check they agree before timing anything.
    a, b = batched(), per_image()
    print(f"max |batched - per-image| = {np.abs(a - b).max():.2e}")
    times: dict[str, list[float]] = {"batched": [], "per_image": []}
    for r in range(args.rounds):
        for name, fn in (("per_image", per_image), ("batched", batched)) if r % 2 else (("batched", batched), ("per_image", per_image)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    rate = {k: args.crops / statistics.median(v) for k, v in times.items()}
    spread = {k: f"{args.crops / max(v):.2f}-{args.crops / min(v):.2f}" for k, v in times.items()}
    print(f"per-image model.predict loop: {rate['per_image']:.2f} crops/s (rounds {spread['per_image']})")
    print(f"batched tf.data, batch {args.batch_size}: {rate['batched']:.2f} crops/s (rounds {spread['batched']})")
    print(f"ratio batched / per-image: {rate['batched'] / rate['per_image']:.2f}x  "
          f"({args.crops} crops x {args.rounds} rounds, median; {device})")


if __name__ == "__main__":
    main()
