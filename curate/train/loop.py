"""`curate train`: the progressive StyleGAN run loop over pack's records, and `curate generate`.

A run lives in a numbered folder (<runs>/<NNNNN>-<config>) that is never reused:

    config.json      the resolved TrainConfig plus the dataset it trains on
    stats.jsonl      one JSON line per tick (kimg, level, alpha, losses, img/s, SWD, FID)
    log.txt          the progress lines
    reals.png, fakes<tick:05d>.png    sample grids (fixed latents, Gs, untruncated, as NVlabs)
    checkpoints/     tf.train.Checkpoint: G, D, Gs, both Adam states, the counters (and both loss scales)
    events.out.tfevents.*            TensorBoard scalars

Exact resume: every random draw of a step is stateless, seeded by (seed, step number); the data
stream of a level is a pure function of the position within it (epoch e is the level file shuffled
with seed + e, then `skip`); checkpoints are written at tick ends with the step, image, tick and
level-start counters and the optimizer moments. A resumed run therefore runs the same ops on the
same numbers as an uninterrupted one.

Precision (`--set precision=mixed_float16` or `mixed_bfloat16`): G's synthesis network and D compute
in 16 bits (curate.train.stylegan.networks says what stays float32); variables, Adam, the Gs average and
the losses are float32. float16 adds dynamic loss scaling per network (curate.train.stylegan.precision),
whose state is checkpointed; Gs always computes in float32, so grids, SWD, FID and `curate generate`
see float32 images from the float32 weights whatever the training precision.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from curate.dataset import schema as R
from curate.core.atomic import write_json
from curate.train.stylegan.config import RESUMABLE, TrainConfig, replace
from curate.core.errors import CurateError

CONFIG_FILE = "config.json"
STATS_FILE = "stats.jsonl"


class TrainError(CurateError):
    """A dataset or run folder that cannot be used (the CLI turns it into one line)."""


# ---- dataset ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a packed dataset, read through curate.dataset.schema."""

    path: str
    files: dict[int, list[str]]  # level -> files
    height: int
    width: int
    count: int
    labels: int  # label dimensions (0: none); kept for later conditioning, unused by the networks

    def to_json(self) -> dict[str, Any]:
        """The part saved in config.json."""
        return {"path": self.path, "height": self.height, "width": self.width, "count": self.count,
                "labels": self.labels, "levels": sorted(self.files)}


def open_dataset(path: str | os.PathLike) -> DatasetInfo:
    """Find the level files of a packed dataset, its full size and its record count (TrainError if unusable)."""
    path = Path(path)
    if not path.is_dir():
        raise TrainError(f"{path} is not a folder; give the DATASET_DIR that `curate pack` wrote")
    try:
        files = R.dataset_files(path)
    except R.LayoutError as e:
        raise TrainError(str(e)) from None
    top, low = max(files), min(files)
    try:
        with open(files[top][0], "rb") as f:
            c, h, w = R.decode_example(next(R.iter_records(f))).shape
        count = 0
        for p in files[low]:
            with open(p, "rb") as f:
                count += sum(1 for _ in R.iter_records(f))
    except (StopIteration, R.RecordError, ValueError, KeyError) as e:
        raise TrainError(f"cannot read the records in {path}: {e or 'empty file'}; check it with `curate inspect`") from None
    if c != 3 or h % w or R.log2(h) != top:
        raise TrainError(f"{files[top][0]} holds {c}x{h}x{w} images; the trainer needs RGB with H a multiple of W")
    labels = 0
    for p in path.glob("*-rxx.labels"):
        labels = int(np.load(p, mmap_mode="r").shape[1])
    return DatasetInfo(str(path.resolve()), {k: [str(p) for p in v] for k, v in files.items()}, h, w, count, labels)


# ---- optimizer ----------------------------------------------------------------------------------

