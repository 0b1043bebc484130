"""StyleGAN building blocks over `keras.ops`, NHWC, the same functions as `curate.train.stylegan.ops`.

Mirrors the TensorFlow implementation op for op so the same NumPy weights give the same outputs on every
Keras backend (tests/test_portable.py states the tolerance). Layers hold their weights as
`keras.Variable`s under the TF modules' attribute names, so `weights` / `load_weights` copy a TF
network's weights over by path. Layers compute in their input's dtype (weights are cast); statistics
(instance norm, minibatch stddev) in at least float32, as in the TF version. Forward only: blur's
cheap custom gradient and the training steps belong to the per-backend step modules still to come.
Randomness is never hidden: initial weights come from a `np.random.Generator` the caller passes
(the same network on every backend), noise is passed in or drawn from a `keras.random.SeedGenerator`
the caller owns.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

SQRT2 = math.sqrt(2.0)


def dtype_of(x) -> str:
    """A tensor's dtype as Keras' name ('float32'), whatever the backend's dtype object."""
    return keras.backend.standardize_dtype(x.dtype)


def lrelu(x, alpha: float = 0.2):
    """Leaky ReLU with NVlabs' slope 0.2."""
    return ops.leaky_relu(x, negative_slope=alpha)


def at_least_float32(x):
    """16-bit tensors as float32; float32 and float64 ones unchanged."""
    return ops.cast(x, "float32") if dtype_of(x) in ("float16", "bfloat16") else x


def pixel_norm(x, axis: int = -1, eps: float = 1e-8):
    """Normalise each feature vector to unit average square (ProGAN's pixelwise normalisation)."""
    return x * ops.rsqrt(ops.mean(ops.square(x), axis=axis, keepdims=True) + eps)


def instance_norm(x, eps: float = 1e-8):
    """Zero mean and unit variance per sample and channel over H, W (the 'IN' of AdaIN), in >= float32."""
    dtype = dtype_of(x)
    x = at_least_float32(x)
    x = x - ops.mean(x, axis=[1, 2], keepdims=True)
    x = x * ops.rsqrt(ops.mean(ops.square(x), axis=[1, 2], keepdims=True) + eps)
    return ops.cast(x, dtype)


def upscale2d(x, factor: int = 2):
    """Nearest-neighbour upsampling of NHWC by an integer factor."""
    if factor == 1:
        return x
    return ops.repeat(ops.repeat(x, factor, axis=1), factor, axis=2)


def downscale2d(x, factor: int = 2):
    """Box-filter downsampling of NHWC by an integer factor."""
    if factor == 1:
        return x
    return ops.average_pool(x, factor, factor, "valid", data_format="channels_last")


def blur_kernel(channels: int) -> np.ndarray:
    """The normalised [1,2,1] x [1,2,1] kernel as a depthwise filter [3, 3, C, 1]."""
    k = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])
    k /= k.sum()
    return np.tile(k[:, :, None, None], [1, 1, channels, 1]).astype(np.float32)


def blur2d(x):
    """[1,2,1] blur of NHWC (a depthwise convolution; backends differentiate it themselves for now)."""
    k = ops.convert_to_tensor(blur_kernel(x.shape[-1]), dtype=dtype_of(x))
    return ops.depthwise_conv(x, k, strides=1, padding="same", data_format="channels_last")


def fade_reals(x, level: int, alpha):
    """Real images at a level during fade-in: lerp from their blocky half-resolution version (NVlabs)."""
    if level <= 2:
        return x
    low = upscale2d(downscale2d(x))
    return low + (x - low) * ops.cast(alpha, dtype_of(x))


def minibatch_stddev(x, group_size: int = 4):
    """Append one feature map: the stddev over groups of samples, averaged over features and pixels (>= float32)."""
    n, h, w, c = x.shape
    g = min(group_size, n)
    y = ops.reshape(at_least_float32(x), [g, -1, h, w, c])
    y = y - ops.mean(y, axis=0, keepdims=True)
    y = ops.sqrt(ops.mean(ops.square(y), axis=0) + 1e-8)
    y = ops.mean(y, axis=[1, 2, 3])  # [M]
    y = ops.tile(ops.reshape(y, [-1, 1, 1, 1]), [g, h, w, 1])
    y = ops.reshape(y, [n, h, w, 1])
    return ops.concatenate([x, ops.cast(y, dtype_of(x))], axis=-1)


# ---- weights by path -----------------------------------------------------------------------------

def _is_variable(obj) -> bool:
    # keras.Variable on every backend, and tf.Variable (a TF network's weights, read without importing TF)
    return isinstance(obj, keras.Variable) or (hasattr(obj, "assign") and hasattr(obj, "numpy")
                                                and hasattr(obj, "shape"))


