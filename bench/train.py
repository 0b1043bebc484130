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

--backend jax: the portable networks' jitted JAX step (curate.train.portable.jax_step), no TensorFlow
in its process. CPU: the smoke config's levels, against the TF trainer's compiled step measured in a
second fresh process of the same run (skipped, saying so, where TensorFlow is not installed). GPU
(jax sees one): the full-width stylegan-512x256 networks at 256x128 and 512x256 with NVlabs'
minibatches (8 and 4) and with --minibatch, float32 and mixed_bfloat16, each compiled once and timed
in alternating rounds; bfloat16's ratio to float32 is printed, and NVlabs' published V100 figures
(StyleGAN README: about 19 img/s at 256^2 and 12 img/s at 512^2, averaged over a whole schedule,
which includes the cheaper low levels) as a reference, not a measurement of this run. --json FILE
appends every figure as a JSON line (bench/train_device.sh writes them to $OUT).

    python bench/train.py --backend jax --rounds 1 --steps 5
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


def _jax_rate(trainer, level: int, steps: int, batch, lr: float) -> float:
    """img/s over `steps` calls of the jitted JAX step on one resident minibatch (the state stays the trainer's)."""
    import jax
    import numpy as np

    fn, state = trainer.step_fn(level), trainer.state
    t = time.perf_counter()
    for i in range(steps):
        state, out = fn(state, batch, np.float32(0.5), np.int64(i), np.float32(lr), np.float32(lr))
    jax.block_until_ready(out)
    trainer.state = state
    return steps * batch.shape[0] / (time.perf_counter() - t)