def _make_adam(tf, variables, beta1: float, beta2: float, eps: float):
    class Adam(tf.Module):
        """Adam with its moments as checkpointed variables and a reset (NVlabs resets at each new level)."""

        def __init__(self):
            super().__init__(name="adam")
            self.t = tf.Variable(0.0, trainable=False, name="t")
            self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name="m") for v in variables]
            self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name="v") for v in variables]

        def apply(self, grads, lr):
            self.t.assign_add(1.0)
            lr_t = lr * tf.sqrt(1.0 - beta2 ** self.t) / (1.0 - beta1 ** self.t)
            for g, var, m, v in zip(grads, variables, self.m, self.v):
                if g is None:
                    continue
                m.assign(beta1 * m + (1.0 - beta1) * g)
                v.assign(beta2 * v + (1.0 - beta2) * tf.square(g))
                var.assign_sub(lr_t * m / (tf.sqrt(v) + eps))

        def reset(self):
            self.t.assign(0.0)
            for s in self.m + self.v:
                s.assign(tf.zeros_like(s))

    return Adam()


# ---- the trainer --------------------------------------------------------------------------------

class Trainer:
    """Networks, optimizers, counters and the per-level compiled step; no files (run_training does those)."""

    def __init__(self, config: TrainConfig, data: DatasetInfo):
        from curate.train.stylegan.networks import Discriminator, Generator
        from curate.train.stylegan.ops import tf
        from curate.train.stylegan.precision import compute_dtype, loss_scale
        from curate.train.stylegan.schedule import Schedule

        self.tf, self.config, self.data = tf, config, data
        self.arch = config.arch(data.height, data.width)
        if self.arch.full_level not in data.files:
            raise TrainError(f"end_height {self.arch.full_height} has no level file in {data.path} "
                             f"(levels: {', '.join(str(2 ** k) for k in sorted(data.files))})")
        if config.start_height not in [2 ** k for k in data.files]:
            raise TrainError(f"start_height {config.start_height} has no level file in {data.path}")
        self.schedule = Schedule(config, self.arch.full_level)
        dtype = compute_dtype(config.precision)
        self.G = Generator(self.arch, seed=config.seed, compute_dtype=dtype)
        self.D = Discriminator(self.arch, seed=config.seed + 1, compute_dtype=dtype)
        # same init: Gs starts as a copy of G; it samples in float32 whatever G trains in
        self.Gs = Generator(self.arch, seed=config.seed, name="Gs")
        c = config
        self.opt_g = _make_adam(tf, self.G.trainable_variables, c.adam_beta1, c.adam_beta2, c.adam_epsilon)
        self.opt_d = _make_adam(tf, self.D.trainable_variables, c.adam_beta1, c.adam_beta2, c.adam_epsilon)
        self.scale_g = loss_scale(c.precision, c.loss_scale_init, c.loss_scale_growth_steps, "loss_scale_g")
        self.scale_d = loss_scale(c.precision, c.loss_scale_init, c.loss_scale_growth_steps, "loss_scale_d")
        v = lambda name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)  # noqa: E731
        self.counters = tf.Module(name="counters")
        for name in ("nimg", "step", "tick", "tick_start_nimg", "level_start_nimg", "last_level", "last_fading"):
            setattr(self.counters, name, v(name))
        self.counters.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
        parts = dict(G=self.G, D=self.D, Gs=self.Gs, opt_g=self.opt_g, opt_d=self.opt_d, counters=self.counters)
        if self.scale_d.scale is not None:  # only float16 has loss-scale state: other checkpoints are unchanged
            parts.update(loss_scale_g=self.scale_g, loss_scale_d=self.scale_d)
        self.checkpoint = tf.train.Checkpoint(**parts)
        self._steps: dict[int, Callable] = {}
        self._samplers: dict[int, Callable] = {}

    # -- the step
    def step_fn(self, level: int, compiled: bool = True) -> Callable:
        """The training step at a level: one D update (with R1), one G update, the Gs average.

        Under mixed_float16 each update goes through its network's loss scale, which skips it when
        the gradients overflow; the step then also returns overflow_d / overflow_g (1.0 = skipped).
        """
        if compiled and level in self._steps:
            return self._steps[level]
        from curate.train.stylegan.loss import d_loss, g_loss
        from curate.train.stylegan.networks import fade_reals

        tf, c, G, D, Gs = self.tf, self.config, self.G, self.D, self.Gs
        scale_g, scale_d = self.scale_g, self.scale_d
        mb = self.schedule.minibatch(level)
        h, w = self.arch.size(level)
        beta = 0.5 ** (mb / (c.ema_kimg * 1000.0)) if c.ema_kimg > 0 else 0.0
        g_vars, gs_vars = G.trainable_variables, Gs.trainable_variables

        def step(reals_u8, alpha, step, lr_g, lr_d):
            seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(c.seed, tf.int64), step]), 5)
            reals = tf.cast(reals_u8, tf.float32) / 127.5 - 1.0
            if c.mirror_augment:
                flip = tf.random.stateless_uniform([mb], seed=seeds[0]) < 0.5
                reals = tf.where(flip[:, None, None, None], tf.reverse(reals, axis=[2]), reals)
            reals = fade_reals(reals, level, alpha)
            z = tf.random.stateless_normal([mb, self.arch.latent_size], seed=seeds[1])
            with tf.GradientTape() as tape:
                fakes = G(z, level, alpha, seeds[2], mixing_prob=c.style_mixing)
                loss_d, parts = d_loss(D, reals, fakes, level, alpha, c.r1_gamma, loss_scale=scale_d.scale)
                scaled = scale_d.scale_loss(loss_d)
            applied_d = scale_d.apply(self.opt_d, tape.gradient(scaled, D.trainable_variables), lr_d)
            z = tf.random.stateless_normal([mb, self.arch.latent_size], seed=seeds[3])
            with tf.GradientTape() as tape:
                fakes = G(z, level, alpha, seeds[4], mixing_prob=c.style_mixing, update_w_avg=c.w_avg_beta)
                loss_g = g_loss(D, fakes, level, alpha)
                scaled = scale_g.scale_loss(loss_g)
            applied_g = scale_g.apply(self.opt_g, tape.gradient(scaled, g_vars), lr_g)
            for gs, g in zip(gs_vars, g_vars):
                gs.assign(g + (gs - g) * beta)
            Gs.w_avg.assign(G.w_avg)
            out = {"loss_g": loss_g, "loss_d": loss_d, **parts}
            if applied_d is not None:
                out["overflow_d"] = 1.0 - tf.cast(applied_d, tf.float32)
                out["overflow_g"] = 1.0 - tf.cast(applied_g, tf.float32)
            return out

        if not compiled:
            return step
        spec = [tf.TensorSpec([mb, h, w, 3], tf.uint8), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int64),
                tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32)]
        fn = tf.function(step, input_signature=spec, jit_compile=True if c.xla else None, autograph=False)
        self._steps[level] = fn
        return fn

    def sampler(self, level: int) -> Callable:
        """Gs images at a level for given latents, alpha and noise seed (untruncated unless psi given)."""
        if level in self._samplers:
            return self._samplers[level]
        tf = self.tf

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, self.arch.latent_size], tf.float32),
                                      tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int64)])
        def sample(z, alpha, seed):
            return self.Gs(z, level, alpha, seed)

        self._samplers[level] = sample
        return sample

    def generate(self, z: np.ndarray, level: int, alpha: float, seed: int, batch: int = 32) -> np.ndarray:
        """uint8 NHWC images from Gs at a level."""
        tf = self.tf
        out = []
        for i in range(0, len(z), batch):
            x = self.sampler(level)(tf.constant(z[i:i + batch], tf.float32), tf.constant(alpha, tf.float32),
                                    tf.constant([seed, i], tf.int64))
            out.append(to_uint8(x.numpy()))
        return np.concatenate(out)

    # -- data
    def data_stream(self, level: int, position: int):
        """An iterator of uint8 [mb, H, W, 3] minibatches of a level, starting `position` images in."""
        tf, c = self.tf, self.config
        base = R.level_dataset(self.data.files[level])
        epoch, offset = divmod(position, self.data.count)
        buf = min(c.shuffle_buffer, self.data.count)

        def one_epoch(e):
            return base.shuffle(buf, seed=e + c.seed * 1_000_003, reshuffle_each_iteration=False) if buf > 1 else base

        ds = tf.data.Dataset.range(epoch, 2 ** 62).flat_map(one_epoch).skip(offset)
        ds = ds.map(lambda x: tf.transpose(x, [1, 2, 0])).batch(self.schedule.minibatch(level), drop_remainder=True)
        return iter(ds.prefetch(2))

    def reals(self, level: int, n: int) -> np.ndarray:
        """The first n records of a level (uint8 NHWC), for grids and metrics."""
        ds = R.level_dataset(self.data.files[level]).take(n)
        return np.stack([np.transpose(x.numpy(), (1, 2, 0)) for x in ds])


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8."""
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def upscale_to(images: np.ndarray, height: int) -> np.ndarray:
    """Nearest-neighbour upscaling of uint8 NHWC to a height (grids show every level at full size)."""
    f = height // images.shape[1]
    return images.repeat(f, axis=1).repeat(f, axis=2) if f > 1 else images


def grid_png(images: np.ndarray, cols: int, path: Path) -> None:
    """Tile uint8 NHWC images into rows of `cols` and write a PNG atomically."""
    from PIL import Image

    from curate.core.atomic import atomic_path

    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = img
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")


# ---- run folders --------------------------------------------------------------------------------

def new_run_dir(runs_dir: str | os.PathLike, config_name: str) -> Path:
    """<runs_dir>/<NNNNN>-<config>, numbered one past the highest there; mkdir is the lock, never reused."""
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    nums = [int(p.name.split("-", 1)[0]) for p in runs.iterdir() if p.name[:5].isdigit()]
    n = max(nums, default=-1) + 1
    while True:
        path = runs / f"{n:05d}-{config_name}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def load_run(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and dataset entry a run folder was started with (TrainError if it is not a run)."""
    p = Path(run_dir) / CONFIG_FILE
    if not p.is_file():
        raise TrainError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); give one that `curate train` made")
    saved = json.loads(p.read_text())
    return TrainConfig.from_json(saved["config"]), saved["dataset"]


