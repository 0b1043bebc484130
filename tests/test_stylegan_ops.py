"""StyleGAN ops, networks, losses, schedule and SWD on tiny tensors (no training here)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from curate.train.stylegan import ops  # noqa: E402
from curate.train.stylegan.config import CONFIGS, Arch, parse_set, replace  # noqa: E402
from curate.train.stylegan.loss import r1_penalty  # noqa: E402
from curate.train.stylegan.networks import Discriminator, Generator, fade_reals  # noqa: E402
from curate.train.stylegan.schedule import Schedule  # noqa: E402
from curate.train.stylegan.swd import frechet_distance, swd  # noqa: E402

TINY = Arch(full_height=64, full_width=32, fmap_base=64, fmap_max=8, latent_size=8, dlatent_size=8,
            mapping_layers=2, mapping_fmaps=8, fused_min=8)


def _grads_through(blur):
    """Output, input gradient, and the gradient of the input gradient's squared norm (R1-like), wrt x and w."""
    x = tf.constant(np.random.RandomState(0).randn(2, 8, 6, 3), tf.float32)
    w = tf.Variable(np.random.RandomState(1).randn(3).astype(np.float32))
    r = tf.constant(np.random.RandomState(2).randn(2, 8, 6, 3), tf.float32)
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = blur(x * w)
            f = tf.reduce_sum(tf.tanh(y) * r)
        g = inner.gradient(f, x)
        penalty = tf.reduce_sum(tf.square(g))
    return y, g, outer.gradient(penalty, x), outer.gradient(penalty, w)


def test_blur_gradients_match_plain_depthwise_conv_to_second_order():
    mine = _grads_through(ops.blur2d)
    ref = _grads_through(ops.blur2d_reference)
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert float(tf.reduce_sum(tf.abs(mine[2]))) > 0  # the second-order path is not empty


def test_fused_resampling_convs_equal_the_two_step_versions():
    rng = tf.random.Generator.from_seed(3)
    x = tf.random.stateless_normal([2, 8, 4, 5], seed=[1, 2])
    for kw in ({"up": True}, {"down": True}):
        fused = ops.Conv2d(rng, 5, 6, 3, fused=True, **kw)
        plain = ops.Conv2d(rng, 5, 6, 3, fused=False, **kw)
        plain.w.assign(fused.w)
        np.testing.assert_allclose(fused(x).numpy(), plain(x).numpy(), rtol=1e-4, atol=1e-5)


def test_minibatch_stddev_adds_one_feature_per_group():
    # 8 samples, group 4: groups are samples {0, 2, 4, 6} and {1, 3, 5, 7} (NVlabs' reshape order)
    x = tf.constant(np.repeat(np.array([0, 1, 0, 3, 2, 1, 2, 3], np.float32), 4 * 2 * 3).reshape(8, 4, 2, 3))
    y = ops.minibatch_stddev(x, 4).numpy()
    assert y.shape == (8, 4, 2, 4)
    np.testing.assert_allclose(y[0::2, ..., 3], 1.0, rtol=1e-5)  # std of 0, 0, 2, 2
    np.testing.assert_allclose(y[1::2, ..., 3], 1.0, rtol=1e-5)  # std of 1, 3, 1, 3
    same = tf.zeros([8, 4, 2, 3])
    np.testing.assert_allclose(ops.minibatch_stddev(same, 4)[..., 3].numpy(), np.sqrt(1e-8), rtol=1e-3)


def test_shapes_at_every_level_with_fade_in():
    G, D = Generator(TINY, seed=1), Discriminator(TINY, seed=2)
    z = tf.random.stateless_normal([4, TINY.latent_size], seed=[0, 1])
    seed = tf.constant([5, 6], tf.int64)
    prev = None
    for level in range(2, TINY.full_level + 1):
        h, w = 2 ** level, 2 ** (level - 1)
        for alpha in (0.0, 0.5, 1.0):
            img = G(z, level, tf.constant(alpha), seed, mixing_prob=0.9)
            assert img.shape == (4, h, w, 3)
            assert D(img, level, tf.constant(alpha)).shape == (4,)
            assert fade_reals(img, level, alpha).shape == img.shape
        if prev is not None:
            # alpha 0 is exactly the previous level, upscaled (noise weights start at 0)
            np.testing.assert_allclose(G(z, level, tf.constant(0.0), seed).numpy(), ops.upscale2d(prev).numpy(),
                                       rtol=1e-5, atol=1e-5)
            img = G(z, level, tf.constant(1.0), seed)
            np.testing.assert_allclose(D(img, level, tf.constant(0.0)).numpy(),
                                       D(ops.downscale2d(img), level - 1, tf.constant(1.0)).numpy(), rtol=1e-4, atol=1e-5)
        prev = G(z, level, tf.constant(1.0), seed)


def test_truncation_pulls_towards_average_and_psi_one_is_identity():
    G = Generator(TINY, seed=1)
    G.w_avg.assign(tf.fill([TINY.dlatent_size], 0.5))
    ws = G.ws(tf.random.stateless_normal([3, TINY.latent_size], seed=[0, 2]), 4, tf.constant([0, 0], tf.int64))
    t = G.truncate(ws, 0.7, cutoff=2)
    np.testing.assert_allclose(t[:, :2].numpy(), (0.5 + (ws[:, :2] - 0.5) * 0.7).numpy(), rtol=1e-6)
    np.testing.assert_allclose(t[:, 2:].numpy(), ws[:, 2:].numpy(), rtol=1e-6)
    np.testing.assert_allclose(G.truncate(ws, 1.0, 8).numpy(), ws.numpy(), rtol=1e-6)


