"""The training step on JAX: the TF trainer's step (curate.train.steps) as one jitted pure function.

`make_step(trainer, level)` returns step(state, reals_u8, alpha, step_number, lr_g, lr_d) -> (state,
losses): one D update with R1 (the gradient of a gradient, by nested jax.grad), one G update with
the w_avg update, then the Gs average, exactly the TF step's order and formulas. The portable
networks (curate.train.portable.networks) are called under `keras.StatelessScope`, which reads each
keras.Variable as the value the state holds, so the networks stay plain Keras 3 code and the state
is a pytree of arrays that jit can donate. Adam is NVlabs' (beta1 0 by default, reset per phase by
curate.train.phases), written out so its state is plain arrays too.

Random draws are stateless, seeded by (seed, step number) like the TF step's, but from JAX's
generator: a JAX run does not draw the TF run's numbers, so the two backends train alike, not
identically. precision=mixed_bfloat16 runs G's synthesis and D in bfloat16 as the TF networks do
(curate.train.portable.networks' compute_dtype), with no loss scaling: bfloat16 has float32's range.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import keras
import numpy as np

from curate.train.portable.ops import fade_reals


def _bound(variables: dict, values: dict) -> list:
    return [(variables[k], values[k]) for k in variables]


def adam_init(params: dict) -> dict:
    """Adam's state for a dict of arrays, on the host (pass it through to_device): count and moments at zero.

    NumPy zeros, because jnp.zeros compiles once per shape (about 6 s for a phase change's two resets
    on CPU, measured); separate buffers for m and v, because the step donates its state.
    """
    def zeros():
        return {k: np.zeros(v.shape, np.float32) for k, v in params.items()}

    return {"t": np.zeros([], np.float32), "m": zeros(), "v": zeros()}


def adam_apply(params: dict, grads: dict, state: dict, lr, beta1: float, beta2: float, eps: float):
    """(params, state) after one Adam step: the TF trainer's make_adam, formula for formula."""
    t = state["t"] + 1.0
    lr_t = lr * jnp.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
    m = {k: beta1 * state["m"][k] + (1.0 - beta1) * g for k, g in grads.items()}
    v = {k: beta2 * state["v"][k] + (1.0 - beta2) * jnp.square(g) for k, g in grads.items()}
    new = {k: params[k] - lr_t * m[k] / (jnp.sqrt(v[k]) + eps) for k in params}
    return new, {"t": t, "m": m, "v": v}


