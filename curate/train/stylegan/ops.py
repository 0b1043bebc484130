"""StyleGAN building blocks as `tf.Module`s over plain TensorFlow ops, NHWC (the layout CPU kernels support).

Layers compute in the dtype of their input (weights are cast), so a float64 copy of a network
runs for finite-difference checks and a float16/bfloat16 one for mixed precision; statistics
(instance norm, minibatch stddev) are taken in at least float32, as NVlabs does, because their
epsilon of 1e-8 is 0 in float16 and sums of squares overflow its 65504. Equalised learning rate
(Karras et al. 2018): weights are stored N(0, 1/lrmul) and scaled at run time by
gain / sqrt(fan_in) * lrmul, so Adam sees every layer at the same scale. `blur2d` carries its own
gradient, NVlabs style: the adjoint of a [1,2,1] blur is the flipped blur, whose adjoint is the blur
again, so first and second derivatives (R1 differentiates the discriminator's input gradient) are one
cheap forward depthwise convolution each, with no filter gradient for the constant kernel.
"""

from __future__ import annotations

import math

import numpy as np

from curate.dataset.schema import import_tensorflow

tf = import_tensorflow()

SQRT2 = math.sqrt(2.0)


# ---- several replicas (tf.distribute): every per-sample draw independent of the replica count -------
#
# Under a strategy each replica holds every n-th row of the global minibatch (replica r: rows r, r+n,
# r+2n, ...). Minibatch stddev groups rows i with the same i mod (N / group), so when N / group is a
# multiple of n every group lies whole on one replica, in the same order: the groups are those of one
# device. Random per-sample tensors are drawn at the global size from the same seeds and sliced the
# same way, so the numbers do not depend on how many replicas there are. With no strategy (or one
# replica) every helper is the identity, or the very op it stands for.

def replica_place():
    """(replicas in sync, this replica's id): (1, 0) outside a multi-replica step."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return 1, 0
    return ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group


def replica_rows(x):
    """This replica's rows of a global-batch tensor (rows id, id + n, ...); x itself with one replica."""
    n, rid = replica_place()
    if n == 1:
        return x
    s = tf.shape(x)
    y = tf.reshape(x, tf.concat([[s[0] // n, n], s[1:]], axis=0))
    return tf.gather(y, rid, axis=1)


def _global_shape(shape, n: int):
    shape = tf.convert_to_tensor(shape)
    return tf.concat([shape[:1] * tf.cast(n, shape.dtype), shape[1:]], axis=0)


def replica_normal(shape, seed, dtype=tf.float32):
    """stateless_normal of this replica's rows: `shape` is per replica; drawn at the global size, then sliced."""
    n, _ = replica_place()
    if n == 1:
        return tf.random.stateless_normal(shape, seed=seed, dtype=dtype)
    return replica_rows(tf.random.stateless_normal(_global_shape(shape, n), seed=seed, dtype=dtype))


def replica_uniform(shape, seed, dtype=tf.float32):
    """stateless_uniform of this replica's rows, as replica_normal."""
    n, _ = replica_place()
    if n == 1:
        return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)
    return replica_rows(tf.random.stateless_uniform(_global_shape(shape, n), seed=seed, dtype=dtype))


def replica_mean(x):
    """The mean of x over the replicas (all-reduce); x itself with one replica."""
    n, _ = replica_place()
    if n == 1:
        return x
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, x)


def replica_mean_grads(grads):
    """Gradients averaged over the replicas (the global batch's, losses being batch means); None ones kept."""
    n, _ = replica_place()
    if n == 1:
        return grads
    present = [g for g in grads if g is not None]
    reduced = iter(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, present))
    return [None if g is None else next(reduced) for g in grads]


def lrelu(x, alpha: float = 0.2):
    """Leaky ReLU with NVlabs' slope 0.2."""
    return tf.nn.leaky_relu(x, alpha)


def at_least_float32(x):
    """16-bit tensors as float32; float32 and float64 ones unchanged."""
    return tf.cast(x, tf.float32) if x.dtype.size < 4 else x


def pixel_norm(x, axis: int = -1, eps: float = 1e-8):
    """Normalise each feature vector to unit average square (ProGAN's pixelwise normalisation)."""
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=axis, keepdims=True) + eps)


def instance_norm(x, eps: float = 1e-8):
    """Zero mean and unit variance per sample and channel over H, W (the 'IN' of AdaIN), in >= float32."""
    dtype = x.dtype
    x = at_least_float32(x)
    x = x - tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    x = x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=[1, 2], keepdims=True) + eps)
    return tf.cast(x, dtype)


def upscale2d(x, factor: int = 2):
    """Nearest-neighbour upsampling of NHWC by an integer factor."""
    if factor == 1:
        return x
    s = tf.shape(x)
    c = x.shape[-1]
    x = tf.reshape(x, [s[0], s[1], 1, s[2], 1, c])
    x = tf.tile(x, [1, 1, factor, 1, factor, 1])
    return tf.reshape(x, [s[0], s[1] * factor, s[2] * factor, c])


def downscale2d(x, factor: int = 2):
    """Box-filter downsampling of NHWC by an integer factor."""
    if factor == 1:
        return x
    return tf.nn.avg_pool2d(x, factor, factor, "VALID")


# ---- blur with a cheap, exact gradient of every order ---------------------------------------------

_BLUR_1D = np.array([1.0, 2.0, 1.0], np.float32)


def blur_kernel(channels: int, flip: bool = False) -> np.ndarray:
    """The normalised [1,2,1] x [1,2,1] kernel as a depthwise filter [3, 3, C, 1]."""
    k = np.outer(_BLUR_1D, _BLUR_1D)
    k /= k.sum()
    if flip:
        k = k[::-1, ::-1]
    return np.tile(k[:, :, None, None], [1, 1, channels, 1]).astype(np.float32)