def test_r1_matches_finite_differences():
    arch = Arch(full_height=8, full_width=4, fmap_base=32, fmap_max=4, latent_size=4, dlatent_size=4, mapping_layers=1)
    D = Discriminator(arch, seed=3)
    # float64 (layers compute in their input's dtype), so differences of 1e-4 are far above rounding
    x = tf.constant(np.random.RandomState(4).randn(4, 8, 4, 3), tf.float64)
    alpha = tf.constant(0.7, tf.float64)
    r1, _ = r1_penalty(D, x, 3, alpha)

    # the input gradient R1 squares, against central differences of D along random directions
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(D(x, 3, alpha))
    grad = tape.gradient(total, x)
    np.testing.assert_allclose(r1.numpy(), tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]).numpy(), rtol=1e-6)
    rng = np.random.RandomState(5)
    eps = 1e-4
    for _ in range(3):
        v = tf.constant(rng.randn(*x.shape), tf.float64)
        fd = (tf.reduce_sum(D(x + eps * v, 3, alpha)) - tf.reduce_sum(D(x - eps * v, 3, alpha))) / (2 * eps)
        np.testing.assert_allclose(float(fd), float(tf.reduce_sum(grad * v)), rtol=1e-5)

    # R1's gradient wrt D's weights (a second derivative of D), against central differences of R1
    var = D.conv0[3].w
    with tf.GradientTape() as tape:
        penalty = tf.reduce_sum(r1_penalty(D, x, 3, alpha)[0])
    g = tape.gradient(penalty, var)
    u = rng.randn(*var.shape)
    eps = 1e-3  # the weights stay float32: a step well above their rounding
    base = var.numpy()
    vals = []
    for s in (1, -1):
        var.assign(base + s * eps * u)
        vals.append(float(tf.reduce_sum(r1_penalty(D, x, 3, alpha)[0])))
    var.assign(base)
    fd = (vals[0] - vals[1]) / (2 * eps)
    analytic = float(np.sum(g.numpy() * u))
    assert abs(analytic) > 1e-6
    np.testing.assert_allclose(fd, analytic, rtol=1e-3)


def test_schedule_grows_fades_and_stops_at_end():
    c = replace(CONFIGS["smoke"], training_kimg=1.0, transition_kimg=2.0, start_height=8)  # 0 = the records' shape, resolved by the trainer
    s = Schedule(c, end_level=5)
    assert s.phase(0) == (3, 1.0)
    assert s.phase(999) == (3, 1.0)
    assert s.phase(1000) == (4, 0.0)
    assert s.phase(2000) == (4, 0.5)
    assert s.phase(3000) == (4, 1.0)
    assert s.phase(5000) == (5, 0.5)
    assert s.phase(6000) == (5, 1.0)
    assert s.phase(10 ** 7) == (5, 1.0)
    full = Schedule(CONFIGS["stylegan-512x256"], end_level=9)
    assert full.minibatch(9) == 4 and full.lrates(9) == (0.003, 0.003) and full.tick_nimg(3) == 140_000
    assert full.minibatch(3) == 128 and full.lrates(3) == (0.001, 0.001)


def test_config_overrides_are_typed_and_checked():
    c = replace(CONFIGS["smoke"], **parse_set(["total_kimg=3", "mirror_augment=false", 'minibatch={"16": 8}']))
    assert c.total_kimg == 3.0 and c.mirror_augment is False and c.minibatch == {16: 8}
    for bad in (["nope=1"], ["r1_gamma=high"], ["minibatch_base=6"], ["start_height=12"], ["snapshot_ticks=1.5"]):
        with pytest.raises(ValueError):
            replace(CONFIGS["smoke"], **parse_set(bad))
    with pytest.raises(ValueError):
        parse_set(["no-equals-sign"])


def test_swd_of_a_set_with_itself_is_near_zero_and_larger_for_a_shifted_set():
    from curate.testing.records import synthetic_images

    reals = synthetic_images(128, 64, 32, seed=0).transpose(0, 2, 3, 1)
    other = synthetic_images(128, 64, 32, seed=1).transpose(0, 2, 3, 1)  # same distribution, other draws
    blocky = reals.reshape(128, 16, 4, 8, 4, 3).mean(axis=(2, 4)).repeat(4, 1).repeat(4, 2).astype(np.uint8)
    noisy = np.clip(reals + np.random.RandomState(0).normal(0, 25, reals.shape), 0, 255).astype(np.uint8)
    same = swd(reals, reals, seed=1)
    assert len(same) == 2 + 1  # 64x32 with a 16 px floor: one band-pass and one low-pass level, then the mean
    assert max(same) == 0.0
    near = swd(reals, other, seed=1)
    # detail is where these sets differ: the band-pass level separates them, and noise shows in the mean too
    assert 0 < near[0] < 0.5 * swd(reals, blocky, seed=1)[0]
    assert near[0] < 0.2 * swd(reals, noisy, seed=1)[0]
    assert near[-1] < 0.5 * swd(reals, noisy, seed=1)[-1]


def test_frechet_distance_is_zero_for_equal_gaussians_and_grows_with_the_mean_gap():
    cov = np.diag([1.0, 2.0, 3.0])
    assert abs(frechet_distance(np.zeros(3), cov, np.zeros(3), cov)) < 1e-9
    assert abs(frechet_distance(np.zeros(3), cov, np.full(3, 2.0), cov) - 12.0) < 1e-9
