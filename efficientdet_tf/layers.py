"""Small building blocks shared by the backbone, the BiFPN and the heads."""
from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

_ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "swish": tf.nn.silu,
    "silu": tf.nn.silu,
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "hswish": lambda x: x * tf.nn.relu6(x + 3.0) / 6.0,
}


def activation(act_type: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The activation function for automl's ``act_type`` name."""
    try:
        return _ACTIVATIONS[act_type]
    except KeyError:
        raise ValueError(f"unknown act_type {act_type!r}; "
                         f"known: {', '.join(_ACTIVATIONS)}") from None


def batch_norm(name: str, momentum: float, epsilon: float) -> keras.layers.Layer:
    """A channels-last batch norm with the official momentum/epsilon."""
    return keras.layers.BatchNormalization(
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
