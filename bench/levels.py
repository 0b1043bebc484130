"""Benchmark: minibatches from a level file through the memmap reader against tf.data, random order both.

Writes (once, cached) two seeded synthetic levels with curate.testing.records (pack's record layout):
64x64 (minibatch 32) and 256x128 (minibatch 8). Then, alternately and each in a fresh interpreter,
reads the same number of minibatches through
  tf.data   curate.train.data.minibatches: the TensorFlow trainer's stream (TFRecordDataset, parse,
            shuffle buffer of TrainConfig's default 4096, transpose to NHWC, batch, prefetch 2);
            minibatches arrive as tf tensors, as the trainer consumes them
  memmap    curate.dataset.levels.minibatches: a seeded permutation per epoch, one NumPy gather per
            minibatch from the memmap; uint8 NHWC NumPy arrays (what JAX / PyTorch take)
  memmap NCHW  the same without the CHW -> HWC transpose (the files' order; PyTorch's, or for a
            transpose on the accelerator)
  memmap+tf the same (NHWC), each minibatch then made a tf tensor (tf.convert_to_tensor): the cost of using
            the memmap as a fast path for the TensorFlow trainer
Both read files already in the page cache (each file is read once before the rounds). The first
minibatch is timed apart (start-up; tf.data fills its shuffle buffer there), the rest is the steady
rate. Also times verify() (every crc32c) once per level, and checks once that both paths read the same
images (as sets: their orders differ by design).

    python bench/levels.py                       # 32768 x 64x64 and 8192 x 256x128, one epoch, 3 rounds
    python bench/levels.py --epochs 3            # across epoch ends (tf.data refills its buffer at each)
    python bench/levels.py --scale 0.25 --rounds 1

Timings on a shared VM are noisy: the median of the rounds is reported, and every round with it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from curate.dataset import levels as L  # noqa: E402
from curate.dataset import schema as R  # noqa: E402
from curate.testing.process import in_fresh_process  # noqa: E402
from curate.testing.records import write_dataset  # noqa: E402

SHUFFLE_BUFFER = 4096  # TrainConfig.shuffle_buffer's default
SEED = 1000


def make_level(root: Path, n: int, height: int, width: int) -> list[str]:
    """One level of n seeded synthetic records of height x width, written once (a single-level dataset)."""
    d = root / f"levels-{height}x{width}-{n}"
    if not (d / "done").exists():
        print(f"writing {n} records of {height}x{width} into {d} ...", flush=True)
        write_dataset(d, n, height, width, seed=7, name="bench", min_height=height)
        (d / "done").write_text("")
    files = [str(p) for p in R.dataset_files(d)[R.log2(height)]]
    for p in files:  # into the page cache, for both readers alike
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass
    return files


def _tfdata(files, count, mb, batches, q) -> None:
    from curate.train.data import minibatches
    importlib.import_module("curate.train.stylegan.ops")  # TensorFlow's import is not the reader's time

    t0 = time.perf_counter()
    it = minibatches(files, count, 0, mb, SHUFFLE_BUFFER, SEED)
    next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
        next(it)  # eager tensors: each is materialised when the iterator hands it out
    q.put((t1 - t0, time.perf_counter() - t1))


def _memmap(files, count, mb, batches, to_tf, channels_last, q) -> None:
    tf = R.import_tensorflow() if to_tf else None
    t0 = time.perf_counter()
    level = L.open_level(files)  # the verified sidecar is cached by the first run
    it = L.minibatches(level, 0, mb, SEED, channels_last)
    first = next(it)
    if tf is not None:
        first = tf.convert_to_tensor(first)
    t1 = time.perf_counter()
    for _ in range(batches):
        x = next(it)
        if tf is not None:
            x = tf.convert_to_tensor(x)
    q.put((t1 - t0, time.perf_counter() - t1))


def _same_images(files, count, q) -> None:
    from curate.train.data import minibatches

    it = minibatches(files, count, 0, 64, SHUFFLE_BUFFER, SEED)
    n = count // 64 * 64
    via_tf = np.concatenate([next(it).numpy() for _ in range(n // 64)])
    level = L.open_level(files)
    via_mm = np.concatenate([b for b, _ in zip(L.minibatches(level, 0, 64, SEED), range(n // 64))])

    def digests(a):
        return sorted(hash(x.tobytes()) for x in a)

    # the first n images of epoch 0: tf.data's are the shuffle buffer's pick, ours a permutation's, so
    # compare the multiset only when both cover the whole epoch
    q.put(n == count and digests(via_tf) == digests(via_mm))


def _verify(files, q) -> None:
    level = L.open_level(files, verify=False)
    t = time.perf_counter()
    level.verify(cache=False)
    q.put(time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="records, times 32768 (64x64) and 8192 (256x128)")
    ap.add_argument("--epochs", type=int, default=1, help="how many epochs of minibatches each reader reads")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "curate-bench")
    args = ap.parse_args()

    cases = [(64, 64, 32, int(32768 * args.scale)), (256, 128, 8, int(8192 * args.scale))]
    print(f"{os.cpu_count()} cores, rounds={args.rounds}, {args.epochs} epoch(s), files in the page cache, "
          "random order both")
    summary = []
    for h, w, mb, n in cases:
        batches = args.epochs * n // mb - 1
        files = make_level(args.data_dir, n, h, w)
        mbytes = R.record_size(h, w) * n / 1e6
        vt = in_fresh_process(_verify, files)
        print(f"\n{n} records of {h}x{w} ({mbytes:,.0f} MB), minibatch {mb}, {batches} minibatches after the first; "
              f"verify() {vt:.2f}s = {mbytes / vt:,.0f} MB/s")
        if n % 64 == 0:
            same = in_fresh_process(_same_images, files, n)
            print(f"  one epoch through each: {'the same images' if same else 'DIFFERENT IMAGES'}")
            if not same:
                sys.exit("MISMATCH: the memmap reader and tf.data read different images")
        runs: dict[str, list[tuple[float, float]]] = {"tf.data": [], "memmap": [], "memmap NCHW": [], "memmap+tf": []}
        for r in range(args.rounds):
            runs["tf.data"].append(in_fresh_process(_tfdata, files, n, mb, batches))
            runs["memmap"].append(in_fresh_process(_memmap, files, n, mb, batches, False, True))
            runs["memmap NCHW"].append(in_fresh_process(_memmap, files, n, mb, batches, False, False))
            runs["memmap+tf"].append(in_fresh_process(_memmap, files, n, mb, batches, True, True))
            print(f"  round {r + 1}: " + "  ".join(f"{k} {v[-1][1]:.2f}s" for k, v in runs.items()), flush=True)
        images, px = batches * mb, h * w * 3
        rate = {}
        for k, v in runs.items():
            first, steady = statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)
            rate[k] = images / steady
            print(f"  {k:11s} {rate[k]:9,.0f} img/s {rate[k] * px / 1e6:8,.1f} MB/s   first minibatch {first * 1e3:7.1f} ms"
                  f"   (runs {', '.join(f'{t[1]:.2f}' for t in v)} s)")
        ratio, ratio_tf = rate["memmap"] / rate["tf.data"], rate["memmap+tf"] / rate["tf.data"]
        print(f"  ratio: memmap {ratio:.2f}x tf.data, memmap+tf {ratio_tf:.2f}x tf.data")
        summary.append(f"{h}x{w} mb {mb}: memmap {ratio:.2f}x, memmap+tf {ratio_tf:.2f}x tf.data")
    print("\n" + "; ".join(summary))


if __name__ == "__main__":
    main()
