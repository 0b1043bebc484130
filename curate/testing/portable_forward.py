"""Forward-equivalence cases for `curate.train.portable` against the TF networks (tests/test_portable.py).

`make_case` (TensorFlow) builds the TF ops and networks of an Arch, randomises the weights that start
constant (biases, noise weights, the constant, w_avg) so every path counts, and returns the inputs (all
weights by path, the op inputs, the exact noise maps the TF networks draw from their seeds) and the TF
outputs. `run_portable` computes the same outputs with the portable layers on whatever backend Keras
has; run as a script in a process whose KERAS_BACKEND picks the backend (it is fixed per process):

    KERAS_BACKEND=jax python -m curate.testing.portable_forward CASE.npz OUT.npz
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np

# layers compared one by one: (class, takes an rng first, args, kwargs); the same signatures in both packages
OP_LAYERS = {
    "dense": ("Dense", True, (5, 7), {"lrmul": 0.01}),
    "dense_linear": ("Dense", True, (5, 7), {"gain": 1.0}),
    "conv3": ("Conv2d", True, (5, 6, 3), {}),
    "conv1": ("Conv2d", True, (5, 3, 1), {"gain": 1.0}),
    "conv_up": ("Conv2d", True, (5, 6, 3), {"up": True, "bias": False}),
    "conv_up_fused": ("Conv2d", True, (5, 6, 3), {"up": True, "fused": True, "bias": False}),
    "conv_down": ("Conv2d", True, (5, 6, 3), {"down": True}),
    "conv_down_fused": ("Conv2d", True, (5, 6, 3), {"down": True, "fused": True}),
    "stylemod": ("StyleMod", True, (7, 5), {}),
    "noise": ("Noise", False, (5,), {}),
}
OP_FUNCTIONS = ("lrelu", "pixel_norm", "instance_norm", "upscale2d", "downscale2d", "blur2d", "minibatch_stddev",
                "fade_reals")
X_SHAPE = (8, 8, 4, 5)  # N, H, W, C of the op inputs: two minibatch-stddev groups of 4
G_CASES = {"g_l4": (4, None), "g_l5": (5, None), "g_l5_psi": (5, 0.7)}  # name: (level, truncation psi)
LEVELS = (4, 5)
ALPHA = 0.5
MIXING = 0.9


def _randomise_constants(module, rng: np.random.Generator) -> None:
    from curate.train.portable.ops import variables_by_path

    for var in variables_by_path(module).values():
        v = var.numpy()
        if np.all(v == v.flat[0]):
            var.assign((v + rng.normal(0, 0.3, v.shape)).astype(v.dtype))


def make_case(arch, n: int = 8, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(inputs, TF outputs) for the ops and for G and D of `arch` at LEVELS with alpha ALPHA (needs TF)."""
    from curate.train.portable.ops import weights
    from curate.train.stylegan import networks, ops
    from curate.train.stylegan.ops import tf

    rng = np.random.default_rng(seed)
    trng = tf.random.Generator.from_seed(seed)
    inputs = {"arch": np.array(json.dumps(dataclasses.asdict(arch)))}
    out = {}
    x = rng.normal(size=X_SHAPE).astype(np.float32)
    inputs["op.x"] = x
    for name in OP_FUNCTIONS:
        if name == "fade_reals":
            out[f"op.{name}"] = networks.fade_reals(tf.constant(x), 3, ALPHA).numpy()
        else:
            out[f"op.{name}"] = getattr(ops, name)(tf.constant(x)).numpy()
    for name, (cls, takes_rng, args, kw) in OP_LAYERS.items():
        layer = getattr(ops, cls)(*([trng] if takes_rng else []), *args, **kw)
        _randomise_constants(layer, rng)
        inputs.update({f"op.{name}.{k}": v for k, v in weights(layer).items()})
        xin = tf.constant(x) if cls != "Dense" else tf.constant(x[:, 0, 0])
        if cls == "StyleMod":
            w = rng.normal(size=(X_SHAPE[0], 7)).astype(np.float32)
            inputs[f"op.{name}:w"] = w
            y = layer(xin, tf.constant(w))
        elif cls == "Noise":
            noise_seed = tf.constant([5, 6], tf.int64)
            s = tf.shape(xin)
            inputs[f"op.{name}:noise"] = tf.random.stateless_normal([s[0], s[1], s[2], 1], seed=noise_seed).numpy()
            y = layer(xin, noise_seed)
        else:
            y = layer(xin)
        out[f"op.{name}"] = y.numpy()

    G = networks.Generator(arch, seed + 1)
    D = networks.Discriminator(arch, seed + 2)
    for prefix, net in (("G", G), ("D", D)):
        _randomise_constants(net, rng)
        inputs.update({f"{prefix}.{k}": v for k, v in weights(net).items()})
    z = rng.normal(size=(n, arch.latent_size)).astype(np.float32)
    inputs["g.z"] = z
    out["g.mapping"] = G.mapping(tf.constant(z)).numpy()
    for name, (level, psi) in G_CASES.items():
        g_seed = tf.constant([7, level], tf.int64)
        # the noise G draws: its seed split in two, the second half split once per synthesis layer
        layer_seeds = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_split(g_seed, 2)[1], arch.num_layers(level))
        for i in range(arch.num_layers(level)):
            inputs[f"g.{name}.noise.{i}"] = tf.random.stateless_normal(
                [n, *arch.size(2 + i // 2), 1], seed=layer_seeds[i]).numpy()
        out[f"g.{name}"] = G(tf.constant(z), level, ALPHA, g_seed, psi=psi).numpy()
    # style mixing at level 5: the second latent and the crossover TF's G draws from its seed, found the
    # same way (G's seed split in two, the first half in three), on a seed whose minibatch does mix
    n_layers = arch.num_layers(5)
    for k in range(100):
        g_seed = tf.constant([11, k], tf.int64)
        s = tf.random.experimental.stateless_split(tf.random.experimental.stateless_split(g_seed, 2)[0], 3)
        cut = tf.random.stateless_uniform([], seed=s[1], minval=1, maxval=n_layers, dtype=tf.int32)
        if tf.random.stateless_uniform([], seed=s[2]) < MIXING:
            break
    inputs["g.mix.z2"] = tf.random.stateless_normal([n, arch.latent_size], seed=s[0]).numpy()
    inputs["g.mix.cutoff"] = np.array(int(cut))
    layer_seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_split(g_seed, 2)[1], n_layers)
    for i in range(n_layers):
        inputs[f"g.mix.noise.{i}"] = tf.random.stateless_normal(
            [n, *arch.size(2 + i // 2), 1], seed=layer_seeds[i]).numpy()
    out["g.mix"] = G(tf.constant(z), 5, ALPHA, g_seed, mixing_prob=MIXING).numpy()
    for level in LEVELS:
        img = rng.normal(size=(n, *arch.size(level), 3)).astype(np.float32)
        inputs[f"d.l{level}.img"] = img
        out[f"d.l{level}"] = D(tf.constant(img), level, ALPHA).numpy()
    return inputs, out


def _sub(inputs, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: inputs[k] for k in inputs if k.startswith(prefix) and ":" not in k}


def _compiled(fn):
    """fn traced and compiled whole on JAX (its eager dispatch compiles every op on its own); as it is elsewhere."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


def run_portable(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs of `make_case`, computed by curate.train.portable on the current Keras backend."""
    from keras import ops as kops

    from curate.train.portable import networks, ops
    from curate.train.stylegan.config import Arch

    arch = Arch(**json.loads(str(inputs["arch"])))
    rng = np.random.default_rng(0)  # initial values only: every weight is loaded over them
    t = kops.convert_to_tensor
    layers = {}
    for name, (cls, takes_rng, args, kw) in OP_LAYERS.items():
        layers[name] = getattr(ops, cls)(*([rng] if takes_rng else []), *args, **kw)
        ops.load_weights(layers[name], _sub(inputs, f"op.{name}."))

    def op_outputs(x, style_w, noise):
        out = {f"op.{n}": ops.fade_reals(x, 3, ALPHA) if n == "fade_reals" else getattr(ops, n)(x)
               for n in OP_FUNCTIONS}
        for name, layer in layers.items():
            cls = OP_LAYERS[name][0]
            xin = x if cls != "Dense" else x[:, 0, 0]
            if cls == "StyleMod":
                out[f"op.{name}"] = layer(xin, style_w)
            elif cls == "Noise":
                out[f"op.{name}"] = layer(xin, noise)
            else:
                out[f"op.{name}"] = layer(xin)
        return out

    out = _compiled(op_outputs)(t(inputs["op.x"]), t(inputs["op.stylemod:w"]), t(inputs["op.noise:noise"]))
    G = networks.Generator(arch, 1)
    D = networks.Discriminator(arch, 2)
    ops.load_weights(G, _sub(inputs, "G."))
    ops.load_weights(D, _sub(inputs, "D."))
    z = t(inputs["g.z"])
    out["g.mapping"] = _compiled(G.mapping)(z)
    for name, (level, psi) in G_CASES.items():
        noise = [t(inputs[f"g.{name}.noise.{i}"]) for i in range(arch.num_layers(level))]
        out[f"g.{name}"] = _compiled(lambda z, noise: G(z, level, ALPHA, noise=noise, psi=psi))(z, noise)
    noise = [t(inputs[f"g.mix.noise.{i}"]) for i in range(arch.num_layers(5))]
    mix = (t(inputs["g.mix.z2"]), int(inputs["g.mix.cutoff"]))
    out["g.mix"] = _compiled(lambda z, noise, z2: G(z, 5, ALPHA, noise=noise, mix=(z2, mix[1])))(z, noise, mix[0])
    for level in LEVELS:
        out[f"d.l{level}"] = _compiled(lambda img: D(img, level, ALPHA))(t(inputs[f"d.l{level}.img"]))
    return {k: np.asarray(kops.convert_to_numpy(v)) for k, v in out.items()}


def main(argv: list[str]) -> int:
    """CASE.npz OUT.npz: the portable outputs of a case on this process's Keras backend."""
    import keras

    if len(argv) != 2:
        print("usage: python -m curate.testing.portable_forward CASE.npz OUT.npz", file=sys.stderr)
        return 2
    with np.load(argv[0]) as f:
        inputs = {k: f[k] for k in f.files}
    out = run_portable(inputs)
    np.savez(argv[1], backend=np.array(keras.backend.backend()), **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
