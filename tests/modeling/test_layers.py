"""Shared building blocks (efficientdet_tf.modeling.layers) under float16."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from efficientdet_tf.modeling.layers import spatial_mean


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
