"""Small building blocks shared by the backbone, the BiFPN and the heads."""
from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from efficientdet_tf.config import choose



def silu(x: tf.Tensor) -> tf.Tensor:
    """automl's swish, ``x * sigmoid(x)``, with its gradient in one fused
    XLA loop (:func:`_silu_gradient`).

    TensorFlow's ``tf.nn.silu`` gradient runs six elementwise kernels, each a
    pass over the activation; swish follows most convolutions of the
    network, so that was ~10 % of a training step (D0 512, 2 cores). The
    forward stays ``x * sigmoid(x)``, which grappler runs as one oneDNN
    swish kernel.

    A ``tf.custom_gradient`` traced into a graph registers a gradient
    function in TensorFlow's process-wide registry, never cleared, which
    holds the graph and every variable it captured. Keras traces each custom
    layer into a throwaway "scratch" graph while ``build_model`` assembles
    the network; nothing differentiates that graph, so there swish is the
    plain product, and building a model keeps no weights alive (it kept
    +0.5 GB per D7x build).
    """
    if in_keras_shape_graph():
        return x * tf.sigmoid(x)
    return _silu(x)


@tf.custom_gradient
def _silu(x: tf.Tensor):
    def grad(upstream: tf.Tensor) -> tf.Tensor:
        return _silu_gradient(x, upstream)
    return x * tf.sigmoid(x), grad


@tf.function(jit_compile=True)
def _silu_gradient(x: tf.Tensor, upstream: tf.Tensor) -> tf.Tensor:
    """``upstream * d swish / dx = upstream * s (1 + x (1 - s))``, ``s =
    sigmoid(x)``, in float32 whatever the activations' dtype."""
    x32 = tf.cast(x, tf.float32)
    s = tf.sigmoid(x32)
    return tf.cast(tf.cast(upstream, tf.float32) * s * (1.0 + x32 * (1.0 - s)),
                   x.dtype)


# The name Keras 3 gives the graph in which it infers a layer's output shape
# (keras.src.backend.tensorflow.core.compute_output_spec).
_KERAS_SHAPE_GRAPH = "scratch_graph"


