"""Shared building blocks (efficientdet_tf.modeling.layers): float16 means,
recomputed gradients, the fused batch norm, the depthwise gradients."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.modeling.layers import (DepthwiseConv2D, batch_norm,
                                             recompute_gradient, spatial_mean)


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


def test_training_batch_norm_runs_the_fused_kernel_and_its_gradient():
    """automl's batch norm runs TF's fused kernel in training, forward and
    backward, and lets it blend the moving averages toward the unbiased
    batch variance; ours did the same statistics from composed ops, whose
    gradient is another computation (the ten-step trajectory drifted from
    the official one). Values and gradients are checked against NumPy's
    closed form, the kernels by name in the traced step."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(1.0, 2.0, (2, 5, 6, 3)), tf.float32)
    weights = tf.constant(rng.normal(size=(2, 5, 6, 3)), tf.float32)
    bn = batch_norm("bn", 0.9, 1e-3)
    bn.build(x.shape)
    gamma, beta = np.float32([0.5, 2.0, 1.5]), np.float32([0.1, -0.3, 0.7])
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    bn.moving_mean.assign([1.0, -1.0, 0.5])
    bn.moving_variance.assign([2.0, 0.5, 1.0])

    @tf.function
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(bn(inputs, training=True) * weights)
        return tape.gradient(loss, [inputs, bn.gamma, bn.beta])

    kernels = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= kernels, sorted(kernels)
    dx, dgamma, dbeta = (g.numpy() for g in step(x))

    values, w = x.numpy().astype(np.float64), weights.numpy().astype(np.float64)
    axes, n = (0, 1, 2), 60
    mean, variance = values.mean(axis=axes), values.var(axis=axes)
    normalised = (values - mean) / np.sqrt(variance + 1e-3)
    np.testing.assert_allclose(dbeta, w.sum(axis=axes), rtol=1e-5)
    np.testing.assert_allclose(dgamma, (w * normalised).sum(axis=axes), rtol=1e-4)
    expected_dx = gamma / np.sqrt(variance + 1e-3) * (
        w - w.mean(axis=axes) - normalised * (w * normalised).mean(axis=axes))
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               0.9 * np.float64([1.0, -1.0, 0.5]) + 0.1 * mean,
                               rtol=1e-5)
    np.testing.assert_allclose(
        bn.moving_variance.numpy(),
        0.9 * np.float64([2.0, 0.5, 1.0]) + 0.1 * variance * n / (n - 1), rtol=1e-5)
    outputs = bn(x, training=True, update_statistics=False).numpy()
    np.testing.assert_allclose(outputs, gamma * normalised + beta, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("size,stride", [(3, 1), (5, 1), (3, 2), (5, 2)])
def test_depthwise_layer_gradients_equal_tensorflows(size, stride):
    """Both hand-routed gradients of the backbone's depthwise convolution
    (flipped-kernel input gradient, correlation filter gradient) against
    TensorFlow's own kernels, on an odd-sized map."""
    rng = np.random.default_rng(size + stride)
    x = tf.constant(rng.normal(size=(2, 11, 9, 6)).astype(np.float32))
    layer = DepthwiseConv2D(size, strides=stride, padding="same", use_bias=False)
    layer.build(x.shape)
    kernel = layer.kernel
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = layer(x)
        theirs = tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], "SAME")
        weights = tf.constant(rng.normal(size=ours.shape).astype(np.float32))
        loss_ours = tf.reduce_sum(ours * weights)
        loss_theirs = tf.reduce_sum(theirs * weights)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    for got, want in zip(tape.gradient(loss_ours, [x, kernel]),
                         tape.gradient(loss_theirs, [x, kernel]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
