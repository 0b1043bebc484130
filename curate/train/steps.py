"""Stepping: the networks, their own Adam, loss scales and counters, and the per-level compiled train step.

One step is one D update (with R1), one G update and the Gs average. Every random draw in it is
stateless, seeded by (seed, step number), so a resumed run draws the same numbers. Under
mixed_float16 each update goes through its network's loss scale (curate.train.stylegan.precision).

With `replicas` above 1 the variables are mirrored under a tf.distribute strategy
(curate.train.replicas) and the step runs once per replica on its rows of the global minibatch;
with 1 there is no strategy and the step is the single-device one, op for op.
"""

from __future__ import annotations

import contextlib
import json
from typing import Callable

import numpy as np

from curate.train.data import DatasetInfo, first_images, minibatches
from curate.train.replicas import make_strategy, replica_count
from curate.train.runfolder import TrainError
from curate.train.stylegan.config import TrainConfig

COUNTERS = ("nimg", "step", "tick", "tick_start_nimg", "level_start_nimg", "last_level", "last_fading")


def make_adam(tf, variables, beta1: float, beta2: float, eps: float):
    """Adam over `variables` with its moments as checkpointed variables and a reset."""

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


def make_counters(tf):
    """The run's position as checkpointed int64 variables (images, steps, ticks, phase) plus seconds trained."""
    counters = tf.Module(name="counters")
    for name in COUNTERS:
        setattr(counters, name, tf.Variable(0, dtype=tf.int64, trainable=False, name=name))
    counters.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
    return counters


