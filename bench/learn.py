"""Benchmark: does `curate train` learn? A fixed config for a fixed number of kimg on real anime faces.

Packs ../shared/data/anime-faces-128/faces (6,000 JPEGs, 128x128) with `curate pack FOLDER` into
work/learn/ (cached: a second run finds the dataset up to date), trains a fixed configuration and
prints, at every tick end:

  kimg, level, alpha   where progressive growing stands
  SWD@lv               the run's own multi-scale SWD x 1e3 at the level it trains (the first
                       swd_images reals of that level against as many Gs fakes, as `curate train` logs;
                       at the last tick only, to spare the CPU)
  SWD                  the same at full size, the fakes of a lower level upscaled as the grids show
                       them (ProGAN's snapshots measure at full size too): one scale for the whole run
  floor                that full-size SWD between two disjoint halves of the real data (reals 0..N-1
                       against reals N..2N-1, same patch places): what a perfect generator would read
  ratio                SWD / floor
  per scale            the full-size SWD at each Laplacian-pyramid scale, finest first (the SWD is their
                       mean; the floor's per-scale values are printed once at the start)
  colour               mean and spread (std over all pixels) per RGB channel, fakes against reals:
                       SWD normalises each set's colours away, these show a colour cast or a washed-out G

Tick 0 is the untrained generator, measured the same way before the first step: the first value.
The target: the last SWD within 3x of the floor and below a tenth of the first value (the final line
also gives its ratio to tick 1's, 4 kimg in). The run folder (named at the start and the end) holds
reals.png, fakes<tick>.png per tick, stats.jsonl, checkpoints and learn.json (every figure printed);
`bench/learn.py --grid-to docs/learn-fakes.png` also copies the last fakes grid.

At the start it also prints what a perfect mirror-augmented generator would read: the reals against
the other half with each image mirrored at random. These faces are lopsided as a set, so that is 3x
the floor and both configs train without mirror augment (docs/training.md).

CPU (default): 64x64 square, narrow networks, grown from 4x4. --gpu: the full-width networks
(fmap_base 8192, fmap_max 512, 512-d latents, NVlabs' minibatches and learning rates) at 256x256 on
the faces packed at 256x256 (`curate pack --size 256x256 --resize`: 2x upsampled, so sharper detail
than the sources have cannot be learned), or on --dataset DIR (a packed or NVlabs dataset, its own size).

    python bench/learn.py                      # the CPU benchmark (26 to 40 minutes of 2 cores)
    python bench/learn.py --gpu                # on a GPU
    python bench/learn.py --set r1_gamma=1     # an experiment: the same run with one change (said so)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.train.stylegan.config import CONFIGS, parse_set, replace  # noqa: E402

FACES = ROOT.parent / "shared" / "data" / "anime-faces-128" / "faces"
WORK = ROOT / "work" / "learn"
TARGET_FLOOR, TARGET_FIRST = 3.0, 0.1

# The CPU config: 4x4 -> 64x64, narrow (64 feature maps at 4..16, 32 at 32, 16 at 64), 128-d latents,
# lr 0.006 (6x NVlabs': measured best for 120 kimg, docs/training.md).
CPU = {
    "name": "learn-cpu", "start_height": 4, "end_height": 64,
    "fmap_base": 512, "fmap_max": 64, "latent_size": 128, "dlatent_size": 128, "mapping_fmaps": 128,
    "training_kimg": 10.0, "transition_kimg": 10.0, "total_kimg": 120.0,
    "minibatch": {}, "minibatch_base": 32, "g_lrate": {}, "d_lrate": {}, "lrate_base": 0.006,
    # a 2 kimg Gs half-life: NVlabs' 10 kimg lags a 120 kimg run by most of a level (docs/training.md)
    "ema_kimg": 2.0,
    # no mirror augment: these faces are not mirror-symmetric as a set, so a mirrored G learns another
    # distribution than the floor measures (the bench prints what a perfect mirrored G would read)
    "mirror_augment": False,
    "tick_kimg": {}, "tick_kimg_base": 4.0, "shuffle_buffer": 6000,
    # the run's own per-level SWD only at the end (the bench measures every tick at full size itself)
    "swd_images": 1024, "swd_ticks": 1000, "snapshot_ticks": 10, "keep_checkpoints": 2, "grid_cols": 8, "grid_rows": 4,
}
# The GPU config: the full-width stylegan networks (NVlabs' minibatches and rates), 4x4 -> 256x256.
GPU = {
    "name": "learn-gpu", "start_height": 4, "end_height": 256, "total_kimg": 3000.0,
    "training_kimg": 300.0, "transition_kimg": 300.0, "swd_images": 2048, "swd_ticks": 1000, "snapshot_ticks": 5,
    "keep_checkpoints": 2, "mirror_augment": False,
}


def pack_faces(faces: Path, out: Path, size: int) -> Path:
    """The faces packed by `curate pack FOLDER` (a no-op when already packed); the dataset folder."""
    from curate.dataset.pack import PackConfig, run_pack, summary_line

    resize = size != 128
    config = PackConfig(name="faces", size=(size, size), resize=resize)
    stats = run_pack(faces, out, config, progress=False)
    print(summary_line(stats, out), flush=True)
    return out


def colour(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over all pixels of uint8 NHWC images, in [0, 255]."""
    x = images.reshape(-1, 3).astype(np.float64)
    return x.mean(0), x.std(0)