def in_keras_shape_graph() -> bool:
    """Whether Keras is tracing a layer only to infer its output shape: no
    ``tf.custom_gradient`` there (see :func:`silu`)."""
    return not tf.executing_eagerly() and tf.compat.v1.get_default_graph(
        ).name.startswith(_KERAS_SHAPE_GRAPH)


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """Keras' depthwise convolution whose gradients take faster kernels
    where measurements showed them faster (:func:`depthwise_conv`).

    Only the plain form EfficientNet uses (``same`` padding, odd square
    kernel, channels last, no dilation, multiplier 1, no bias or
    activation) takes that path; anything else is Keras' layer unchanged.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        size = self.kernel_size[0]
        plain = (self.padding == "same" and self.data_format == "channels_last"
                 and size % 2 == 1 and self.kernel_size == (size, size)
                 and self.strides[0] == self.strides[1]
                 and self.dilation_rate == (1, 1) and self.depth_multiplier == 1
                 and not self.use_bias and self.activation in (None, keras.activations.linear))
        if not plain or in_keras_shape_graph():
            return super().call(inputs)
        return depthwise_conv(inputs, keras.ops.cast(self.kernel, inputs.dtype),
                              self.strides[0])


def depthwise_conv(x: tf.Tensor, kernel: tf.Tensor, stride: int) -> tf.Tensor:
    """``tf.nn.depthwise_conv2d`` (``same`` padding, odd square kernel
    ``[k, k, C, 1]``), with two gradients computed another way:

    * input, stride 1: the forward kernel on the upstream gradient with the
      kernel flipped (the transpose of a ``same`` correlation with an odd
      kernel), instead of TF's backprop-input kernel;
    * filter, stride 1, ``k >= 5``: one depthwise convolution of the padded
      input by the upstream gradient, batch folded into channels, summed
      over the batch (:func:`_filter_gradient_by_correlation`).

    oneDNN's backward depthwise kernels are slow next to its forward one.
    Measured per call (batch 4, 2 threads): filter gradient 38 -> 19 ms at
    64x64x240, 5x5 and 13 -> 8 ms at 32x32x672, 5x5 (slower for 3x3, which
    keep TF's kernel); input gradient 7.6 -> 4.9 ms and 5.3 -> 3.3 ms.
    """
    strides = [1, stride, stride, 1]

    @tf.custom_gradient
    def conv(x: tf.Tensor, kernel: tf.Tensor):
        def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            if stride == 1:
                d_x = tf.nn.depthwise_conv2d(upstream, tf.reverse(kernel, [0, 1]),
                                             strides, "SAME")
            else:
                d_x = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
                    input_sizes=tf.shape(x), filter=kernel,
                    out_backprop=upstream, strides=strides, padding="SAME")
            if stride == 1 and kernel.shape[0] >= 5:
                d_kernel = _filter_gradient_by_correlation(x, upstream,
                                                           kernel.shape[0])
            else:
                d_kernel = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
                    input=x, filter_sizes=tf.shape(kernel),
                    out_backprop=upstream, strides=strides, padding="SAME")
            return d_x, d_kernel
        return tf.nn.depthwise_conv2d(x, kernel, strides, "SAME"), grad
    return conv(x, kernel)


def _filter_gradient_by_correlation(x: tf.Tensor, upstream: tf.Tensor,
                                    size: int) -> tf.Tensor:
    """d loss / d kernel of a stride-1 ``same`` depthwise convolution:
    ``g[i, j, c] = sum_{b, h, w} x_pad[b, h + i, w + j, c] upstream[b, h, w, c]``,
    a ``valid`` depthwise correlation of the padded input (as one image
    with ``B * C`` channels) by the upstream gradient (a ``H x W`` kernel
    per channel), summed over the batch."""
    pad = size // 2
    shape = tf.shape(x)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    image = tf.reshape(tf.transpose(padded, [1, 2, 0, 3]),
                       [1, height + 2 * pad, width + 2 * pad, batch * channels])
    filters = tf.reshape(tf.transpose(upstream, [1, 2, 0, 3]),
                         [height, width, batch * channels, 1])
    correlation = tf.nn.depthwise_conv2d(image, filters, [1, 1, 1, 1], "VALID")
    return tf.reduce_sum(tf.reshape(correlation, [size, size, batch, channels]),
                         axis=2)[..., None]

_ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "swish": silu,
    "silu": silu,
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "hswish": lambda x: x * tf.nn.relu6(x + 3.0) / 6.0,
}


def activation(act_type: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The activation function for automl's ``act_type`` name."""
    return choose(_ACTIVATIONS, "act_type", act_type)


# TF's fused batch norm raises a smaller epsilon to this (automl's is 1e-3).
_FUSED_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras batch norm that runs TF's fused kernel, as automl's does.

    Training: automl's (tf-keras) batch norm runs ``FusedBatchNormV3`` and
    its gradient kernel; Keras 3 composes moments and elementwise ops, whose
    backward pass differs from the fused kernel's in the last bits and is
    slower. So training runs the fused op too, and the moving averages are
    the kernel's own update: toward the batch mean and the *unbiased* batch
    variance (times n / (n - 1), n the values per channel), where Keras 3
    averages the biased one (x1.14 at level 7 of a 256 px batch of 2).
    Normalisation itself uses the biased variance in both. Synchronized
    (multi-replica) statistics need the moments of the global batch, which
    the fused op cannot all-reduce: they take the composed path, counting
    the global batch, so N replicas of batch b keep the statistics one
    device of batch N*b does.

    Inference: Keras 3 computes ``x * scale + shift`` (two elementwise
    passes over the tensor). TF's ``FusedBatchNormV3`` gives the same values
    (to float rounding), and grappler's remapper folds it into a preceding
    bias-free convolution, which makes EfficientDet ~10 % faster on CPU.
    Masks and float16/bfloat16 inference inputs keep the Keras path.

    ``update_statistics=False`` normalises like training without moving the
    averages: a forward pass run again for its gradient
    (:func:`recompute_gradient`) must not count the batch twice.
    """

    def call(self, inputs: tf.Tensor, training: bool | None = None,
             mask: tf.Tensor | None = None,
             update_statistics: bool = True) -> tf.Tensor:
        if training and self.trainable and mask is None and not self.renorm:
            return self._normalise_with_batch_statistics(
                inputs, update=update_statistics)
        if ((training and self.trainable) or mask is not None
                or len(inputs.shape) != 4 or inputs.dtype != tf.float32
                or self.axis not in (-1, 3) or not (self.center and self.scale)):
            return super().call(inputs, training=training, mask=mask)
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, mean=self.moving_mean,
            variance=self.moving_variance, epsilon=self.epsilon,
            is_training=False)
        return outputs

    def _fusable(self, inputs: tf.Tensor) -> bool:
        """The fused kernel's constraints: 4-D channels-last float inputs
        with scale and offset, an epsilon it does not raise to its minimum,
        and statistics of this replica's batch alone."""
        return (len(inputs.shape) == 4 and self.axis in (-1, 3)
                and inputs.dtype in (tf.float32, tf.float16, tf.bfloat16)
                and self.center and self.scale and not self.synchronized
                and self.epsilon >= _FUSED_MIN_EPSILON)

    def _normalise_with_batch_statistics(self, inputs: tf.Tensor,
                                         update: bool) -> tf.Tensor:
        """Training-mode output from the batch's moments; with ``update``,
        the moving averages move toward the batch mean and the unbiased
        batch variance."""
        if self._fusable(inputs):
            return self._fused_training(inputs, update)
        x = tf.cast(inputs, tf.float32)
        mean, variance = self._moments(x, None)
        if update:
            shape = tf.shape(x)
            count = tf.cast(tf.reduce_prod(tf.gather(shape, self._reduction_axes)),
                            tf.float32)
            if self.synchronized:
                count *= tf.distribute.get_replica_context().num_replicas_in_sync
            unbiased = variance * count / tf.maximum(count - 1.0, 1.0)
            keep = self.momentum
            self.moving_mean.assign(self.moving_mean * keep + mean * (1.0 - keep))
            self.moving_variance.assign(
                self.moving_variance * keep + unbiased * (1.0 - keep))
        outputs = keras.ops.batch_normalization(
            x, mean, variance, axis=self.axis,
            offset=tf.cast(self.beta, tf.float32) if self.center else None,
            scale=tf.cast(self.gamma, tf.float32) if self.scale else None,
            epsilon=self.epsilon)
        return tf.cast(outputs, self.compute_dtype)

    def _fused_training(self, inputs: tf.Tensor, update: bool) -> tf.Tensor:
        """``FusedBatchNormV3`` in training mode. With ``update`` the kernel
        itself blends the moving averages (``exponential_avg_factor`` = 1 -
        momentum), as tf-keras has it do for automl."""
        factor = 1.0 - self.momentum if update else 1.0
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
            mean=self.moving_mean, variance=self.moving_variance,
            epsilon=self.epsilon, is_training=True,
            exponential_avg_factor=factor)
        if update:
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        return tf.cast(outputs, self.compute_dtype)