def check_levels(data: DatasetInfo, arch, config: TrainConfig) -> None:
    """TrainError unless the records have a level file at the run's end and start heights (every backend)."""
    files = data.files
    if arch.full_level not in files:
        raise TrainError(f"end_height {arch.full_height} has no level file in {data.path} "
                         f"(levels: {', '.join(str(2 ** k) for k in sorted(files))})")
    if config.start_height not in [2 ** k for k in files]:
        raise TrainError(f"start_height {config.start_height} has no level file in {data.path}")


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8."""
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


class Trainer:
    """Networks, optimizers, counters and the per-level compiled step; no files (run_training does those)."""

    def __init__(self, config: TrainConfig, data: DatasetInfo):
        from curate.train.stylegan.networks import Discriminator, Generator
        from curate.train.stylegan.ops import tf
        from curate.train.stylegan.precision import compute_dtype, loss_scale
        from curate.train.stylegan.schedule import Schedule

        config = config.resolved(data.height, data.width)  # start_height 0: 4x4 for square records, 8x4 for 2:1
        self.tf, self.config, self.data = tf, config, data
        self.backend = "tensorflow"
        self.arch = config.arch(data.height, data.width)
        self._check_levels()
        self.schedule = Schedule(config, self.arch.full_level)
        self.strategy = make_strategy(config.replicas)  # None for one device
        self.replicas = replica_count(self.strategy)
        self._check_minibatches()
        dtype = compute_dtype(config.precision)
        with self.scope():  # every variable mirrored under a strategy (updated per replica, identically)
            self.G = Generator(self.arch, seed=config.seed, compute_dtype=dtype)
            self.D = Discriminator(self.arch, seed=config.seed + 1, compute_dtype=dtype)
            # same init: Gs starts as a copy of G; it samples in float32 whatever G trains in
            self.Gs = Generator(self.arch, seed=config.seed, name="Gs")
            c = config
            self.opt_g = make_adam(tf, self.G.trainable_variables, c.adam_beta1, c.adam_beta2, c.adam_epsilon)
            self.opt_d = make_adam(tf, self.D.trainable_variables, c.adam_beta1, c.adam_beta2, c.adam_epsilon)
            self.scale_g = loss_scale(c.precision, c.loss_scale_init, c.loss_scale_growth_steps, "loss_scale_g")
            self.scale_d = loss_scale(c.precision, c.loss_scale_init, c.loss_scale_growth_steps, "loss_scale_d")
            self.counters = make_counters(tf)
        self._steps: dict[int, Callable] = {}
        self._samplers: dict[int, Callable] = {}

    def _check_levels(self) -> None:
        check_levels(self.data, self.arch, self.config)

    def _check_minibatches(self) -> None:
        """Each level's minibatch must split into whole minibatch-stddev groups on every replica."""
        n, group = self.replicas, self.config.mbstd_group
        if n == 1:
            return
        if self.config.xla:  # a jit-compiled replica step cannot all-reduce inside it (merge_call in a nested function)
            raise TrainError(f"xla=true is not supported with {n} replicas yet; set xla=false (or replicas=1)")
        unit = n * group
        levels = range(self.schedule.start_level, self.arch.full_level + 1)
        bad = [lv for lv in levels if self.schedule.minibatch(lv) % unit]
        if bad:
            sizes = ", ".join(f"{self.schedule.minibatch(lv)} at {'x'.join(map(str, self.arch.size(lv)))}" for lv in bad)
            table = {str(2 ** lv): -(-self.schedule.minibatch(lv) // unit) * unit for lv in levels}
            raise TrainError(f"minibatch {sizes} does not split over {n} replicas: each must be a multiple of "
                             f"replicas x mbstd_group = {unit}, e.g. --set 'minibatch={json.dumps(table)}'")

    def copy_g_to_gs(self) -> None:
        """Gs starts as a copy of G (a new run)."""
        for gs, g in zip(self.Gs.variables, self.G.variables):
            gs.assign(g)

    def scope(self):
        """The strategy's scope (variables made in it are mirrored); a no-op with one device."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    # -- the step
    def step_fn(self, level: int, compiled: bool = True) -> Callable:
        """The training step at a level: step(reals_u8, alpha, step, lr_g, lr_d) -> losses, compiled once per level.

        Under mixed_float16 the step also returns overflow_d / overflow_g (1.0 = that update was skipped).
        """
        if compiled and level in self._steps:
            return self._steps[level]
        step = self._step(level) if self.strategy is None else self._distributed(self._step(level))
        if not compiled:
            return step
        tf, mb, (h, w) = self.tf, self.schedule.minibatch(level), self.arch.size(level)
        spec = [tf.TensorSpec([mb, h, w, 3], tf.uint8), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int64),
                tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32)]
        fn = tf.function(step, input_signature=spec, jit_compile=True if self.config.xla else None, autograph=False)
        self._steps[level] = fn
        return fn

    def train_step(self, level: int, alpha: float, reals_u8) -> dict:
        """One compiled step on a minibatch at the current step number; advances the step and image counters."""
        tf, cnt = self.tf, self.counters
        lr_g, lr_d = self.schedule.lrates(level)
        out = self.step_fn(level)(reals_u8, tf.constant(alpha, tf.float32), cnt.step.read_value(),
                                  tf.constant(lr_g, tf.float32), tf.constant(lr_d, tf.float32))
        cnt.step.assign_add(1)
        cnt.nimg.assign_add(self.schedule.minibatch(level))
        return out

    def _distributed(self, step: Callable) -> Callable:
        """The step once per replica, each on its rows of the global minibatch; the losses averaged over replicas."""
        tf, strategy = self.tf, self.strategy

        def distributed(reals_u8, alpha, step_number, lr_g, lr_d):
            out = strategy.run(step, args=(reals_u8, alpha, step_number, lr_g, lr_d))
            return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in out.items()}

        return distributed

    def _step(self, level: int) -> Callable:
        """One replica's step (the whole step with one device): its rows of the reals and of every draw."""
        from curate.train.stylegan.networks import fade_reals
        from curate.train.stylegan.ops import replica_rows

        tf, c = self.tf, self.config
        mb = self.schedule.minibatch(level)
        update_d, update_g, average = self._update_d(level), self._update_g(level), self._average(mb)

        def step(reals_u8, alpha, step, lr_g, lr_d):
            seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(c.seed, tf.int64), step]), 5)
            reals = tf.cast(replica_rows(reals_u8), tf.float32) / 127.5 - 1.0
            if c.mirror_augment:
                flip = replica_rows(tf.random.stateless_uniform([mb], seed=seeds[0])) < 0.5
                reals = tf.where(flip[:, None, None, None], tf.reverse(reals, axis=[2]), reals)
            reals = fade_reals(reals, level, alpha)
            loss_d, parts, applied_d = update_d(reals, alpha, seeds[1], seeds[2], lr_d)
            loss_g, applied_g = update_g(alpha, seeds[3], seeds[4], lr_g)
            average()
            out = {"loss_g": loss_g, "loss_d": loss_d, **parts}
            if applied_d is not None:
                out["overflow_d"] = 1.0 - tf.cast(applied_d, tf.float32)
                out["overflow_g"] = 1.0 - tf.cast(applied_g, tf.float32)
            return out

        return step

    def _update_d(self, level: int) -> Callable:
        from curate.train.stylegan.loss import d_loss
        from curate.train.stylegan.ops import replica_mean_grads, replica_rows

        tf, c, G, D, scale = self.tf, self.config, self.G, self.D, self.scale_d
        mb = self.schedule.minibatch(level)

        def update(reals, alpha, z_seed, noise_seed, lr):
            z = replica_rows(tf.random.stateless_normal([mb, self.arch.latent_size], seed=z_seed))
            with tf.GradientTape() as tape:
                fakes = G(z, level, alpha, noise_seed, mixing_prob=c.style_mixing)
                loss, parts = d_loss(D, reals, fakes, level, alpha, c.r1_gamma, loss_scale=scale.scale)
                scaled = scale.scale_loss(loss)
            # averaged before the overflow check and Adam, so every replica takes the same decision and update
            grads = replica_mean_grads(tape.gradient(scaled, D.trainable_variables))
            return loss, parts, scale.apply(self.opt_d, grads, lr)

        return update

    def _update_g(self, level: int) -> Callable:
        from curate.train.stylegan.loss import g_loss
        from curate.train.stylegan.ops import replica_mean_grads, replica_rows

        tf, c, G, D, scale = self.tf, self.config, self.G, self.D, self.scale_g
        mb = self.schedule.minibatch(level)

        def update(alpha, z_seed, noise_seed, lr):
            z = replica_rows(tf.random.stateless_normal([mb, self.arch.latent_size], seed=z_seed))
            with tf.GradientTape() as tape:
                fakes = G(z, level, alpha, noise_seed, mixing_prob=c.style_mixing, update_w_avg=c.w_avg_beta)
                loss = g_loss(D, fakes, level, alpha)
                scaled = scale.scale_loss(loss)
            grads = replica_mean_grads(tape.gradient(scaled, G.trainable_variables))
            return loss, scale.apply(self.opt_g, grads, lr)

        return update

    def _average(self, mb: int) -> Callable:
        """Gs <- G + (Gs - G) * beta, beta set so that Gs averages over ema_kimg thousand images."""
        c, G, Gs = self.config, self.G, self.Gs
        beta = 0.5 ** (mb / (c.ema_kimg * 1000.0)) if c.ema_kimg > 0 else 0.0
        g_vars, gs_vars = G.trainable_variables, Gs.trainable_variables

        def average():
            for gs, g in zip(gs_vars, g_vars):
                gs.assign(g + (gs - g) * beta)
            Gs.w_avg.assign(G.w_avg)

        return average

    # -- sampling
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

    def latents(self, n: int, seed: int) -> np.ndarray:
        """n fixed float32 latents from a seed (grids and metrics draw theirs this way)."""
        return np.random.RandomState(seed).randn(n, self.arch.latent_size).astype(np.float32)

    # -- data
    def data_stream(self, level: int, position: int):
        """An iterator of uint8 [mb, H, W, 3] minibatches of a level, starting `position` images in."""
        c = self.config
        return minibatches(self.data.files[level], self.data.count, position, self.schedule.minibatch(level),
                           c.shuffle_buffer, c.seed)

    def reals(self, level: int, n: int) -> np.ndarray:
        """The first n records of a level (uint8 NHWC), for grids and metrics."""
        return first_images(self.data.files[level], n)
