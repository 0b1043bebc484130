"""Mixed precision: 16-bit networks between float32 boundaries, safe statistics, dynamic loss scaling,
and the trainer's step under each precision (tiny networks, compiled steps as `curate train` runs them)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from curate.train.stylegan import ops  # noqa: E402
from curate.train.stylegan.config import CONFIGS, RESUMABLE, Arch, parse_set, replace  # noqa: E402
from curate.train.stylegan.loss import r1_penalty  # noqa: E402
from curate.train.stylegan.networks import Discriminator, Generator  # noqa: E402
from curate.train.stylegan.precision import LossScale  # noqa: E402
from curate.testing.records import write_dataset  # noqa: E402
from curate.train.data import open_dataset  # noqa: E402
from curate.train.steps import Trainer, make_adam  # noqa: E402

TINY = Arch(full_height=64, full_width=32, fmap_base=64, fmap_max=8, latent_size=8, dlatent_size=8,
            mapping_layers=2, mapping_fmaps=8, fused_min=8)
SIXTEEN = ["float16", "bfloat16"]
CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "DepthwiseConv2dNative")


def _dtypes(graph, types=CONV_OPS) -> Counter:
    """(op type, dtype) counts of a traced graph's ops of the given types."""
    return Counter((op.type, op.get_attr("T").name) for op in graph.get_operations() if op.type in types)


def _as(x, dtype) -> np.ndarray:
    """x rounded to dtype and back to float32."""
    return tf.cast(tf.cast(x, dtype), tf.float32).numpy()


def test_precision_settings_are_typed_and_checked():
    c = replace(CONFIGS["smoke"], **parse_set(["precision=mixed_bfloat16", "loss_scale_growth_steps=10"]))
    assert c.precision == "mixed_bfloat16" and c.loss_scale_growth_steps == 10
    assert replace(CONFIGS["smoke"]).precision == "float32"
    for bad in (["precision=float16"], ["precision=fp16"], ["loss_scale_init=0.5"], ["loss_scale_growth_steps=0"]):
        with pytest.raises(ValueError):
            replace(CONFIGS["smoke"], **parse_set(bad))
    assert "precision" not in RESUMABLE  # a resumed run keeps the precision it was trained in


@pytest.mark.parametrize("dtype", SIXTEEN)
def test_networks_compute_in_16_bits_between_float32_boundaries(dtype):
    z = tf.random.stateless_normal([4, TINY.latent_size], seed=[0, 1])
    seed, alpha = tf.constant([5, 6], tf.int64), tf.constant(0.5)
    G16, G32 = Generator(TINY, seed=1, compute_dtype=dtype), Generator(TINY, seed=1)
    D16, D32 = Discriminator(TINY, seed=2, compute_dtype=dtype), Discriminator(TINY, seed=2)
    img16, img32 = G16(z, 6, alpha, seed), G32(z, 6, alpha, seed)
    # float32 out, but every value a 16-bit number: the last layers ran in 16 bits (float32 ones are not)
    assert img16.dtype == tf.float32
    np.testing.assert_array_equal(img16.numpy(), _as(img16, dtype))
    assert not np.array_equal(img32.numpy(), _as(img32, dtype))
    tol = {"float16": 0.01, "bfloat16": 0.05}[dtype]  # of the largest value, through 10 layers
    assert np.abs(img16.numpy() - img32.numpy()).max() < tol * np.abs(img32.numpy()).max()
    scores16 = D16(img32, 6, alpha)
    assert scores16.dtype == tf.float32
    np.testing.assert_allclose(scores16.numpy(), D32(img32, 6, alpha).numpy(), atol=tol / 10)
    # every convolution is 16-bit but the one at each network's 4x2 end (G's first block, D's epilogue);
    # the dense layers (mapping, style affine maps, D's last two) stay float32
    for graph in (tf.function(lambda z: G16(z, 6, alpha, seed)).get_concrete_function(z).graph,
                  tf.function(lambda x: D16(x, 6, alpha)).get_concrete_function(img32).graph):
        kinds = _dtypes(graph)
        assert kinds[("Conv2D", "float32")] == 1
        assert sum(n for (_, t), n in kinds.items() if t == "float32") == 1
        assert sum(n for (_, t), n in kinds.items() if t == dtype) >= 8
        assert set(_dtypes(graph, ("MatMul",))) == {("MatMul", "float32")}
    assert all(v.dtype == tf.float32 for v in G16.variables + D16.variables)