class Forward:
    """The portable networks as pure functions of their weights (values keyed by path)."""

    def __init__(self, trainer, level: int):
        self.G, self.D, self.Gs, self.arch, self.level = trainer.G, trainer.D, trainer.Gs, trainer.arch, level
        self.g_vars, self.d_vars, self.gs_vars = trainer.g_vars, trainer.d_vars, trainer.gs_vars

    def noise(self, key, n: int) -> list:
        """One standard-normal map per synthesis layer at this level, as draw_noise shapes them."""
        keys = jax.random.split(key, self.arch.num_layers(self.level))
        return [jax.random.normal(k, [n, *self.arch.size(2 + i // 2), 1], jnp.float32) for i, k in enumerate(keys)]

    def mixed_ws(self, g_vals, z, key, mixing_prob: float):
        """Per-layer w with style mixing (one crossover per minibatch, as the TF network draws it)."""
        n_layers = self.arch.num_layers(self.level)
        mix = None
        if mixing_prob > 0:
            k_z, k_cut, k_mix = jax.random.split(key, 3)
            z2 = jax.random.normal(k_z, z.shape, jnp.float32)
            cut = jax.random.randint(k_cut, [], 1, max(n_layers, 2))
            mix = (z2, jnp.where(jax.random.uniform(k_mix, []) < mixing_prob, cut, n_layers))
        with keras.StatelessScope(state_mapping=_bound(self.g_vars, g_vals)):
            return self.G.ws(z, self.level, mix=mix)

    def synthesis(self, g_vals, ws, alpha, noise):
        with keras.StatelessScope(state_mapping=_bound(self.g_vars, g_vals)):
            return self.G.synthesis(ws, self.level, alpha, noise=noise)

    def discriminator(self, d_vals, images, alpha):
        with keras.StatelessScope(state_mapping=_bound(self.d_vars, d_vals)):
            return self.D(images, self.level, alpha)

    def sample(self, gs_vals, gs_w_avg, z, alpha, key, psi=None, cutoff: int = 8):
        """Gs images (no style mixing, untruncated unless psi), noise drawn from key."""
        mapping = _bound(self.gs_vars, gs_vals) + [(self.Gs.w_avg, gs_w_avg)]
        with keras.StatelessScope(state_mapping=mapping):
            return self.Gs(z, self.level, alpha, noise=self.noise(key, z.shape[0]), psi=psi, cutoff=cutoff)


def make_step(trainer, level: int) -> Callable:
    """The jitted training step at a level (the state argument is donated: pass the one it returned)."""
    c, arch, fwd = trainer.config, trainer.arch, Forward(trainer, level)
    mb = trainer.schedule.minibatch(level)
    ema_beta = 0.5 ** (mb / (c.ema_kimg * 1000.0)) if c.ema_kimg > 0 else 0.0
    adam = dict(beta1=c.adam_beta1, beta2=c.adam_beta2, eps=c.adam_epsilon)

    def d_loss(d_vals, reals, fakes, alpha):
        fake_scores = fwd.discriminator(d_vals, fakes, alpha)
        if c.r1_gamma > 0:
            def total(x):
                scores = fwd.discriminator(d_vals, x, alpha)
                return jnp.sum(scores), scores

            grads, real_scores = jax.grad(total, has_aux=True)(reals)
            r1 = jnp.sum(jnp.square(grads), axis=(1, 2, 3))
        else:
            real_scores = fwd.discriminator(d_vals, reals, alpha)
            r1 = jnp.zeros_like(real_scores)
        loss = jax.nn.softplus(fake_scores) + jax.nn.softplus(-real_scores) + r1 * (c.r1_gamma * 0.5)
        return jnp.mean(loss), {"r1": jnp.mean(r1), "score_real": jnp.mean(real_scores),
                                "score_fake": jnp.mean(fake_scores)}

    def g_loss(g_vals, d_vals, z, key, alpha):
        k_mix, k_noise = jax.random.split(key)
        ws = fwd.mixed_ws(g_vals, z, k_mix, c.style_mixing)
        fakes = fwd.synthesis(g_vals, ws, alpha, fwd.noise(k_noise, mb))
        # ws[:, 0] is the mapping's w: the crossover is never before layer 1
        return jnp.mean(jax.nn.softplus(-fwd.discriminator(d_vals, fakes, alpha))), jnp.mean(ws[:, 0], axis=0)

    def step(state, reals_u8, alpha, step_number, lr_g, lr_d):
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(c.seed), step_number), 5)
        reals = reals_u8.astype(jnp.float32) / 127.5 - 1.0
        if c.mirror_augment:
            flip = jax.random.uniform(keys[0], [mb]) < 0.5
            reals = jnp.where(flip[:, None, None, None], reals[:, :, ::-1], reals)
        reals = fade_reals(reals, level, alpha)
        # D: fakes from the current G (its weights not differentiated here)
        z = jax.random.normal(keys[1], [mb, arch.latent_size], jnp.float32)
        k_mix, k_noise = jax.random.split(keys[2])
        ws = fwd.mixed_ws(state["G"], z, k_mix, c.style_mixing)
        fakes = jax.lax.stop_gradient(fwd.synthesis(state["G"], ws, alpha, fwd.noise(k_noise, mb)))
        (loss_d, parts), grads_d = jax.value_and_grad(d_loss, has_aux=True)(state["D"], reals, fakes, alpha)
        d_new, adam_d = adam_apply(state["D"], grads_d, state["adam_d"], lr_d, **adam)
        # G against the updated D, with the w_avg update from its batch's w
        z = jax.random.normal(keys[3], [mb, arch.latent_size], jnp.float32)
        (loss_g, w_mean), grads_g = jax.value_and_grad(g_loss, has_aux=True)(state["G"], d_new, z, keys[4], alpha)
        g_new, adam_g = adam_apply(state["G"], grads_g, state["adam_g"], lr_g, **adam)
        w_avg = w_mean + (state["w_avg"] - w_mean) * c.w_avg_beta
        gs = {k: g_new[k] + (state["Gs"][k] - g_new[k]) * ema_beta for k in g_new}
        new = {"G": g_new, "D": d_new, "Gs": gs, "w_avg": w_avg, "gs_w_avg": w_avg, "adam_g": adam_g, "adam_d": adam_d}
        return new, {"loss_g": loss_g, "loss_d": loss_d, **parts}

    return jax.jit(step, donate_argnums=(0,))


def make_sampler(trainer, level: int) -> Callable:
    """Jitted Gs images at a level: sample(gs, gs_w_avg, z, alpha, key) (float32 NHWC, about [-1, 1])."""
    fwd = Forward(trainer, level)
    return jax.jit(lambda gs, gs_w_avg, z, alpha, key: fwd.sample(gs, gs_w_avg, z, alpha, key))


def seed_key(seed: int, index: int):
    """The sampler's noise key for a batch starting at `index` of a draw seeded by `seed`."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), index)


def to_device(tree):
    """NumPy arrays -> JAX arrays (a fresh copy the step may donate)."""
    return jax.tree_util.tree_map(jnp.array, tree)


def to_host(tree):
    """JAX arrays -> NumPy arrays."""
    return jax.device_get(tree)
