"""Mixed precision: the dtype the networks compute in for a `precision` setting, and dynamic loss scaling.

float16 keeps 11 significant bits but spans only about 6e-8 .. 65504, so the small gradients of a
GAN loss flowing back through a float16 network round to zero. Dynamic loss scaling multiplies each
loss by a large power of two before differentiating and divides the (float32) variable gradients by
it afterwards; a power of two changes only exponents, so nothing else is rounded differently. When
the scaled gradients overflow instead, the step is skipped and the scale halved; after
`growth_steps` clean steps in a row it doubles again, so it tracks the largest scale that fits.
bfloat16 has float32's exponent range and needs none of this.

The scaling is written out in TensorFlow ops rather than taken from
`keras.mixed_precision.LossScaleOptimizer`, because that class wraps a Keras optimizer, and the
trainer's Adam is its own `tf.Module`: its moments are checkpointed with the run and reset at each
new phase as NVlabs does, and swapping it for Keras' Adam would change both. The R1 penalty also
needs the discriminator's scale for its inner input gradient (`loss.r1_penalty`), which is simplest
with the scale as a plain variable. Scale and clean-step count are variables checkpointed with the
run, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from curate.train.stylegan.config import PRECISIONS
from curate.train.stylegan.ops import tf


def compute_dtype(precision: str):
    """The networks' compute dtype for a precision setting; None for float32 (layers use their input's)."""
    name = PRECISIONS[precision]
    return None if name == "float32" else tf.as_dtype(name)


def all_finite(grads) -> tf.Tensor:
    """Whether every element of every gradient (None ones left out) is finite."""
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]))


class LossScale(tf.Module):
    """Dynamic loss scaling for one network's optimizer (float16); `scale` is what `r1_penalty` takes."""

    def __init__(self, initial: float, growth_steps: int, name: str = "loss_scale"):
        super().__init__(name=name)
        self.growth_steps = growth_steps
        self.scale = tf.Variable(float(initial), trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")

    def scale_loss(self, loss):
        """The loss to differentiate: loss x scale."""
        return loss * self.scale

    def apply(self, optimizer, grads, lr):
        """Unscale the gradients of a scaled loss and apply them, or skip the step and halve the scale on overflow.

        Returns whether the step was applied. The scale never drops below 1: a smaller one would not
        help, and gradients that stay non-finite there come from a diverged run, not from scaling.
        """
        grads = [None if g is None else g / self.scale for g in grads]
        finite = all_finite(grads)

        def update():
            optimizer.apply(grads, lr)
            return tf.constant(True)

        tf.cond(finite, update, lambda: tf.constant(False))
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_steps)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale * 0.5, 1.0)))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1,
                                        tf.constant(0, tf.int64)))
        return finite


class NoLossScale:
    """LossScale's interface for float32 and bfloat16: the loss as it is, every step applied."""

    scale = None

    def scale_loss(self, loss):
        """The loss unchanged."""
        return loss

    def apply(self, optimizer, grads, lr):
        """Apply the gradients; returns None (there is no overflow to report)."""
        optimizer.apply(grads, lr)
        return None


def loss_scale(precision: str, initial: float, growth_steps: int, name: str) -> LossScale | NoLossScale:
    """A dynamic LossScale for mixed_float16, a NoLossScale otherwise."""
    if precision == "mixed_float16":
        return LossScale(initial, growth_steps, name=name)
    return NoLossScale()
