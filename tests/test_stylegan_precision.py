"""Mixed precision: 16-bit networks between float32 boundaries, safe statistics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from curate.stylegan import ops  # noqa: E402
from curate.stylegan.config import Arch  # noqa: E402
from curate.stylegan.networks import Discriminator, Generator  # noqa: E402

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