def _truncate_stats(path: Path, last_tick: int) -> None:
    """Drop stats lines written after the checkpoint a run resumes from (they will be written again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["tick"] <= last_tick]
    from curate.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(line + "\n" for line in keep))


def write_scalars(writer, scalars: dict[str, float], step: int) -> None:
    """TensorBoard scalars through tf.summary.write with the scalars plugin's metadata.

    tf.summary.scalar lives in the tensorboard package, which tensorflow-cpu does not install; the
    event files written here read the same in TensorBoard.
    """
    from tensorflow.core.framework import summary_pb2

    from curate.train.stylegan.ops import tf

    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
                                       data_class=summary_pb2.DATA_CLASS_SCALAR)
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.write(tag, tf.constant(float(value), tf.float32), metadata=meta)
    writer.flush()


def progress_line(s: dict[str, Any]) -> str:
    """One line per tick."""
    swd = f"  swd {s['swd'][-1]:.2f}" if s.get("swd") else ""
    fid = f"  fid {s['fid']:.2f}" if s.get("fid") is not None else ""
    return (f"tick {s['tick']:<4d} kimg {s['kimg']:<9.3f} res {s['height']}x{s['width']:<4d} alpha {s['alpha']:.3f}  "
            f"loss_g {s['loss_g']:.3f}  loss_d {s['loss_d']:.3f}  r1 {s['r1']:.3f}  "
            f"{s['img_per_s']:.1f} img/s  {s['sec_per_tick']:.1f} s/tick{swd}{fid}")


# ---- the loop -----------------------------------------------------------------------------------

def run_training(config: TrainConfig, dataset_dir: str | os.PathLike | None, runs_dir: str | os.PathLike = "runs",
                 resume: str | os.PathLike | None = None, echo: Callable[[str], None] = print,
                 progress: bool = True, stop_after_ticks: int | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns a summary. `stop_after_ticks` ends early as a kill would, after a tick."""
    tf_start = time.time()
    if resume is not None:
        run_dir = Path(resume)
        data = open_dataset(dataset_dir or load_run(run_dir)[1]["path"])
    else:
        data = open_dataset(dataset_dir)
        run_dir = None
    trainer = Trainer(config, data)
    tf, c, sched, cnt = trainer.tf, config, trainer.schedule, trainer.counters
    if run_dir is None:
        run_dir = new_run_dir(runs_dir, c.name)
        write_json(run_dir / CONFIG_FILE, {"config": c.to_json(), "dataset": data.to_json(),
                                           "levels": [list(trainer.arch.size(k)) for k in
                                                      range(sched.start_level, trainer.arch.full_level + 1)]})
    manager = tf.train.CheckpointManager(trainer.checkpoint, str(run_dir / "checkpoints"), max_to_keep=c.keep_checkpoints)
    resumed_from = None
    if resume is not None:
        if manager.latest_checkpoint is None:
            raise TrainError(f"{run_dir} has no checkpoint yet; start a new run instead")
        trainer.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        resumed_from = int(cnt.nimg.numpy())
        _truncate_stats(run_dir / STATS_FILE, int(cnt.tick.numpy()))
        echo(f"train: resuming {run_dir} at kimg {resumed_from / 1000:.3f} (tick {int(cnt.tick.numpy())})")
    else:
        level0, alpha0 = sched.phase(0)
        cnt.last_level.assign(level0)
        cnt.last_fading.assign(int(alpha0 < 1))
        for gs, g in zip(trainer.Gs.variables, trainer.G.variables):
            gs.assign(g)

    writer = tf.summary.create_file_writer(str(run_dir))
    end_level = trainer.arch.full_level
    full_h = 2 ** end_level
    grid_n = c.grid_cols * c.grid_rows
    grid_z = np.random.RandomState(c.seed).randn(grid_n, trainer.arch.latent_size).astype(np.float32)
    if not (run_dir / "reals.png").exists():
        grid_png(upscale_to(trainer.reals(end_level, grid_n), full_h), c.grid_cols, run_dir / "reals.png")
    fid_model = None
    if c.fid_weights:
        from curate.train.stylegan.swd import InceptionFeatures

        fid_model = InceptionFeatures(c.fid_weights)

    total_nimg = int(round(c.total_kimg * 1000))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_nimg, initial=int(cnt.nimg.numpy()), unit="img", unit_scale=True, leave=False)
        echo = bar.write
    stream_level, stream = None, None
    ticks_run, last_stats = 0, None
    tick_time = time.time()
    tick_losses: list[dict] = []
    while int(cnt.nimg.numpy()) < total_nimg:
        nimg = int(cnt.nimg.numpy())
        level, alpha = sched.phase(nimg)
        fading = int(alpha < 1)
        if (level, fading) != (int(cnt.last_level.numpy()), int(cnt.last_fading.numpy())):
            # NVlabs resets Adam whenever floor or ceil of lod changes: each fade-in and each stabilise phase
            trainer.opt_g.reset()
            trainer.opt_d.reset()
            if level != int(cnt.last_level.numpy()):
                cnt.level_start_nimg.assign(nimg)
            cnt.last_level.assign(level)
            cnt.last_fading.assign(fading)
        if stream_level != level:
            stream = trainer.data_stream(level, nimg - int(cnt.level_start_nimg.numpy()))
            stream_level = level
        mb = sched.minibatch(level)
        lr_g, lr_d = sched.lrates(level)
        out = trainer.step_fn(level)(next(stream), tf.constant(alpha, tf.float32), cnt.step.read_value(),
                                     tf.constant(lr_g, tf.float32), tf.constant(lr_d, tf.float32))
        tick_losses.append(out)
        cnt.step.assign_add(1)
        cnt.nimg.assign_add(mb)
        if bar is not None:
            bar.update(mb)
        nimg = nimg + mb
        done = nimg >= total_nimg
        if not done and nimg < int(cnt.tick_start_nimg.numpy()) + sched.tick_nimg(level):
            continue

        # ---- tick end
        seconds = time.time() - tick_time
        tick_imgs = nimg - int(cnt.tick_start_nimg.numpy())
        cnt.tick.assign_add(1)
        cnt.tick_start_nimg.assign(nimg)
        cnt.seconds.assign_add(seconds)
        tick = int(cnt.tick.numpy())
        h, w = trainer.arch.size(level)
        means = {k: float(np.mean([float(o[k]) for o in tick_losses])) for k in tick_losses[0]}
        tick_losses = []
        if trainer.scale_d.scale is not None:  # mixed_float16: the scales as the tick leaves them
            means["loss_scale_g"] = float(trainer.scale_g.scale.numpy())
            means["loss_scale_d"] = float(trainer.scale_d.scale.numpy())
        stats = {"tick": tick, "kimg": nimg / 1000, "level": level, "height": h, "width": w, "alpha": alpha,
                 "minibatch": mb, "lr_g": lr_g, "lr_d": lr_d, **means, "img_per_s": tick_imgs / max(seconds, 1e-9),
                 "sec_per_tick": seconds, "total_seconds": float(cnt.seconds.numpy())}
        metric_start = time.time()
        grid = trainer.generate(grid_z, level, alpha, seed=c.seed)
        grid_png(upscale_to(grid, full_h), c.grid_cols, run_dir / f"fakes{tick:05d}.png")
        if c.swd_images and (tick % c.swd_ticks == 0 or done):
            reals = trainer.reals(level, c.swd_images)
            z = np.random.RandomState(c.seed + 1).randn(len(reals), trainer.arch.latent_size).astype(np.float32)
            from curate.train.stylegan.swd import swd

            stats["swd"] = swd(reals, trainer.generate(z, level, alpha, seed=c.seed + 1), seed=tick)
        if fid_model is not None and (tick % c.fid_ticks == 0 or done):
            from curate.train.stylegan.swd import fid

            reals = trainer.reals(level, c.fid_images)
            z = np.random.RandomState(c.seed + 2).randn(len(reals), trainer.arch.latent_size).astype(np.float32)
            stats["fid"] = fid(fid_model(reals), fid_model(trainer.generate(z, level, alpha, seed=c.seed + 2)))
        stats["metric_seconds"] = time.time() - metric_start
        with open(run_dir / STATS_FILE, "a") as f:
            f.write(json.dumps(stats) + "\n")
        scalars = {f"train/{k}": stats[k] for k in ("loss_g", "loss_d", "r1", "score_real", "score_fake", "alpha",
                                                      "img_per_s")}
        scalars["train/resolution"] = h
        for k in ("loss_scale_g", "loss_scale_d", "overflow_g", "overflow_d"):
            if k in stats:
                scalars[f"precision/{k}"] = stats[k]
        for i, v in enumerate(stats.get("swd", [])[:-1]):
            scalars[f"metrics/swd_level{i}"] = v
        if "swd" in stats:
            scalars["metrics/swd"] = stats["swd"][-1]
        if "fid" in stats:
            scalars["metrics/fid"] = stats["fid"]
        write_scalars(writer, scalars, nimg)
        line = progress_line(stats)
        with open(run_dir / "log.txt", "a") as f:
            f.write(line + "\n")
        echo(line)
        if tick % c.snapshot_ticks == 0 or done:
            manager.save(checkpoint_number=tick)
        last_stats = stats
        ticks_run += 1
        tick_time = time.time()
        if stop_after_ticks is not None and ticks_run >= stop_after_ticks:
            break
    if bar is not None:
        bar.close()
    if manager.latest_checkpoint is None or int(manager.latest_checkpoint.rsplit("-", 1)[1]) != int(cnt.tick.numpy()):
        manager.save(checkpoint_number=int(cnt.tick.numpy()))
    nimg = int(cnt.nimg.numpy())
    return {"run_dir": str(run_dir), "kimg": nimg / 1000, "ticks": int(cnt.tick.numpy()), "ticks_run": ticks_run,
            "finished": nimg >= total_nimg, "resumed_from_kimg": None if resumed_from is None else resumed_from / 1000,
            "last": last_stats, "seconds": time.time() - tf_start,
            "start": trainer.arch.size(sched.start_level), "end": trainer.arch.size(end_level)}


