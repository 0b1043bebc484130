"""StyleGAN's losses: non-saturating logistic for both networks, R1 on the reals for the discriminator."""

from __future__ import annotations

from curate.stylegan.ops import tf


def r1_penalty(D, reals, level: int, alpha):
    """Per-sample squared norm of D's gradient at the reals, and D's scores there (one forward pass)."""
    with tf.GradientTape() as tape:
        tape.watch(reals)
        scores = D(reals, level, alpha)
        total = tf.reduce_sum(scores)
    grads = tape.gradient(total, reals)
    return tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]), scores


def d_loss(D, reals, fakes, level: int, alpha, r1_gamma: float):
    """softplus(D(fake)) + softplus(-D(real)) + gamma/2 * R1, averaged; with the parts for logging."""
    fake_scores = D(fakes, level, alpha)
    if r1_gamma > 0:
        r1, real_scores = r1_penalty(D, reals, level, alpha)
    else:
        real_scores = D(reals, level, alpha)
        r1 = tf.zeros_like(real_scores)
    loss = tf.nn.softplus(fake_scores) + tf.nn.softplus(-real_scores) + r1 * (r1_gamma * 0.5)
    return tf.reduce_mean(loss), {"r1": tf.reduce_mean(r1), "score_real": tf.reduce_mean(real_scores),
                                  "score_fake": tf.reduce_mean(fake_scores)}


def g_loss(D, fakes, level: int, alpha):
    """Non-saturating logistic: softplus(-D(G(z))), averaged."""
    return tf.reduce_mean(tf.nn.softplus(-D(fakes, level, alpha)))
