"""Shared building blocks (efficientdet_tf.modeling.layers): float16 means,
recomputed gradients."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from efficientdet_tf.modeling.layers import (batch_norm, recompute_gradient,
                                             spatial_mean)


def test_spatial_mean_of_a_large_float16_map_is_accurate_with_its_gradient():
    """A 512 px input's first blocks are 256x256: 65,536 terms per channel,
    more than float16's largest value. TensorFlow's own float16 mean gives 0
    here (and its gradient 0); the squeeze-and-excitation gates used it."""
    values = np.random.default_rng(0).uniform(0.2, 2.0, (1, 256, 256, 2))
    values[..., 1] += 1.0  # channel means ~1.1 and ~2.1
    x = tf.constant(values, tf.float16)
    with tf.GradientTape() as tape:
        tape.watch(x)
        mean = spatial_mean(x)
    assert mean.dtype == tf.float16 and mean.shape == (1, 1, 1, 2)
    np.testing.assert_allclose(mean.numpy().ravel(), values.mean(axis=(1, 2)).ravel(),
                               rtol=1e-3)
    gradient = tape.gradient(mean, x)
    assert gradient.dtype == tf.float16
    np.testing.assert_allclose(gradient.numpy(), 1 / 65536)


def test_recompute_gradient_updates_batch_norm_statistics_once():
    """The recomputation for the gradient is told so (its second argument)
    and passes it to the batch norm: same gradients as a plain pass, and
    the moving averages move once."""
    x = tf.random.stateless_normal([4, 3, 3, 2], seed=[0, 1])

    def run(recompute: bool) -> tuple[list[np.ndarray], np.ndarray]:
        bn = batch_norm("bn", 0.5, 1e-3)
        bn.build(x.shape)

        def branch(inputs: tf.Tensor, recomputing: bool) -> tf.Tensor:
            return bn(inputs, training=True, update_statistics=not recomputing)

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = recompute_gradient(branch, x) if recompute else branch(x, False)
            loss = tf.reduce_sum(tf.square(y) * tf.range(2, dtype=tf.float32))
        grads = tape.gradient(loss, [x, bn.gamma, bn.beta])
        return [g.numpy() for g in grads], bn.moving_mean.numpy()

    (plain_grads, plain_mean), (grads, mean) = run(False), run(True)
    for a, b in zip(plain_grads, grads):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean, plain_mean, rtol=1e-6)
    np.testing.assert_allclose(mean, 0.5 * np.mean(x.numpy(), axis=(0, 1, 2)),
                               rtol=1e-5)