def fmt(v: np.ndarray) -> str:
    return "/".join(f"{x:3.0f}" for x in v)


def fmt_values(values: list[float]) -> str:
    """Per-scale SWDs, finest first, for the lines printed once at the start."""
    return " ".join(f"{v:.2f}" for v in values)


def fmt_scales(values: list[float]) -> str:
    """Per-scale SWDs, finest first, for the `per scale` column."""
    return " ".join(f"{v:5.1f}" for v in values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="the full-width 256x256 config (needs a GPU)")
    ap.add_argument("--dataset", type=Path, help="train on this packed or NVlabs dataset instead of the faces")
    ap.add_argument("--faces", type=Path, default=FACES, help="the folder of face JPEGs to pack")
    ap.add_argument("--work", type=Path, default=WORK, help="datasets and runs go here")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="change the fixed config (an experiment; printed as such)")
    ap.add_argument("--grid-to", type=Path, help="copy the last fakes grid here")
    args = ap.parse_args()

    from curate.train.checkpoints import Checkpoints
    from curate.train.data import open_dataset
    from curate.train.phases import Phases
    from curate.train.run import TickLoop
    from curate.train.runfolder import new_run_dir, write_run_config
    from curate.train.steps import Trainer
    from curate.core.atomic import write_bytes
    from curate.core.grid import upscale_to
    from curate.train.stylegan.swd import swd

    base = CONFIGS["stylegan-512x256"] if args.gpu else CONFIGS["smoke"]
    changes = parse_set(args.sets)
    config = replace(base, **{**(GPU if args.gpu else CPU), **changes})
    if args.dataset is not None:
        data_dir = args.dataset
    else:
        if not args.faces.is_dir():
            print(f"learn: {args.faces} is missing (the anime-faces-128 data in ../shared); nothing to train on")
            return 1
        size = 256 if args.gpu else 128
        data_dir = pack_faces(args.faces, args.work / f"faces-{size}", size)
    data = open_dataset(data_dir)
    if args.gpu and config.end_height > data.height:
        config = replace(config, end_height=data.height)
    trainer = Trainer(config, data)
    tf = trainer.tf
    mode = "GPU" if args.gpu else "CPU"
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if args.gpu and not devices:
        print("learn: --gpu but TensorFlow sees no GPU; run without --gpu for the CPU benchmark")
        return 1
    run_dir = new_run_dir(args.work / "runs", config.name)
    levels = [list(trainer.arch.size(k)) for k in range(trainer.schedule.start_level, trainer.arch.full_level + 1)]
    write_run_config(run_dir, config, data.to_json(), levels)
    print(f"learn ({mode}): {data.count:,} images {data.height}x{data.width} from {data.path}; "
          f"{config.name} {levels[0][0]}x{levels[0][1]} -> {levels[-1][0]}x{levels[-1][1]}, "
          f"{config.total_kimg:g} kimg, widths {[trainer.arch.nf(k - 1) for k in range(2, trainer.arch.full_level + 1)]}, "
          f"latent {config.latent_size}, minibatch {config.minibatch_base}, lr {config.lrate_base}, "
          f"R1 {config.r1_gamma}, ema {config.ema_kimg} kimg, mirror {config.mirror_augment}", flush=True)
    if changes:
        print(f"learn: EXPERIMENT, the fixed config changed by {json.dumps(changes)}", flush=True)
    print(f"learn: run folder {run_dir} (reals.png, fakes<tick>.png, stats.jsonl)", flush=True)

    checkpoints = Checkpoints(trainer, run_dir, config.keep_checkpoints)
    phases = Phases(trainer)
    phases.start()
    loop = TickLoop(trainer, phases, checkpoints, run_dir, echo=lambda s: None, progress=False)
    n = config.swd_images
    if 2 * n > data.count:
        print(f"learn: swd_images {n} needs {2 * n} images for the floor, the dataset has {data.count}")
        return 1
    full = trainer.arch.full_level
    reals = trainer.reals(full, 2 * n)
    floor_all = swd(reals[:n], reals[n:], seed=0)  # the same patch places (seed 0) for every tick's SWD
    floor, floor_scales = floor_all[-1], floor_all[:-1]
    print(f"learn: the floor per scale, finest first: {fmt_values(floor_scales)}", flush=True)
    # a mirror-augmented G learns the reals with half of them mirrored: against the plain reals it
    # reads at best this (the other half, each image mirrored with probability 1/2)
    flips = np.random.RandomState(0).rand(n) < 0.5
    mirror_all = swd(reals[:n], np.where(flips[:, None, None, None], reals[n:, :, ::-1], reals[n:]), seed=0)
    print(f"learn: a perfect mirror-augmented G would read {mirror_all[-1]:.2f} ({mirror_all[-1] / floor:.2f}x the floor; "
          f"per scale {fmt_values(mirror_all[:-1])}); mirror_augment is "
          f"{'ON: this run reads at best about that' if config.mirror_augment else 'off'}", flush=True)
    rm, rs = colour(reals[:n])

    def measure(level: int, alpha: float) -> tuple[list[float], np.ndarray]:
        """(per-scale SWDs + their mean, the fakes) of Gs at a level, shown at full size as the grids show it."""
        fakes = trainer.generate(trainer.latents(n, config.seed + 1), level, alpha, seed=config.seed + 1)
        fakes = upscale_to(fakes, reals.shape[1])  # lower levels as the grids show them: blocky at full size
        return swd(reals[:n], fakes, seed=0), fakes
    print(f"{'tick':>4} {'kimg':>7} {'size':>7} {'alpha':>5} {'SWD@lv':>7} {'SWD':>7} {'floor':>6} {'ratio':>6} {'per scale':>17}  "
          f"{'fakes mean':>11} {'reals mean':>11}  {'fakes std':>11} {'reals std':>11}  {'img/s':>6} {'min':>5}",
          flush=True)
    # tick 0: the untrained generator (Gs = G at its random start), the level the run starts at
    untrained, _ = measure(*trainer.schedule.phase(0))
    print(f"{0:4d} {0.0:7.1f} {'untrained':>13} {'-':>7} {untrained[-1]:7.2f} {floor:6.2f} {untrained[-1] / floor:6.1f} "
          f"{fmt_scales(untrained[:-1]):>17}", flush=True)
    t0 = time.time()
    rows = []
    while int(trainer.counters.nimg.numpy()) < loop.total_nimg:
        s = loop.tick()
        level, alpha = s["level"], s["alpha"]
        scales, fakes = measure(level, alpha)
        value = scales[-1]
        fm, fs = colour(fakes)
        at_level = s["swd"][-1] if "swd" in s else None
        rows.append({"tick": s["tick"], "kimg": s["kimg"], "level": level, "alpha": alpha, "swd_level": at_level,
                     "swd": value, "swd_scales": scales[:-1], "floor": floor, "fakes_mean": fm.tolist(), "fakes_std": fs.tolist(),
                     "reals_mean": rm.tolist(), "reals_std": rs.tolist(), "img_per_s": s["img_per_s"]})
        print(f"{s['tick']:4d} {s['kimg']:7.1f} {s['height']:>3}x{s['width']:<3} {alpha:5.2f} "
              f"{'-' if at_level is None else f'{at_level:.2f}':>7} "
              f"{value:7.2f} {floor:6.2f} {value / floor:6.1f} {fmt_scales(scales[:-1]):>17}  {fmt(fm):>11} {fmt(rm):>11}  {fmt(fs):>11} "
              f"{fmt(rs):>11}  {s['img_per_s']:6.1f} {(time.time() - t0) / 60:5.1f}", flush=True)
    report = {"floor_scales": floor_scales, "mirror_floor": mirror_all, "untrained": untrained, "ticks": rows}
    write_bytes(run_dir / "learn.json", json.dumps(report, indent=1).encode())
    last = rows[-1]
    # the first value is tick 0's, before any step; tick 1 (4 kimg in) is printed beside it
    ok_floor = last["swd"] <= TARGET_FLOOR * last["floor"]
    ok_first = last["swd"] <= TARGET_FIRST * untrained[-1]
    print(f"learn: final SWD {last['swd']:.2f} at {last['kimg']:.1f} kimg ({trainer.arch.size(last['level'])[0]}x"
          f"{trainer.arch.size(last['level'])[1]}): {last['swd'] / last['floor']:.2f}x the floor {last['floor']:.2f} "
          f"(target <= {TARGET_FLOOR:g}x: {'met' if ok_floor else 'NOT met'}), "
          f"{last['swd'] / untrained[-1]:.3f}x the first, the untrained G's {untrained[-1]:.2f} "
          f"(target <= {TARGET_FIRST:g}x: {'met' if ok_first else 'NOT met'}; "
          f"{last['swd'] / rows[0]['swd']:.3f}x tick 1's {rows[0]['swd']:.2f}); "
          f"{(time.time() - t0) / 60:.1f} min -> {run_dir}", flush=True)
    if args.grid_to is not None:
        shutil.copyfile(run_dir / f"fakes{last['tick']:05d}.png", args.grid_to)
        print(f"learn: last fakes grid copied to {args.grid_to}")
    return 0 if ok_floor and ok_first else 2


if __name__ == "__main__":
    sys.exit(main())