def test_instance_norm_and_minibatch_stddev_are_safe_in_float16():
    # channel 0 constant (variance 0: the 1e-8 epsilon is 0 in float16), channel 1 at +-300 (squares > 65504)
    x = np.zeros([4, 4, 2, 2], np.float32)
    x[..., 0] = 5.0
    x[..., 1] = np.where(np.arange(4)[:, None, None] % 2 == 0, 300.0, -300.0) * np.array([1, -1])[None, None, :]
    y = ops.instance_norm(tf.constant(x, tf.float16))
    assert y.dtype == tf.float16
    np.testing.assert_array_equal(y[..., 0].numpy(), 0.0)
    np.testing.assert_allclose(np.abs(y[..., 1].numpy()), 1.0, rtol=1e-3)
    s = ops.minibatch_stddev(tf.constant(x, tf.float16), 4)
    assert s.dtype == tf.float16 and s.shape == (4, 4, 2, 3)
    # per feature: std 0 (+ the epsilon) and 300 across the group, averaged over both features
    np.testing.assert_allclose(s[..., 2].numpy(), 150.0, rtol=1e-3)


def test_r1_inner_gradient_is_scaled_in_float16_and_unscaled_in_float32():
    D16, D32 = Discriminator(TINY, seed=2, compute_dtype="float16"), Discriminator(TINY, seed=2)
    for D in (D16, D32):  # scores that barely move with the input: pixel gradients ~1e-7, subnormal in float16
        D.final_dense1.w.assign(D.final_dense1.w * 1e-4)
    x = tf.constant(np.random.RandomState(0).uniform(-1, 1, (4, 32, 16, 3)), tf.float32)
    alpha = tf.constant(0.5)
    exact = r1_penalty(D32, x, 5, alpha)[0].numpy()
    unscaled = r1_penalty(D16, x, 5, alpha)[0].numpy()
    scaled = r1_penalty(D16, x, 5, alpha, loss_scale=tf.constant(2.0 ** 15))[0].numpy()
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, exact, rtol=0.01)
    assert np.abs(unscaled / exact - 1).max() > 0.05  # what the scale is for
    # a scale too large overflows: the penalty turns non-finite, which skips the step
    assert not np.isfinite(r1_penalty(D16, x, 5, alpha, loss_scale=tf.constant(2.0 ** 40))[0].numpy()).any()


def test_loss_scale_skips_overflowing_steps_halves_and_grows_again():
    v = tf.Variable([1.0, -2.0])
    opt = make_adam(tf, [v], 0.0, 0.99, 1e-8)
    scale = LossScale(4.0, growth_steps=2)

    @tf.function(autograph=False)
    def step(k):
        with tf.GradientTape() as tape:
            loss = tf.cast(tf.reduce_sum(tf.cast(v, tf.float16) * tf.cast(k, tf.float16)), tf.float32)
            scaled = scale.scale_loss(loss)
        return scale.apply(opt, tape.gradient(scaled, [v]), 0.1)

    def state():
        return float(scale.scale), int(scale.good_steps), float(opt.t), v.numpy().copy()

    big, one = tf.constant(40000.0), tf.constant(1.0)
    # the float16 gradient is k x scale: 40000 x 4 and 40000 x 2 overflow, 40000 x 1 fits
    assert not bool(step(big))
    assert state()[:3] == (2.0, 0, 0.0) and np.array_equal(state()[3], [1.0, -2.0])  # skipped: v, Adam unchanged
    assert not bool(step(big))
    assert state()[:3] == (1.0, 0, 0.0) and np.array_equal(state()[3], [1.0, -2.0])
    assert bool(step(big))
    assert state()[:3] == (1.0, 1, 1.0) and not np.array_equal(state()[3], [1.0, -2.0])  # applied
    assert bool(step(one))
    assert state()[:3] == (2.0, 0, 2.0)  # growth_steps clean steps in a row: doubled, count restarted
    assert bool(step(one)) and bool(step(one))
    assert state()[:3] == (4.0, 0, 4.0)
    # never below 1: a loss that overflows float16 by itself leaves the scale there
    scale.scale.assign(1.0)
    assert not bool(step(tf.constant(1e5))) and float(scale.scale) == 1.0