def summary_line(s: dict[str, Any]) -> str:
    """One line a person reads at the end of `curate train`."""
    last = s["last"] or {}
    swd = f", SWD {last['swd'][-1]:.2f}" if last.get("swd") else ""
    state = "finished" if s["finished"] else "stopped (resume with --resume)"
    resumed = f" (resumed at kimg {s['resumed_from_kimg']:.3f})" if s["resumed_from_kimg"] is not None else ""
    return (f"train: {state} at kimg {s['kimg']:.3f}, tick {s['ticks']}{resumed}; "
            f"{s['start'][0]}x{s['start'][1]} -> {last.get('height', '?')}x{last.get('width', '?')} "
            f"of {s['end'][0]}x{s['end'][1]}{swd}; {s['ticks_run']} ticks in {s['seconds']:.0f}s -> {s['run_dir']}")


# ---- generate -----------------------------------------------------------------------------------

def generate_images(run_dir: str | os.PathLike, seeds: list[int], out_dir: str | os.PathLike,
                    psi: float | None = None, cutoff: int | None = None, steps: int = 8) -> dict[str, Any]:
    """One PNG per seed from the run's latest Gs (truncated), plus an interpolation strip through the seeds in w."""
    from curate.train.stylegan.ops import tf

    config, ds = load_run(run_dir)
    arch = config.arch(ds["height"], ds["width"])
    from curate.train.stylegan.networks import Generator
    from curate.train.stylegan.schedule import Schedule

    Gs = Generator(arch, seed=config.seed, name="Gs")
    counters = tf.Module(name="counters")
    counters.nimg = tf.Variable(0, dtype=tf.int64, trainable=False)
    latest = tf.train.latest_checkpoint(str(Path(run_dir) / "checkpoints"))
    if latest is None:
        raise TrainError(f"{run_dir} has no checkpoint yet")
    tf.train.Checkpoint(Gs=Gs, counters=counters).restore(latest).expect_partial()
    level, alpha = Schedule(config, arch.full_level).phase(int(counters.nimg.numpy()))
    psi = config.truncation_psi if psi is None else psi
    cutoff = config.truncation_cutoff if cutoff is None else cutoff
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    z = np.stack([np.random.RandomState(s).randn(arch.latent_size) for s in seeds]).astype(np.float32)
    ws = Gs.ws(tf.constant(z), level, tf.constant([0, 0], tf.int64))
    ws = Gs.truncate(ws, psi, cutoff)
    full_h = 2 ** arch.full_level

    def render(w, noise_seed):
        return upscale_to(to_uint8(Gs.synthesis(w, level, tf.constant(alpha), tf.constant([noise_seed, 0], tf.int64)).numpy()), full_h)

    files = []
    for i, s in enumerate(seeds):
        img = render(ws[i:i + 1], s)
        path = out / f"seed{s:04d}.png"
        grid_png(img, 1, path)
        files.append(str(path))
    strip = None
    if len(seeds) > 1:
        t = np.linspace(0.0, 1.0, steps, endpoint=False, dtype=np.float32)
        frames = [ws[i] + (ws[i + 1] - ws[i]) * t[:, None, None] for i in range(len(seeds) - 1)] + [ws[-1:]]
        frames = tf.concat(frames, axis=0)
        # frame by frame with one noise seed, so that only w moves along the strip
        strip_imgs = np.concatenate([render(frames[i:i + 1], seeds[0]) for i in range(len(frames))])
        strip = out / "interpolation.png"
        grid_png(strip_imgs, len(strip_imgs), strip)
    return {"files": files, "strip": None if strip is None else str(strip), "level": level, "alpha": alpha,
            "psi": psi, "kimg": int(counters.nimg.numpy()) / 1000}


def resume_config(run_dir: str | os.PathLike, changes: dict[str, Any]) -> TrainConfig:
    """A run's saved config with the allowed changes for a resume (TrainError for a change that alters a step)."""
    config, _ = load_run(run_dir)
    bad = sorted(set(changes) - RESUMABLE)
    if bad:
        raise TrainError(f"cannot change {', '.join(bad)} when resuming (only {', '.join(sorted(RESUMABLE))})")
    try:
        return replace(config, **changes)
    except ValueError as e:
        raise TrainError(str(e)) from None