def variables_by_path(module) -> dict[str, object]:
    """Every variable under a module (this package's or a `tf.Module`), keyed by attribute path, sorted.

    Paths are public attribute names and list indices joined by dots (`synthesis.conv1.3.w`), so a TF
    network and its portable mirror, built with the same attribute names, have the same keys.
    """
    out: dict[str, object] = {}
    seen: set[int] = set()

    def walk(obj, path):
        if _is_variable(obj):
            out[".".join(path)] = obj
            return
        if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool, np.ndarray)):
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                walk(item, path + [str(i)])
        elif isinstance(obj, dict):
            for k in sorted(obj):
                walk(obj[k], path + [str(k)])
        elif hasattr(obj, "__dict__"):
            for k in sorted(vars(obj)):
                if not k.startswith("_"):
                    walk(vars(obj)[k], path + [k])

    walk(module, [])
    return dict(sorted(out.items()))


def weights(module) -> dict[str, np.ndarray]:
    """A module's weights as NumPy arrays by path (an .npz-ready dict)."""
    return {k: np.asarray(v.numpy()) for k, v in variables_by_path(module).items()}


def load_weights(module, values: dict[str, np.ndarray]) -> None:
    """Assign weights by path; the paths and shapes must match the module's exactly."""
    mine = variables_by_path(module)
    if set(mine) != set(values):
        missing, extra = sorted(set(mine) - set(values)), sorted(set(values) - set(mine))
        raise ValueError(f"weights do not match the network: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, var in mine.items():
        v = np.asarray(values[k])
        if tuple(v.shape) != tuple(var.shape):
            raise ValueError(f"weight {k}: shape {tuple(v.shape)}, the network has {tuple(var.shape)}")
        var.assign(v.astype(keras.backend.standardize_dtype(var.dtype)))


def load_from_tf(module, tf_module) -> None:
    """Copy a TF network's weights (`curate.train.stylegan`, same architecture) into its portable mirror."""
    load_weights(module, weights(tf_module))


# ---- layers --------------------------------------------------------------------------------------

def _normal(rng: np.random.Generator, shape, scale: float = 1.0) -> np.ndarray:
    # initial values from NumPy: the same seed gives the same network on every backend, and drawing
    # costs no per-shape compilation (JAX's eager keras.random.normal compiles once per shape)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


class Dense:
    """Equalised-lr dense layer with bias and an optional learning-rate multiplier."""

    def __init__(self, rng, fin: int, fout: int, gain: float = SQRT2, lrmul: float = 1.0):
        self.coef = gain / math.sqrt(fin) * lrmul
        self.lrmul = lrmul
        self.w = keras.Variable(_normal(rng, [fin, fout], 1.0 / lrmul), name="w")
        self.b = keras.Variable(np.zeros([fout], np.float32), name="b")

    def __call__(self, x):
        dt = dtype_of(x)
        return ops.matmul(x, ops.cast(self.w, dt) * self.coef) + ops.cast(self.b, dt) * self.lrmul


class Conv2d:
    """Equalised-lr k x k convolution with bias; `up`/`down` resample by 2, fused or not (as the TF Conv2d)."""

    def __init__(self, rng, fin: int, fout: int, k: int, gain: float = SQRT2, up=False, down=False, fused=False,
                 bias=True):
        self.k, self.fout, self.up, self.down, self.fused = k, fout, up, down, fused and (up or down)
        self.coef = gain / math.sqrt(k * k * fin)
        self.w = keras.Variable(_normal(rng, [k, k, fin, fout]), name="w")
        self.b = keras.Variable(np.zeros([fout], np.float32), name="b") if bias else None

    def __call__(self, x):
        dt = dtype_of(x)
        w = ops.cast(self.w, dt) * self.coef
        if self.up and self.fused:
            # the TF version's flip-back, so fused and unfused compute the same function of the same weights
            w = ops.pad(ops.transpose(ops.flip(w, axis=[0, 1]), [0, 1, 3, 2]), [[1, 1], [1, 1], [0, 0], [0, 0]])
            w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]
            x = ops.conv_transpose(x, w, strides=2, padding="same", data_format="channels_last")
        elif self.down and self.fused:
            w = ops.pad(w, [[1, 1], [1, 1], [0, 0], [0, 0]])
            w = (w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]) * 0.25
            x = ops.conv(x, w, strides=2, padding="same", data_format="channels_last")
        else:
            if self.up:
                x = upscale2d(x)
            x = ops.conv(x, w, strides=1, padding="same", data_format="channels_last")
            if self.down:
                x = downscale2d(x)
        return x if self.b is None else x + ops.cast(self.b, dt)


class Noise:
    """Per-pixel noise [N, H, W, 1], given by the caller, scaled by learned per-channel weights (initially 0)."""

    def __init__(self, channels: int):
        self.weight = keras.Variable(np.zeros([channels], np.float32), name="weight")

    def __call__(self, x, noise):
        dt = dtype_of(x)
        return x + ops.cast(noise, dt) * ops.cast(self.weight, dt)


class StyleMod:
    """AdaIN's affine part: a dense map of w to a per-channel scale (around 1) and bias."""

    def __init__(self, rng, dlatent: int, channels: int):
        self.dense = Dense(rng, dlatent, channels * 2, gain=1.0)
        self.channels = channels

    def __call__(self, x, w):
        # the affine map runs in w's dtype (float32, from the mapping network); x may be 16-bit
        style = ops.cast(ops.reshape(self.dense(w), [-1, 2, 1, 1, self.channels]), dtype_of(x))
        return x * (style[:, 0] + 1.0) + style[:, 1]