def _jax_levels(config_name: str, sets: dict, full: tuple[int, int], levels: list[int], steps: int, rounds: int,
                precisions: list[str], q) -> None:
    """In a fresh process (KERAS_BACKEND=jax): per level and precision, (compile s, [img/s per round])."""
    import os

    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    from curate.train.portable.trainer import PortableTrainer

    out = {"device": str(jax.devices()[0]), "platform": jax.devices()[0].platform, "levels": {}}
    if not levels:  # the probe: which device JAX sees
        q.put(out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ds = open_dataset(write_dataset(Path(tmp) / "ds", 16 if full[0] > 64 else 64, *full))
        for level in levels:
            trainers = {p: PortableTrainer(replace(CONFIGS[config_name], precision=p, **sets), ds, "jax")
                        for p in precisions}
            first = trainers[precisions[0]]
            batch = jax.device_put(next(first.data_stream(level, 0)))
            lr = first.schedule.lrates(level)[0]
            compile_s, rates = {}, {p: [] for p in precisions}
            for p, t in trainers.items():
                start = time.perf_counter()
                _jax_rate(t, level, 1, batch, lr)
                compile_s[p] = time.perf_counter() - start
            for _ in range(rounds):
                for p, t in trainers.items():
                    rates[p].append(_jax_rate(t, level, steps, batch, lr))
            out["levels"][level] = {"size": first.arch.size(level), "minibatch": int(batch.shape[0]),
                                    "compile_s": compile_s, "rates": rates}
            del trainers
    q.put(out)


def _tf_levels(levels: list[int], steps: int, rounds: int, q) -> None:
    """In a fresh process: the TF trainer's compiled smoke step per level, [img/s per round] (None without TF)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(CONFIGS["smoke"], open_dataset(write_dataset(Path(tmp) / "smoke", 64, 32, 16)))
            tf, out = trainer.tf, {}
            for level in levels:
                batch = next(trainer.data_stream(level, 0))
                lr = trainer.schedule.lrates(level)[0]
                time_steps(trainer.step_fn(level), batch, tf, 1, lr)
                out[level] = [time_steps(trainer.step_fn(level), batch, tf, steps, lr) for _ in range(rounds)]
    except ImportError as e:
        out = {"skipped": str(e)}
    q.put(out)


def _emit(json_path, record: dict) -> None:
    import json

    if json_path:
        with open(json_path, "a") as f:
            f.write(json.dumps(record) + "\n")


def bench_jax(args) -> None:
    from curate.testing.process import in_fresh_process

    probe = in_fresh_process(_jax_levels, "smoke", {"end_height": 8}, (32, 16), [], 1, 1, ["float32"])
    print(f"JAX on {probe['device']}", flush=True)
    if probe["platform"] != "gpu":
        levels = [3, 4, 5]
        jx = in_fresh_process(_jax_levels, "smoke", {}, (32, 16), levels, args.steps, args.rounds, ["float32"])
        tf_rates = in_fresh_process(_tf_levels, levels, args.steps, args.rounds)
        print("smoke config on CPU, the compiled step per level (a shared machine: figures are noisy)", flush=True)
        for level in levels:
            r = jx["levels"][level]
            j = statistics.median(r["rates"]["float32"])
            line = (f"  {r['size'][0]:4d}x{r['size'][1]:<4d} mb {r['minibatch']:3d}: jax {j:8.1f} img/s "
                    f"(compile {r['compile_s']['float32']:.0f}s)")
            record = {"backend": "jax", "level": level, "size": r["size"], "minibatch": r["minibatch"],
                      "img_per_s": j, "compile_s": r["compile_s"]["float32"]}
            if "skipped" not in tf_rates:
                t = statistics.median(tf_rates[level])
                line += f" | tensorflow {t:8.1f} img/s | jax / tensorflow x{j / t:.2f}"
                record["tensorflow_img_per_s"] = t
            print(line, flush=True)
            _emit(args.json, record)
        if "skipped" in tf_rates:
            print(f"  (the TensorFlow baseline was skipped: {tf_rates['skipped']})")
        print("full-width 256x128 and 512x256 on JAX: SKIPPED, no GPU visible to JAX (the figures the issue "
              "asks for need one)")
        return
    reference = {8: 19.0, 9: 12.0}  # NVlabs' README, one V100, 256^2 and 512^2, averaged over a whole schedule
    for minibatch in sorted({0, args.minibatch}):
        for level in (8, 9):
            sets = {"end_height": 2 ** level}
            if minibatch:
                sets["minibatch"] = {2 ** level: minibatch}
            r = in_fresh_process(_jax_levels, "stylegan-512x256", sets, (512, 256), [level], args.steps, args.rounds,
                                 ["float32", "mixed_bfloat16"])["levels"][level]
            med = {p: statistics.median(v) for p, v in r["rates"].items()}
            h, w = r["size"]
            print(f"  {h}x{w} full width, mb {r['minibatch']} ({'NVlabs' if not minibatch else '--minibatch'}): "
                  f"float32 {med['float32']:.1f} img/s (compile {r['compile_s']['float32']:.0f}s) | "
                  f"mixed_bfloat16 {med['mixed_bfloat16']:.1f} img/s (compile {r['compile_s']['mixed_bfloat16']:.0f}s) "
                  f"| bf16 / f32 x{med['mixed_bfloat16'] / med['float32']:.2f} | NVlabs V100 reference "
                  f"{reference[level]:.0f} img/s (published, whole schedule)", flush=True)
            _emit(args.json, {"backend": "jax", "device": probe["device"], "level": level, "size": [h, w],
                              "minibatch": r["minibatch"], "img_per_s": med, "compile_s": r["compile_s"],
                              "rounds": r["rates"], "nvlabs_v100_img_per_s": reference[level]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", choices=["tensorflow", "jax"], default="tensorflow")
    ap.add_argument("--minibatch", type=int, default=32, help="the GPU runs' second minibatch (jax, both sizes)")
    ap.add_argument("--json", metavar="FILE", help="append each figure as a JSON line (jax)")
    args = ap.parse_args()
    if args.backend == "jax":
        bench_jax(args)
        return
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