# ---- the trainer's step -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trainer_for(tmp_path_factory):
    """Trainers on a tiny 16x8 set by precision, built once per module (their compiled steps are reused)."""
    data = open_dataset(write_dataset(tmp_path_factory.mktemp("data") / "ds", 8, 16, 8))
    made = {}

    def make(precision):
        if precision not in made:
            config = replace(CONFIGS["smoke"], precision=precision, end_height=16, minibatch_base=4,
                             mapping_layers=2)
            made[precision] = Trainer(config, data)
        return made[precision]

    return make


def _step(trainer, i, level=4, alpha=0.5):
    tf_ = trainer.tf
    batch = next(trainer.data_stream(level, 0))
    out = trainer.step_fn(level)(batch, tf_.constant(alpha), tf_.constant(i, tf_.int64), tf_.constant(0.002),
                                 tf_.constant(0.002))
    return {k: float(v) for k, v in out.items()}


def _values(variables) -> list[np.ndarray]:
    return [v.numpy().copy() for v in variables]


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_a_train_step_under_each_precision(trainer_for, precision):
    t = trainer_for(precision)
    g0, d0 = _values(t.G.trainable_variables), _values(t.D.trainable_variables)
    out = _step(t, 0)
    assert all(np.isfinite(v) for v in out.values()), out
    assert not _same(g0, _values(t.G.trainable_variables)) and not _same(d0, _values(t.D.trainable_variables))
    every = t.G.variables + t.D.variables + t.Gs.variables + t.opt_g.variables + t.opt_d.variables
    assert {v.dtype for v in every} == {tf.float32}
    kinds = _dtypes(t.step_fn(4).get_concrete_function().graph)
    if precision == "float32":
        assert {dtype for _, dtype in kinds} == {"float32"}
        assert t.scale_d.scale is None and "overflow_d" not in out
    else:
        # forward and backward convolutions (input and filter gradients, R1's second order) run in 16 bits
        dtype = precision.split("_")[1]
        for op in CONV_OPS:
            assert kinds[(op, dtype)] > kinds[(op, "float32")], (op, kinds)
    if precision == "mixed_float16":
        # neither update overflows at the initial 2**15 (G's would, were its 4x2 block float16)
        assert out["overflow_d"] == 0.0 and out["overflow_g"] == 0.0
        assert float(t.scale_d.scale) == 32768.0 and float(t.scale_g.scale) == 32768.0
    # Gs samples in float32 from the float32 weights, whatever G trains in
    z = tf.random.stateless_normal([2, t.arch.latent_size], seed=[0, 3])
    img = t.sampler(4)(z, tf.constant(0.5), tf.constant([1, 2], tf.int64))
    assert img.dtype == tf.float32 and not np.array_equal(img.numpy(), _as(img, tf.float16))


def test_an_overflowing_step_is_skipped_and_only_its_scale_halved(trainer_for):
    t = trainer_for("mixed_float16")
    _step(t, 1)  # a clean step first, so that Adam's state is not all zeros
    t.scale_d.scale.assign(2.0 ** 100)  # x D's gradients: far beyond float16, in R1's inner gradient too
    t.scale_d.good_steps.assign(5)
    scale_g, good_g = float(t.scale_g.scale), int(t.scale_g.good_steps)
    d0, g0 = _values(t.D.trainable_variables + t.opt_d.variables), _values(t.G.trainable_variables)
    out = _step(t, 2)
    assert out["overflow_d"] == 1.0 and out["overflow_g"] == 0.0
    assert _same(d0, _values(t.D.trainable_variables + t.opt_d.variables))  # weights and Adam untouched
    assert float(t.scale_d.scale) == 2.0 ** 99 and int(t.scale_d.good_steps) == 0
    assert not _same(g0, _values(t.G.trainable_variables))  # G's update went ahead at its own scale
    assert float(t.scale_g.scale) == scale_g and int(t.scale_g.good_steps) == good_g + 1

    t.scale_d.scale.assign(1024.0)
    t.scale_g.scale.assign(2.0 ** 100)
    g0 = _values(t.G.trainable_variables + t.opt_g.variables)
    out = _step(t, 3)
    assert out["overflow_d"] == 0.0 and out["overflow_g"] == 1.0
    assert _same(g0, _values(t.G.trainable_variables + t.opt_g.variables))
    assert float(t.scale_g.scale) == 2.0 ** 99 and float(t.scale_d.scale) == 1024.0
