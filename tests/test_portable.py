"""curate.train.portable against the TF networks: the same weights give the same forward outputs per backend.

The Keras backend is fixed per process, so each backend's forward pass runs in a subprocess
(curate/testing/portable_forward.py) on a case the TF implementation computed here: every op and
layer, the mapping network, G at levels 4 and 5 (alpha 0.5, with and without truncation; with
style mixing, given the second latent and crossover the TF network draws) and D at both, on the
smoke config's widths with fused up/down convolutions at level 5 only, noise given explicitly (the maps the TF networks draw from their seeds). Tolerance: the largest absolute
difference over the reference's largest magnitude, float32. Measured: 0 on KERAS_BACKEND=tensorflow
(the same TF kernels), at most 2.9e-6 on JAX's CPU build (jax 0.10.2, networks under jax.jit; G at
level 5 with truncation); asserted below 1e-5.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from curate.testing.portable_forward import G_CASES, LEVELS, OP_FUNCTIONS, OP_LAYERS, make_case  # noqa: E402
from curate.train.stylegan.config import Arch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
# the smoke config's widths and latents (fmap 256/32, latent 32, 8 mapping layers) at 32x16, fused at level 5
ARCH = Arch(full_height=32, full_width=16, fmap_base=256, fmap_max=32, latent_size=32, dlatent_size=32,
            mapping_fmaps=32, fused_min=16)
BACKENDS = [pytest.param("tensorflow"),
            pytest.param("jax", marks=pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                                         reason="jax is not installed (pip install 'jax[cpu]')"))]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    inputs, expected = make_case(ARCH)
    path = tmp_path_factory.mktemp("portable") / "case.npz"
    np.savez(path, **inputs)
    return path, expected


def _run_backend(backend: str, case_path: Path) -> dict[str, np.ndarray]:
    out = case_path.with_name(f"out-{backend}.npz")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "curate.testing.portable_forward", str(case_path), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def test_the_case_covers_every_op_and_network():
    names = {f"op.{n}" for n in (*OP_FUNCTIONS, *OP_LAYERS)} | {f"g.{n}" for n in G_CASES} | {"g.mapping"}
    names |= {f"d.l{lv}" for lv in LEVELS} | {"g.mix"}
    assert len(names) == 25
    assert ARCH.fused(5) and not ARCH.fused(4)  # both convolution paths inside the networks


@pytest.mark.parametrize("backend", BACKENDS)
def test_portable_forward_matches_tf(case, backend):
    path, expected = case
    got = _run_backend(backend, path)
    assert str(got.pop("backend")) == backend
    assert set(got) == set(expected)
    errors = {}
    for k, ref in expected.items():
        assert got[k].shape == ref.shape, k
        assert np.all(np.isfinite(got[k])), k
        errors[k] = float(np.max(np.abs(got[k] - ref)) / np.max(np.abs(ref)))
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"{backend}: {worst} differs by {errors[worst]:.2e} of its scale"
    # the comparison can fail: the references are not degenerate
    assert np.std(expected["g.g_l5"]) > 0.1 and np.std(expected["d.l5"]) > 0.01
    with np.load(path) as f:
        assert 1 <= int(f["g.mix.cutoff"]) < ARCH.num_layers(5)  # the mixing case does mix


def test_weights_copy_over_by_path_and_mismatches_are_refused():
    from curate.train.portable import networks, ops
    from curate.train.stylegan import networks as tf_networks

    tf_g = tf_networks.Generator(ARCH, 3)
    G = networks.Generator(ARCH, 4)
    assert list(ops.variables_by_path(G)) == list(ops.variables_by_path(tf_g))
    ops.load_from_tf(G, tf_g)
    for k, v in ops.weights(tf_g).items():
        np.testing.assert_array_equal(ops.weights(G)[k], v)
    w = ops.weights(tf_g)
    w.pop("w_avg")
    with pytest.raises(ValueError, match="missing \\['w_avg'\\]"):
        ops.load_weights(G, w)
    w["w_avg"] = np.zeros([ARCH.dlatent_size + 1], np.float32)
    with pytest.raises(ValueError, match="weight w_avg: shape"):
        ops.load_weights(G, w)


def test_noise_is_drawn_only_from_the_callers_seed():
    import keras

    from curate.train.portable import networks

    G = networks.Generator(ARCH, 5)
    for epi in G.synthesis.epi0[2:] + G.synthesis.epi1[2:]:  # noise weights start at 0: make noise visible
        epi.noise.weight.assign(np.ones(epi.noise.weight.shape, np.float32))
    z = keras.random.normal([4, ARCH.latent_size], seed=1)
    a = keras.ops.convert_to_numpy(G(z, 4, 1.0, seed=keras.random.SeedGenerator(9)))
    b = keras.ops.convert_to_numpy(G(z, 4, 1.0, seed=keras.random.SeedGenerator(9)))
    c = keras.ops.convert_to_numpy(G(z, 4, 1.0, seed=keras.random.SeedGenerator(10)))
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 1e-3
    with pytest.raises(ValueError, match="needs noise maps or a keras.random.SeedGenerator"):
        G(z, 4, 1.0)
    with pytest.raises(ValueError, match="level 4 needs 6 noise maps, got 2"):
        G(z, 4, 1.0, noise=[np.zeros([4, 4, 2, 1], np.float32)] * 2)
