"""Benchmark: training throughput (img/s) per resolution, against the same step run eagerly.

CPU: the smoke config at each of its levels (8x4, 16x8, 32x16). For every level the compiled step
(tf.function with a fixed input signature, traced once, what `curate train` runs) and the baseline
(the identical Python step executed eagerly, op by op) are timed in alternating rounds; the median
of the rounds is printed, with the ratio. Tracing is excluded (one warm-up call each).

GPU (when one is visible): the full-width stylegan-512x256 networks at 64x32, 128x64 and 256x128 with
NVlabs' minibatches, the compiled step in float32 (the baseline) and with `precision=mixed_float16`
(16-bit networks, dynamic loss scaling), timed in alternating rounds, with the ratio.

    python bench/train.py                 # 3 rounds of 20 steps per level
    python bench/train.py --rounds 1 --steps 5
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

from curate.train.stylegan.config import CONFIGS, replace  # noqa: E402
from curate.testing.records import write_dataset  # noqa: E402
from curate.train.data import open_dataset  # noqa: E402
from curate.train.steps import Trainer  # noqa: E402


def time_steps(fn, batch, tf, steps: int, lr: float) -> float:
    """img/s over `steps` calls of a step function on one resident minibatch."""
    args = (tf.constant(0.5), tf.constant(0, tf.int64), tf.constant(lr), tf.constant(lr))
    t = time.perf_counter()
    for i in range(steps):
        out = fn(batch, args[0], tf.constant(i, tf.int64), args[2], args[3])
    float(out["loss_g"])  # wait for the last step
    return steps * batch.shape[0] / (time.perf_counter() - t)


def bench_levels(trainer: Trainer, levels: list[int], steps: int, rounds: int, eager: bool) -> None:
    tf = trainer.tf
    for level in levels:
        h, w = trainer.arch.size(level)
        batch = next(trainer.data_stream(level, 0))
        lr = trainer.schedule.lrates(level)[0]
        compiled = trainer.step_fn(level)
        plain = trainer.step_fn(level, compiled=False)
        t = time.perf_counter()
        time_steps(compiled, batch, tf, 1, lr)  # trace
        trace = time.perf_counter() - t
        if eager:
            time_steps(plain, batch, tf, 1, lr)
        fast, slow = [], []
        for _ in range(rounds):
            fast.append(time_steps(compiled, batch, tf, steps, lr))
            if eager:
                slow.append(time_steps(plain, batch, tf, max(2, steps // 4), lr))
        f = statistics.median(fast)
        line = f"  {h:4d}x{w:<4d} mb {batch.shape[0]:3d}: tf.function {f:8.1f} img/s (spread {min(fast):.1f}-{max(fast):.1f})"
        if eager:
            s = statistics.median(slow)
            line += f" | eager {s:7.1f} img/s | x{f / s:.1f}"
        print(line + f" | trace {trace:.1f}s", flush=True)


def bench_precisions(trainers: dict[str, Trainer], levels: list[int], steps: int, rounds: int) -> None:
    """The compiled step of each trainer (one per precision) per level, in alternating rounds; ratios to the first."""
    names = list(trainers)
    first = trainers[names[0]]
    tf = first.tf
    for level in levels:
        h, w = first.arch.size(level)
        batch = next(first.data_stream(level, 0))
        lr = first.schedule.lrates(level)[0]
        fns = {name: t.step_fn(level) for name, t in trainers.items()}
        trace = {}
        for name, fn in fns.items():
            t = time.perf_counter()
            time_steps(fn, batch, tf, 1, lr)
            trace[name] = time.perf_counter() - t
        rates: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for name, fn in fns.items():
                rates[name].append(time_steps(fn, batch, tf, steps, lr))
        med = {name: statistics.median(r) for name, r in rates.items()}
        figures = " | ".join(f"{name} {med[name]:7.1f} img/s (spread {min(rates[name]):.1f}-{max(rates[name]):.1f}, "
                             f"trace {trace[name]:.0f}s)" for name in names)
        ratios = " ".join(f"| {name} x{med[name] / med[names[0]]:.2f}" for name in names[1:])
        print(f"  {h:4d}x{w:<4d} mb {batch.shape[0]:3d}: {figures} {ratios}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds = open_dataset(write_dataset(Path(tmp) / "smoke", 64, 32, 16))
        trainer = Trainer(CONFIGS["smoke"], ds)
        tf = trainer.tf
        print(f"smoke config on CPU ({tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads; "
              f"a shared machine: figures are noisy)", flush=True)
        bench_levels(trainer, [3, 4, 5], args.steps, args.rounds, eager=True)

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            print("full-width stylegan-512x256 at 64x32, 128x64, 256x128: SKIPPED, no GPU visible to TensorFlow "
                  "(the figures the issue asks for need one)")
            return
        big = open_dataset(write_dataset(Path(tmp) / "full", 64, 256, 128))
        trainers = {precision: Trainer(replace(CONFIGS["stylegan-512x256"], end_height=256, precision=precision), big)
                    for precision in ("float32", "mixed_float16")}
        print(f"stylegan-512x256 networks on {gpus[0].name}: compiled step, float32 against mixed_float16", flush=True)
        bench_precisions(trainers, [6, 7, 8], args.steps, args.rounds)


if __name__ == "__main__":
    main()