def _blur_conv(x, flip: bool):
    k = tf.constant(blur_kernel(x.shape[-1], flip), dtype=x.dtype)
    return tf.nn.depthwise_conv2d(x, k, strides=[1, 1, 1, 1], padding="SAME")


def blur2d(x):
    """[1,2,1] blur of NHWC; its gradient is the flipped blur and that one's gradient the blur again."""

    @tf.custom_gradient
    def forward(x):
        def backward(dy):
            @tf.custom_gradient
            def adjoint(dy):
                return _blur_conv(dy, flip=True), lambda ddx: _blur_conv(ddx, flip=False)

            return adjoint(dy)

        return _blur_conv(x, flip=False), backward

    return forward(x)


def blur2d_reference(x):
    """The same blur as a plain depthwise convolution with TensorFlow's own gradients (tests' oracle)."""
    return _blur_conv(x, flip=False)


# ---- layers --------------------------------------------------------------------------------------

class Dense(tf.Module):
    """Equalised-lr dense layer with bias and an optional learning-rate multiplier."""

    def __init__(self, rng, fin: int, fout: int, gain: float = SQRT2, lrmul: float = 1.0, name=None):
        super().__init__(name=name)
        self.coef = gain / math.sqrt(fin) * lrmul
        self.lrmul = lrmul
        self.w = tf.Variable(rng.normal([fin, fout]) / lrmul, name="w")
        self.b = tf.Variable(tf.zeros([fout]), name="b")

    def __call__(self, x):
        return tf.matmul(x, tf.cast(self.w, x.dtype) * self.coef) + tf.cast(self.b, x.dtype) * self.lrmul


class Conv2d(tf.Module):
    """Equalised-lr k x k convolution with bias; `up`/`down` resample by 2 (fused or not).

    Fused: NVlabs' transposed convolution (up) or strided convolution (down) with the kernel padded by
    one and summed over its four shifts, which equals nearest-upsample-then-conv (resp. conv-then-box-
    downsample) exactly, at a fraction of the cost on large maps. Not fused: the two steps separately.
    """

    def __init__(self, rng, fin: int, fout: int, k: int, gain: float = SQRT2, up=False, down=False, fused=False,
                 bias=True, name=None):
        super().__init__(name=name)
        self.k, self.fout, self.up, self.down, self.fused = k, fout, up, down, fused and (up or down)
        self.coef = gain / math.sqrt(k * k * fin)
        self.w = tf.Variable(rng.normal([k, k, fin, fout]), name="w")
        self.b = tf.Variable(tf.zeros([fout]), name="b") if bias else None

    def __call__(self, x):
        w = tf.cast(self.w, x.dtype) * self.coef
        if self.up and self.fused:
            # conv2d_transpose correlates with the flipped kernel: flip it back, so that the same weights
            # compute the same function fused or not (NVlabs leaves it flipped, harmless for learning)
            w = tf.pad(tf.transpose(w[::-1, ::-1], [0, 1, 3, 2]), [[1, 1], [1, 1], [0, 0], [0, 0]])
            w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]
            s = tf.shape(x)
            x = tf.nn.conv2d_transpose(x, w, [s[0], s[1] * 2, s[2] * 2, self.fout], strides=2, padding="SAME")
        elif self.down and self.fused:
            w = tf.pad(w, [[1, 1], [1, 1], [0, 0], [0, 0]])
            w = (w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]) * 0.25
            x = tf.nn.conv2d(x, w, strides=2, padding="SAME")
        else:
            if self.up:
                x = upscale2d(x)
            x = tf.nn.conv2d(x, w, strides=1, padding="SAME")
            if self.down:
                x = downscale2d(x)
        return x if self.b is None else x + tf.cast(self.b, x.dtype)


class Noise(tf.Module):
    """Per-pixel Gaussian noise scaled by learned per-channel weights (initialised 0)."""

    def __init__(self, channels: int, name=None):
        super().__init__(name=name)
        self.weight = tf.Variable(tf.zeros([channels]), name="weight")

    def __call__(self, x, seed):
        s = tf.shape(x)
        noise = replica_normal([s[0], s[1], s[2], 1], seed=seed, dtype=x.dtype)
        return x + noise * tf.cast(self.weight, x.dtype)


class StyleMod(tf.Module):
    """AdaIN's affine part: a dense map of w to a per-channel scale (around 1) and bias."""

    def __init__(self, rng, dlatent: int, channels: int, name=None):
        super().__init__(name=name)
        self.dense = Dense(rng, dlatent, channels * 2, gain=1.0)
        self.channels = channels

    def __call__(self, x, w):
        # the affine map runs in w's dtype (float32, from the mapping network); x may be 16-bit
        style = tf.cast(tf.reshape(self.dense(w), [-1, 2, 1, 1, self.channels]), x.dtype)
        return x * (style[:, 0] + 1.0) + style[:, 1]


def minibatch_stddev(x, group_size: int = 4):
    """Append one feature map: the stddev over groups of samples, averaged over features and pixels (>= float32)."""
    n = x.shape[0]
    g = min(group_size, n) if n is not None else group_size
    s = tf.shape(x)
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    y = tf.reshape(at_least_float32(x), [g, -1, h, w, c])
    y -= tf.reduce_mean(y, axis=0, keepdims=True)
    y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=0) + 1e-8)
    y = tf.reduce_mean(y, axis=[1, 2, 3])  # [M]
    y = tf.reshape(y, [-1, 1, 1, 1])
    y = tf.tile(y, [g, h, w, 1])
    y = tf.reshape(y, [s[0], h, w, 1])
    return tf.concat([x, tf.cast(y, x.dtype)], axis=-1)
