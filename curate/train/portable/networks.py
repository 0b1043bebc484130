"""The StyleGAN generator and discriminator over `keras.ops`, mirroring `curate.train.stylegan.networks`.

Same structure, attribute names and level/alpha semantics as the TF networks, so `load_from_tf` copies a
TF network's weights over by path and the same inputs give the same outputs (tests/test_portable.py).
Differences, on purpose: the noise of each synthesis layer is an argument (`noise`, a list indexed like
the TF network's per-layer seeds) or drawn from a `keras.random.SeedGenerator` the caller passes, never
from hidden state; initial weights come from NumPy's generator seeded with `seed` (the same on every
backend, but not the TF network's initial values: copy those over to compare). Style mixing takes the second latent and the crossover from the
caller. Mixed precision as the TF networks (`compute_dtype`: synthesis after its 4x2 block and D from its
input compute in 16 bits; the mapping, the style affine maps and the statistics stay float32). The w_avg
update and the training step live in the per-backend step modules (jax_step).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from curate.train.portable.ops import (
    Conv2d, Dense, Noise, StyleMod, at_least_float32, blur2d, downscale2d, dtype_of, instance_norm, load_from_tf,
    lrelu, minibatch_stddev, pixel_norm, upscale2d,
)
from curate.train.stylegan.config import Arch

__all__ = ["Mapping", "Synthesis", "Generator", "Discriminator", "draw_noise", "load_from_tf"]


def draw_noise(arch: Arch, level: int, n: int, seed: keras.random.SeedGenerator, dtype="float32") -> list:
    """One standard-normal map [n, H, W, 1] per synthesis layer of a network at `level`, from the caller's seed."""
    return [keras.random.normal([n, *arch.size(2 + i // 2), 1], seed=seed, dtype=dtype)
            for i in range(arch.num_layers(level))]


class Mapping:
    """z -> w: pixel norm, then `mapping_layers` equalised dense layers with lr multiplier 0.01."""

    def __init__(self, rng, arch: Arch):
        dims = [arch.latent_size] + [arch.mapping_fmaps] * (arch.mapping_layers - 1) + [arch.dlatent_size]
        self.layers = [Dense(rng, a, b, lrmul=arch.mapping_lrmul) for a, b in zip(dims[:-1], dims[1:])]

    def __call__(self, z):
        x = pixel_norm(z)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x


class Epilogue:
    """After every synthesis convolution: noise, bias, leaky ReLU, instance norm, style modulation."""

    def __init__(self, rng, arch: Arch, channels: int):
        self.noise = Noise(channels)
        self.bias = keras.Variable(np.zeros([channels], np.float32), name="bias")
        self.style = StyleMod(rng, arch.dlatent_size, channels)

    def __call__(self, x, w, noise):
        x = lrelu(self.noise(x, noise) + ops.cast(self.bias, dtype_of(x)))
        return self.style(instance_norm(x), w)


class Synthesis:
    """w per layer -> image at a level, lerping from the previous level's RGB during fade-in."""

    def __init__(self, rng, arch: Arch, compute_dtype=None):
        self.arch, self.compute_dtype = arch, compute_dtype
        bh, bw = arch.size(2)
        self.const = keras.Variable(np.ones([1, bh, bw, arch.nf(1)], np.float32), name="const")
        self.conv0, self.epi0, self.conv1, self.epi1, self.torgb = ([None, None] for _ in range(5))
        for level in range(2, arch.full_level + 1):
            cin, cout = arch.nf(level - 2), arch.nf(level - 1)
            self.conv0.append(None if level == 2 else Conv2d(rng, cin, cout, 3, up=True, fused=arch.fused(level),
                                                             bias=False))
            self.epi0.append(Epilogue(rng, arch, cout))
            self.conv1.append(Conv2d(rng, cout, cout, 3, bias=False))
            self.epi1.append(Epilogue(rng, arch, cout))
            self.torgb.append(Conv2d(rng, cout, 3, 1, gain=1.0))

    def block(self, x, level, ws, noise):
        i = 2 * (level - 2)
        if level == 2:
            x = ops.tile(ops.cast(self.const, dtype_of(ws)), [ws.shape[0], 1, 1, 1])
        else:
            x = blur2d(self.conv0[level](x))
        x = self.epi0[level](x, ws[:, i], noise[i])
        return self.epi1[level](self.conv1[level](x), ws[:, i + 1], noise[i + 1])

    def blocks(self, ws, level: int, noise=None, seed=None, hook=None, upto: int | None = None):
        """The feature maps of the last two levels run (prev, x), through `upto` (default: `level`).

        `noise` (a list of num_layers(level) maps) or `seed` (a SeedGenerator to draw them from) is required.
        """
        noise = self._noise(ws, level, noise, seed)
        x = prev = None
        for lv in range(2, (level if upto is None else upto) + 1):
            prev, x = x, self.block(x, lv, ws, noise)
            if lv == 2 and self.compute_dtype is not None:  # the 4x2 block stays float32, as in the TF network
                x = ops.cast(x, self.compute_dtype)
            if hook is not None:
                x = hook(lv, x)
        return prev, x

    def _noise(self, ws, level, noise, seed):
        if noise is None:
            if seed is None:
                raise ValueError("Synthesis needs noise maps or a keras.random.SeedGenerator to draw them from")
            return draw_noise(self.arch, level, ws.shape[0], seed, dtype_of(ws))
        if len(noise) < self.arch.num_layers(level):
            raise ValueError(f"level {level} needs {self.arch.num_layers(level)} noise maps, got {len(noise)}")
        return noise

    def __call__(self, ws, level: int, alpha, noise=None, seed=None, hook=None):
        """ws [N, >= num_layers(level), D], alpha scalar in [0, 1]; noise maps or a seed to draw them from."""
        prev, x = self.blocks(ws, level, noise, seed, hook)
        img = self.torgb[level](x)
        if level > 2:
            low = upscale2d(self.torgb[level - 1](prev))
            img = low + (img - low) * ops.cast(alpha, dtype_of(img))
        return at_least_float32(img)


class Generator:
    """Mapping + synthesis + the running average of w that truncation pulls towards."""

    def __init__(self, arch: Arch, seed: int, compute_dtype=None):
        self.arch = arch
        rng = np.random.default_rng(seed)
        self.mapping = Mapping(rng, arch)
        self.synthesis = Synthesis(rng, arch, compute_dtype)
        self.w_avg = keras.Variable(np.zeros([arch.dlatent_size], np.float32), trainable=False, name="w_avg")

    def ws(self, z, level: int, mix=None):
        """Per-layer w for a level: the mapping's w broadcast to every layer.

        Style mixing: `mix=(z2, cutoff)` gives the layers from `cutoff` on z2's w instead (the TF
        network draws z2 and the crossover itself; here the caller draws them, from its own seed).
        """
        n_layers = self.arch.num_layers(level)
        ws = ops.repeat(self.mapping(z)[:, None], n_layers, axis=1)
        if mix is not None:
            z2, cutoff = mix
            w2 = self.mapping(z2)
            ws = ops.where((ops.arange(n_layers) < cutoff)[None, :, None], ws, w2[:, None])
        return ws

    def truncate(self, ws, psi, cutoff: int):
        """Pull the first `cutoff` layers' w towards the average by psi (sampling only)."""
        n = ws.shape[1]
        dt = dtype_of(ws)
        coefs = ops.where(ops.arange(n) < cutoff, ops.cast(psi, dt), ops.cast(1.0, dt))[None, :, None]
        w_avg = ops.cast(self.w_avg, dt)
        return w_avg + (ws - w_avg) * coefs

    def __call__(self, z, level: int, alpha, noise=None, seed=None, psi: float | None = None, cutoff: int = 8,
                 mix=None):
        """Images [N, H, W, 3] in about [-1, 1] at a level; noise maps or a seed to draw them from."""
        ws = self.ws(z, level, mix)
        if psi is not None and psi != 1.0:
            ws = self.truncate(ws, psi, cutoff)
        return self.synthesis(ws, level, alpha, noise, seed)


class Discriminator:
    """The synthesis network mirrored: fromRGB, blur + downscaling blocks, minibatch stddev, two dense."""

    def __init__(self, arch: Arch, seed: int, compute_dtype=None):
        self.arch, self.compute_dtype = arch, compute_dtype
        rng = np.random.default_rng(seed)
        self.fromrgb, self.conv0, self.conv1 = [None, None], [None, None], [None, None]
        for level in range(2, arch.full_level + 1):
            c = arch.nf(level - 1)
            self.fromrgb.append(Conv2d(rng, 3, c, 1))
            self.conv0.append(Conv2d(rng, c, c, 3) if level > 2 else None)
            self.conv1.append(Conv2d(rng, c, arch.nf(level - 2), 3, down=True, fused=arch.fused(level))
                              if level > 2 else None)
        bh, bw = arch.size(2)
        self.final_conv = Conv2d(rng, arch.nf(1) + 1, arch.nf(1), 3)
        self.final_dense0 = Dense(rng, arch.nf(1) * bh * bw, arch.nf(0))
        self.final_dense1 = Dense(rng, arch.nf(0), 1, gain=1.0)

    def block(self, x, level):
        x = lrelu(self.conv0[level](x))
        return lrelu(self.conv1[level](blur2d(x)))

    def __call__(self, img, level: int, alpha):
        """Scores [N] for images [N, H, W, 3] at a level."""
        if self.compute_dtype is not None:
            img = ops.cast(img, self.compute_dtype)
        x = lrelu(self.fromrgb[level](img))
        if level > 2:
            x = self.block(x, level)
            low = lrelu(self.fromrgb[level - 1](downscale2d(img)))
            x = low + (x - low) * ops.cast(alpha, dtype_of(x))
        for lv in range(level - 1, 2, -1):
            x = self.block(x, lv)
        x = minibatch_stddev(at_least_float32(x), self.arch.mbstd_group)
        x = lrelu(self.final_conv(x))
        x = lrelu(self.final_dense0(ops.reshape(x, [x.shape[0], -1])))
        return ops.reshape(self.final_dense1(x), [-1])
