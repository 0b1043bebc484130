"""Metrics that need no downloaded weights (ProGAN's multi-scale sliced Wasserstein distance) and the
FID hook for Inception weights a user supplies as a file.

SWD follows progressive_growing_of_gans/metrics/sliced_wasserstein.py: a Laplacian pyramid per image
down to 16 px on the short side, 128 random 7x7 neighbourhoods per image and level, descriptors
normalised per channel within each set, then 4 x 128 random unit directions, sorted projections
compared, reported x 1e3. Images smaller than 16 px on the short side give one level, with the
neighbourhood cut to fit. Unlike ProGAN, both sets take their patches at the same random places (an
unbiased choice that makes a set against itself read exactly 0).
"""

from __future__ import annotations

import numpy as np

_GAUSS = np.float32([1, 4, 6, 4, 1])
_GAUSS = np.outer(_GAUSS, _GAUSS) / 256.0


def _conv_same(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """2-D 'same' convolution over axes 1, 2 of NHWC with edge padding (small kernels only)."""
    r = k.shape[0] // 2
    p = np.pad(x, [(0, 0), (r, r), (r, r), (0, 0)], mode="edge")
    out = np.zeros_like(x)
    h, w = x.shape[1], x.shape[2]
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            out += k[i, j] * p[:, i:i + h, j:j + w]
    return out


def laplacian_pyramid(x: np.ndarray, min_side: int = 16) -> list[np.ndarray]:
    """float32 NHWC images -> band-pass levels, finest first, last one the low-pass residual."""
    levels = [x]
    while min(levels[-1].shape[1:3]) >= 2 * min_side:
        levels.append(_conv_same(levels[-1], _GAUSS)[:, ::2, ::2])
    pyr = []
    for fine, coarse in zip(levels[:-1], levels[1:]):
        up = np.zeros_like(fine)
        up[:, ::2, ::2] = coarse
        pyr.append(fine - _conv_same(up, _GAUSS * 4.0))
    pyr.append(levels[-1])
    return pyr


def descriptors(level: np.ndarray, rng: np.random.RandomState, per_image: int = 128, nhood: int = 7) -> np.ndarray:
    """Random nhood x nhood patches [N * per_image, nhood, nhood, C] from every image of one level."""
    n, h, w, c = level.shape
    nh, nw = min(nhood, h), min(nhood, w)
    ys = rng.randint(0, h - nh + 1, size=(n, per_image))
    xs = rng.randint(0, w - nw + 1, size=(n, per_image))
    dy, dx = np.meshgrid(np.arange(nh), np.arange(nw), indexing="ij")
    idx_n = np.arange(n)[:, None, None, None]
    patches = level[idx_n, ys[:, :, None, None] + dy, xs[:, :, None, None] + dx]  # [N, P, nh, nw, C]
    return patches.reshape(n * per_image, nh, nw, c)


def finalize(desc: np.ndarray) -> np.ndarray:
    """Normalise each channel to zero mean, unit std over the set; flatten."""
    desc = desc - desc.mean(axis=(0, 1, 2), keepdims=True)
    desc = desc / (desc.std(axis=(0, 1, 2), keepdims=True) + 1e-8)
    return desc.reshape(desc.shape[0], -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.RandomState, repeats: int = 4,
                       dirs: int = 128) -> float:
    """Mean over random unit directions of the mean |sorted projection of a - sorted projection of b|."""
    out = []
    for _ in range(repeats):
        d = rng.randn(a.shape[1], dirs).astype(np.float32)
        d /= np.sqrt(np.sum(np.square(d), axis=0, keepdims=True))
        pa, pb = np.sort(a @ d, axis=0), np.sort(b @ d, axis=0)
        out.append(float(np.mean(np.abs(pa - pb))))
    return float(np.mean(out))


def swd(reals: np.ndarray, fakes: np.ndarray, seed: int = 0, per_image: int = 128) -> list[float]:
    """Multi-scale SWD x 1e3 between two equal-sized uint8 NHWC sets: one value per level, then their mean."""
    if reals.shape != fakes.shape:
        raise ValueError(f"SWD needs equal sets, got {reals.shape} and {fakes.shape}")
    pr = laplacian_pyramid(reals.astype(np.float32))
    pf = laplacian_pyramid(fakes.astype(np.float32))
    dists = []
    for i, (lr, lf) in enumerate(zip(pr, pf)):
        # both sets take patches at the same random places: a set against itself reads exactly 0
        da = finalize(descriptors(lr, np.random.RandomState([seed, i, 0]), per_image))
        db = finalize(descriptors(lf, np.random.RandomState([seed, i, 0]), per_image))
        dists.append(sliced_wasserstein(da, db, np.random.RandomState([seed, i, 1])) * 1e3)
    return dists + [float(np.mean(dists))]


# ---- FID, only with user-supplied Inception weights ---------------------------------------------

def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^1/2), the trace root from C1 C2's eigenvalues (no scipy)."""
    eig = np.linalg.eigvals(cov1.astype(np.float64) @ cov2.astype(np.float64))
    tr_sqrt = float(np.sum(np.sqrt(np.clip(eig.real, 0, None))))
    return float(np.sum(np.square(mu1 - mu2)) + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


class InceptionFeatures:
    """Pool features from a Keras model file the user supplies (e.g. InceptionV3 with include_top=False,
    pooling='avg', saved with model.save('inception.keras')); nothing is downloaded."""

    def __init__(self, path: str):
        from curate.dataset.schema import import_tensorflow

        self.tf = import_tensorflow()
        self.model = self.tf.keras.models.load_model(path, compile=False)
        self.size = tuple(self.model.input_shape[1:3])

    def __call__(self, images_u8: np.ndarray, batch: int = 64) -> np.ndarray:
        """uint8 NHWC -> features [N, D]; images resized to the model's input, scaled to [-1, 1]."""
        tf = self.tf
        out = []
        for i in range(0, len(images_u8), batch):
            x = tf.image.resize(tf.cast(images_u8[i:i + batch], tf.float32), self.size) / 127.5 - 1.0
            out.append(np.asarray(self.model(x, training=False)).reshape(len(x), -1))
        return np.concatenate(out)


def fid(features_real: np.ndarray, features_fake: np.ndarray) -> float:
    """FID between two feature sets."""
    f1, f2 = features_real.astype(np.float64), features_fake.astype(np.float64)
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
