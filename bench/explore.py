"""Benchmark: images/s of the full-width 512x256 generator through curate explore's code path, against
a plain Gs(z) call in the same run.

The generator has the stylegan-512x256 config's shape (fmap_max 512, 16 style layers at 512x256) with
untrained weights, written as a run folder by curate.testing.runs.make_run (speed does not depend on
the weights). Timed, one image at a time (what the page asks for):
  plain     Gs(z) as one tf.function (mapping, truncation, synthesis) to a float tensor: the baseline
  eager     Gs(z) called eagerly, op by op (what a notebook user gets without tf.function)
  explore   Explorer.png(latent): the app's path for a new image, synthesis to uint8 and the PNG with its
            latent chunk (the mapping is done once per seed when the latent is made, as on the page)
  edited    the same with one local edit (8 channels, a region of 64x32 at level 6)
Each is warmed up once (tracing excluded), then timed in alternating rounds; the median is printed.
Issue 17's interactive target, < 0.2 s per image, is for a GPU; on a CPU the figure is informative.

    python bench/explore.py
    python bench/explore.py --rounds 3 --images 4
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=4, help="images per timed round")
    ap.add_argument("--height", type=int, default=512, help="full height (width is half)")
    args = ap.parse_args()

    from curate.explore import Edit, Explorer
    from curate.testing.runs import make_run
    from curate.train.stylegan.ops import tf

    gpus = tf.config.list_physical_devices("GPU")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = make_run(Path(tmp) / "00000-bench", args.height, args.height // 2, config="stylegan-512x256")
        ex = Explorer(run)
        print(f"generator {ex.height}x{ex.width}, {ex.num_layers} style layers, "
              f"{sum(int(tf.size(v)) for v in ex.Gs.synthesis.variables) / 1e6:.1f}M synthesis weights; "
              f"{'GPU: ' + gpus[0].name if gpus else 'CPU only'}; set up in {time.perf_counter() - t0:.1f} s")
        Gs, level = ex.Gs, ex.level
        seed = tf.constant([0, 0], tf.int64)
        alpha = tf.constant(1.0)

        def plain_call(z):
            return Gs(z, level, alpha, seed, psi=0.7, cutoff=8)

        plain_fn = tf.function(plain_call)
        edit = Edit(level=6, channels=tuple(range(8)), region=(0.25, 0.25, 0.75, 0.5), multiplier=3.0)
        latents = [ex.from_seed(s) for s in range(args.images)]
        zs = [tf.constant(ex.z_of_seed(s)[None]) for s in range(args.images)]

        ways = {
            "plain": lambda: [plain_fn(z).numpy() for z in zs],
            "eager": lambda: [plain_call(z).numpy() for z in zs],
            "explore": lambda: [ex.png(lat) for lat in latents],
            "edited": lambda: [ex.png(lat, [edit]) for lat in latents],
        }
        for fn in ways.values():  # trace and warm up
            fn()
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(args.rounds):
            for name, fn in ways.items():
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) / args.images)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nseconds per image (median of {args.rounds} rounds of {args.images} images), images/s, ratio to plain Gs(z):")
    for name, s in med.items():
        print(f"  {name:8s} {s:7.3f} s  {1 / s:6.2f} img/s  x{med['plain'] / s:.2f} the plain call's speed")
    target = "met" if med["explore"] < 0.2 else "not met"
    where = "on this GPU" if gpus else "on this CPU (the target is for a GPU)"
    print(f"\ninteractive target < 0.2 s per image {where}: {target} ({med['explore']:.3f} s)")


if __name__ == "__main__":
    main()
