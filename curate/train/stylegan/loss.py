"""StyleGAN's losses: non-saturating logistic for both networks, R1 on the reals for the discriminator."""

from __future__ import annotations

from curate.train.stylegan.ops import tf


def r1_penalty(D, reals, level: int, alpha, loss_scale=None):
    """Per-sample squared norm of D's gradient at the reals, and D's scores there (one forward pass).

    With `loss_scale` (a float16 D) the input gradient is taken of the scores' sum times the scale and
    divided by it in float32 before squaring, as NVlabs StyleGAN's R1 does with its optimizer's scale:
    unscaled, most of it would underflow float16; too large, it overflows, the D loss turns non-finite
    and the step is skipped with the scale halved like any other overflow.
    """
    with tf.GradientTape() as tape:
        tape.watch(reals)
        scores = D(reals, level, alpha)
        total = tf.reduce_sum(scores)
        if loss_scale is not None:
            total = total * loss_scale
    grads = tape.gradient(total, reals)
    if loss_scale is not None:
        grads = grads / loss_scale
    return tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]), scores


def d_loss(D, reals, fakes, level: int, alpha, r1_gamma: float, loss_scale=None):
    """softplus(D(fake)) + softplus(-D(real)) + gamma/2 * R1, averaged; with the parts for logging.

    D returns float32 scores whatever it computes in, so the losses are float32; `loss_scale` is R1's.
    """
    fake_scores = D(fakes, level, alpha)
    if r1_gamma > 0:
        r1, real_scores = r1_penalty(D, reals, level, alpha, loss_scale)
    else:
        real_scores = D(reals, level, alpha)
        r1 = tf.zeros_like(real_scores)
    loss = tf.nn.softplus(fake_scores) + tf.nn.softplus(-real_scores) + r1 * (r1_gamma * 0.5)
    return tf.reduce_mean(loss), {"r1": tf.reduce_mean(r1), "score_real": tf.reduce_mean(real_scores),
                                  "score_fake": tf.reduce_mean(fake_scores)}


def g_loss(D, fakes, level: int, alpha):
    """Non-saturating logistic: softplus(-D(G(z))), averaged."""
    return tf.reduce_mean(tf.nn.softplus(-D(fakes, level, alpha)))