def recompute_gradient(fn: Callable[[tf.Tensor, bool], tf.Tensor],
                       inputs: tf.Tensor) -> tf.Tensor:
    """``fn(inputs, False)`` whose intermediate activations are not kept for
    the backward pass: the gradient runs ``fn(inputs, True)`` again (automl's
    ``grad_checkpoint``, traded for ~20 % more compute).

    ``fn`` must be deterministic given ``inputs`` (no dropout or drop-connect
    inside). Its second argument says "this is the recomputation": its batch
    norms must then not update their moving averages again (pass
    ``update_statistics=not recomputing`` to
    :class:`FusedBatchNormalization`), which the first run did already.
    """
    @tf.custom_gradient
    def run(x: tf.Tensor):
        def grad(upstream: tf.Tensor, variables: list[tf.Variable] | None = None):
            variables = list(variables or [])
            # Recompute only once the upstream gradient exists: otherwise
            # the graph may run every block's recomputation right after the
            # forward pass and hold all of them at once.
            with tf.control_dependencies([upstream]):
                again = tf.identity(x)
            with tf.GradientTape() as tape:
                tape.watch(again)
                outputs = fn(again, True)
            grads = tape.gradient(outputs, [again, *variables],
                                  output_gradients=upstream)
            return grads[0], grads[1:]
        return fn(x, False), grad
    return run(inputs)


def spatial_mean(x: tf.Tensor) -> tf.Tensor:
    """Mean of ``[B, H, W, C]`` over H and W, keeping them as size 1; in
    ``x``'s dtype but accumulated in float32.

    A float16 ``reduce_mean`` is wrong on large maps: the element count is
    a float16 too, inf from 65,504 on (the 256x256 maps of a 512 px input's
    first block), so TensorFlow's CPU kernel returns 0, or NaN once the sum
    overflows as well, and the gradient is 0; smaller maps lose precision.
    Under mixed precision the squeeze-and-excitation gates are built from
    this mean; with frozen batch norms feeding it large activations, a NaN
    gate makes the loss NaN.
    """
    mean = tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2], keepdims=True)
    return tf.cast(mean, x.dtype)


def batch_norm(name: str, momentum: float, epsilon: float) -> keras.layers.Layer:
    """A channels-last batch norm with the official momentum/epsilon."""
    return FusedBatchNormalization(
        axis=-1, momentum=momentum, epsilon=epsilon, name=name)


def drop_connect(x: tf.Tensor, survival_prob: float, training: bool) -> tf.Tensor:
    """Drops whole residual branches per sample (stochastic depth).

    Active only in training; the kept branches are scaled by 1/survival_prob
    so the expectation matches inference, where the branch is always kept.
    """
    if not training or not survival_prob or survival_prob >= 1.0:
        return x
    batch = tf.shape(x)[0]
    keep = tf.floor(survival_prob + tf.random.uniform(
        [batch, 1, 1, 1], dtype=x.dtype))
    return x / tf.cast(survival_prob, x.dtype) * keep


# Official initialisers: N(0, sqrt(2 / fan_out)) for convs, U(+-1/sqrt(fan_out))
# for the classifier's dense layer.
def conv_initializer() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal")


def dense_initializer() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_out", distribution="uniform")
