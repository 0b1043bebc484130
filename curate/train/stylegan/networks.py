"""StyleGAN generator (mapping + synthesis) and its mirrored discriminator, for H:W = 2**k : 1 images.

Levels are log2 of the image height: level 2 is the learned 4x2 constant (for 2:1 data), level 9 is
512x256. Both networks are built whole, up to the full resolution, once; a call at `level` with fade-in
`alpha` runs only the blocks up to that level, so each level's traced graph costs what that resolution
costs (NVlabs builds the full graph and masks it with lod instead).

Mixed precision (`compute_dtype` float16 or bfloat16): the synthesis network and the discriminator
run in that dtype between their boundaries (after G's 4x2 block, from D's input image) and hand
float32 back (the image, the scores); variables stay float32 and are cast where they are read. The
parts NVlabs keeps in float32 stay float32 here too: the mapping network and the style affine maps
(StyleGAN2-ADA), instance-norm and minibatch-stddev statistics (StyleGAN's float16 option), and
both 4x2 ends (StyleGAN2-ADA runs only its top resolutions in float16). G's 4x2 block matters
most: the learned constant starts with zero variance, so instance norm multiplies its gradients by
1/sqrt(1e-8) = 1e4, and in float16 the smoke config's G overflowed at every loss scale above 32.
D's epilogue is minibatch stddev, the last convolution and the two dense layers. They cost little
and are where the dynamic range is. With `compute_dtype=None` every layer computes in its input's
dtype (float32 in training; float64 in the gradient checks).
"""

from __future__ import annotations

from curate.train.stylegan.config import Arch
from curate.train.stylegan.ops import (
    Conv2d, Dense, Noise, StyleMod, at_least_float32, blur2d, downscale2d, instance_norm, lrelu,
    minibatch_stddev, pixel_norm, replica_mean, replica_normal, tf, upscale2d,
)


class Mapping(tf.Module):
    """z -> w: pixel norm, then `mapping_layers` equalised dense layers with lr multiplier 0.01."""

    def __init__(self, rng, arch: Arch):
        super().__init__(name="mapping")
        dims = [arch.latent_size] + [arch.mapping_fmaps] * (arch.mapping_layers - 1) + [arch.dlatent_size]
        self.layers = [Dense(rng, a, b, lrmul=arch.mapping_lrmul, name=f"dense{i}")
                       for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]

    def __call__(self, z):
        x = pixel_norm(z)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x


class Epilogue(tf.Module):
    """After every synthesis convolution: noise, bias, leaky ReLU, instance norm, style modulation."""

    def __init__(self, rng, arch: Arch, channels: int, name=None):
        super().__init__(name=name)
        self.noise = Noise(channels)
        self.bias = tf.Variable(tf.zeros([channels]), name="bias")
        self.style = StyleMod(rng, arch.dlatent_size, channels)

    def __call__(self, x, w, seed):
        x = lrelu(self.noise(x, seed) + tf.cast(self.bias, x.dtype))
        return self.style(instance_norm(x), w)


class Synthesis(tf.Module):
    """w per layer -> image at a level, lerping from the previous level's RGB during fade-in."""

    def __init__(self, rng, arch: Arch, compute_dtype=None):
        super().__init__(name="synthesis")
        self.arch = arch
        self.compute_dtype = compute_dtype
        bh, bw = arch.size(2)
        self.const = tf.Variable(tf.ones([1, bh, bw, arch.nf(1)]), name="const")
        self.conv0 = [None, None]  # indexed by level; level 2 starts from the constant
        self.epi0 = [None, None]
        self.conv1 = [None, None]
        self.epi1 = [None, None]
        self.torgb = [None, None]
        for level in range(2, arch.full_level + 1):
            cin, cout = arch.nf(level - 2), arch.nf(level - 1)
            self.conv0.append(None if level == 2 else Conv2d(
                rng, cin, cout, 3, up=True, fused=arch.fused(level), bias=False, name=f"up{level}"))
            self.epi0.append(Epilogue(rng, arch, cout, name=f"epi0_{level}"))
            self.conv1.append(Conv2d(rng, cout, cout, 3, bias=False, name=f"conv{level}"))
            self.epi1.append(Epilogue(rng, arch, cout, name=f"epi1_{level}"))
            self.torgb.append(Conv2d(rng, cout, 3, 1, gain=1.0, name=f"torgb{level}"))

    def block(self, x, level, ws, seeds):
        i = 2 * (level - 2)
        if level == 2:
            x = tf.tile(self.const, [tf.shape(ws)[0], 1, 1, 1])
        else:
            x = blur2d(self.conv0[level](x))
        x = self.epi0[level](x, ws[:, i], seeds[i])
        return self.epi1[level](self.conv1[level](x), ws[:, i + 1], seeds[i + 1])

    def blocks(self, ws, level: int, seed, hook=None, upto: int | None = None):
        """The feature maps of the last two levels run (prev, x), through `upto` (default: `level`).

        The noise is drawn for a network of `level`, so the maps of a level are those its image is made
        from. `hook(lv, x) -> x`, when given, edits each level's output before the next level reads it
        (curate explore's local edits); without one, the ops are exactly the training graph's.
        """
        seeds = tf.random.experimental.stateless_split(seed, self.arch.num_layers(level))
        x = prev = None
        for lv in range(2, (level if upto is None else upto) + 1):
            prev, x = x, self.block(x, lv, ws, seeds)
            if lv == 2 and self.compute_dtype is not None:
                x = tf.cast(x, self.compute_dtype)
            if hook is not None:
                x = hook(lv, x)
        return prev, x

    def __call__(self, ws, level: int, alpha, seed, hook=None):
        """ws [N, >= num_layers(level), D], alpha scalar in [0, 1], seed int [2] for the noise."""
        prev, x = self.blocks(ws, level, seed, hook)
        img = self.torgb[level](x)
        if level > 2:
            low = upscale2d(self.torgb[level - 1](prev))
            img = low + (img - low) * tf.cast(alpha, img.dtype)
        return at_least_float32(img)


class Generator(tf.Module):
    """Mapping + synthesis + the running average of w that truncation pulls towards."""

    def __init__(self, arch: Arch, seed: int, name="G", compute_dtype=None):
        super().__init__(name=name)
        self.arch = arch
        rng = tf.random.Generator.from_seed(seed)
        self.mapping = Mapping(rng, arch)
        self.synthesis = Synthesis(rng, arch, compute_dtype)
        self.w_avg = tf.Variable(tf.zeros([arch.dlatent_size]), trainable=False, name="w_avg")

    def ws(self, z, level: int, seed, mixing_prob: float = 0.0, update_w_avg: float | None = None):
        """Per-layer w for a level: broadcast, with style mixing (one crossover per minibatch) when asked."""
        n_layers = self.arch.num_layers(level)
        w = self.mapping(z)
        if update_w_avg is not None:  # the global batch's mean w under several replicas
            mean = replica_mean(tf.reduce_mean(w, axis=0))
            self.w_avg.assign(mean + (self.w_avg - mean) * update_w_avg)
        ws = tf.tile(w[:, None], [1, n_layers, 1])
        if mixing_prob > 0:
            s = tf.random.experimental.stateless_split(seed, 3)
            w2 = self.mapping(replica_normal(tf.shape(z), seed=s[0]))
            cut_rand = tf.random.stateless_uniform([], seed=s[1], minval=1, maxval=max(n_layers, 2), dtype=tf.int32)
            mix = tf.random.stateless_uniform([], seed=s[2]) < mixing_prob
            cutoff = tf.where(mix, cut_rand, n_layers)
            ws = tf.where((tf.range(n_layers) < cutoff)[None, :, None], ws, w2[:, None])
        return ws

    def truncate(self, ws, psi, cutoff: int):
        """Pull the first `cutoff` layers' w towards the average by psi, a float or a scalar tensor (sampling only)."""
        n = ws.shape[1]
        coefs = tf.where(tf.range(n) < cutoff, tf.cast(psi, ws.dtype), tf.constant(1.0, ws.dtype))[None, :, None]
        return self.w_avg + (ws - self.w_avg) * coefs

    def __call__(self, z, level: int, alpha, seed, mixing_prob: float = 0.0, update_w_avg=None,
                 psi: float | None = None, cutoff: int = 8):
        """Images [N, H, W, 3] in about [-1, 1] at a level."""
        s = tf.random.experimental.stateless_split(seed, 2)
        ws = self.ws(z, level, s[0], mixing_prob, update_w_avg)
        if psi is not None and psi != 1.0:
            ws = self.truncate(ws, psi, cutoff)
        return self.synthesis(ws, level, alpha, s[1])


class Discriminator(tf.Module):
    """The synthesis network mirrored: fromRGB, blur + downscaling blocks, minibatch stddev, two dense."""

    def __init__(self, arch: Arch, seed: int, name="D", compute_dtype=None):
        super().__init__(name=name)
        self.arch = arch
        self.compute_dtype = compute_dtype
        rng = tf.random.Generator.from_seed(seed)
        self.fromrgb = [None, None]
        self.conv0 = [None, None]
        self.conv1 = [None, None]
        for level in range(2, arch.full_level + 1):
            c = arch.nf(level - 1)
            self.fromrgb.append(Conv2d(rng, 3, c, 1, name=f"fromrgb{level}"))
            if level > 2:
                self.conv0.append(Conv2d(rng, c, c, 3, name=f"conv{level}"))
                self.conv1.append(Conv2d(rng, c, arch.nf(level - 2), 3, down=True, fused=arch.fused(level),
                                         name=f"down{level}"))
            else:
                self.conv0.append(None)
                self.conv1.append(None)
        bh, bw = arch.size(2)
        self.final_conv = Conv2d(rng, arch.nf(1) + 1, arch.nf(1), 3, name="final_conv")
        self.final_dense0 = Dense(rng, arch.nf(1) * bh * bw, arch.nf(0), name="final_dense0")
        self.final_dense1 = Dense(rng, arch.nf(0), 1, gain=1.0, name="final_dense1")

    def block(self, x, level):
        x = lrelu(self.conv0[level](x))
        return lrelu(self.conv1[level](blur2d(x)))

    def __call__(self, img, level: int, alpha):
        """Scores [N] for images [N, H, W, 3] at a level."""
        if self.compute_dtype is not None:
            img = tf.cast(img, self.compute_dtype)
        x = lrelu(self.fromrgb[level](img))
        if level > 2:
            x = self.block(x, level)
            low = lrelu(self.fromrgb[level - 1](downscale2d(img)))
            x = low + (x - low) * tf.cast(alpha, x.dtype)
        for lv in range(level - 1, 2, -1):
            x = self.block(x, lv)
        x = minibatch_stddev(at_least_float32(x), self.arch.mbstd_group)  # the 4x2 epilogue: >= float32
        x = lrelu(self.final_conv(x))
        x = lrelu(self.final_dense0(tf.reshape(x, [tf.shape(x)[0], -1])))
        return tf.reshape(self.final_dense1(x), [-1])


def fade_reals(x, level: int, alpha):
    """Real images at a level during fade-in: lerp from their blocky half-resolution version (NVlabs)."""
    if level <= 2:
        return x
    low = upscale2d(downscale2d(x))
    return low + (x - low) * alpha
