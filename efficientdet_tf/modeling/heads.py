"""Class and box prediction heads.

The convolutions are shared across pyramid levels while each level has its
own batch norm (levels have different statistics). Names follow the official
checkpoints: ``class_net/class-0``, ``class_net/class-0-bn-3``,
``class_net/class-predict`` (``box`` likewise).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import tensorflow as tf

from efficientdet_tf.modeling.layers import activation, batch_norm, drop_connect

PRIOR_PROBABILITY = 0.01


def class_prior_bias() -> float:
    """Bias that makes every class start at probability 0.01, so the focal
    loss is not swamped by the easy negatives at step 0 (RetinaNet)."""
    return -math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class HeadNet(keras.layers.Layer):
    """``repeats`` x (conv -> per-level BN -> act [-> drop-connect residual])
    then a prediction conv with ``outputs_per_anchor * num_anchors`` channels.

    Outputs are float32 (cast from float16 under mixed precision) so the
    losses and post-processing never see half precision.
    """

    def __init__(self, prefix: str, outputs_per_anchor: int, num_anchors: int,
                 filters: int, min_level: int, max_level: int, repeats: int,
                 act_type: str, separable_conv: bool = True,
                 survival_prob: float | None = None, predict_bias: float = 0.0,
                 bn_momentum: float = 0.99, bn_epsilon: float = 1e-3,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.prefix = prefix
        self.outputs_per_anchor, self.num_anchors = outputs_per_anchor, num_anchors
        self.filters, self.repeats = filters, repeats
        self.min_level, self.max_level = min_level, max_level
        self.act_type, self.separable_conv = act_type, separable_conv
        self.survival_prob, self.predict_bias = survival_prob, predict_bias
        self.bn_momentum, self.bn_epsilon = bn_momentum, bn_epsilon
        self._act = activation(act_type)
        self.convs = [self._conv(filters, f"{prefix}-{i}", 0.0)
                      for i in range(repeats)]
        self.bns = [[batch_norm(f"{prefix}-{i}-bn-{level}", bn_momentum, bn_epsilon)
                     for level in range(min_level, max_level + 1)]
                    for i in range(repeats)]
        self.predict = self._conv(outputs_per_anchor * num_anchors,
                                  f"{prefix}-predict", predict_bias)

    def _conv(self, filters: int, name: str, bias: float) -> keras.layers.Layer:
        bias_init = keras.initializers.Constant(bias)
        if self.separable_conv:
            return keras.layers.SeparableConv2D(
                filters, 3, padding="same", depth_multiplier=1,
                depthwise_initializer=keras.initializers.VarianceScaling(),
                pointwise_initializer=keras.initializers.VarianceScaling(),
                bias_initializer=bias_init, name=name)
        return keras.layers.Conv2D(
            filters, 3, padding="same",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=bias_init, name=name)

    def call(self, feats: Sequence[tf.Tensor],
             training: bool | None = None) -> list[tf.Tensor]:
        outputs = []
        for level_index, x in enumerate(feats):
            for i, conv in enumerate(self.convs):
                residual = x
                x = self._act(self.bns[i][level_index](conv(x), training=training))
                if i > 0 and self.survival_prob:
                    x = drop_connect(x, self.survival_prob, bool(training)) + residual
            outputs.append(tf.cast(self.predict(x), tf.float32))
        return outputs

    def get_config(self) -> dict[str, Any]:
        keys = ("prefix", "outputs_per_anchor", "num_anchors", "filters",
                "min_level", "max_level", "repeats", "act_type",
                "separable_conv", "survival_prob", "predict_bias",
                "bn_momentum", "bn_epsilon")
        return {**super().get_config(), **{k: getattr(self, k) for k in keys}}


def class_net(num_classes: int, **kwargs: Any) -> HeadNet:
    """Per-anchor class logits, prior-initialised for the focal loss."""
    return HeadNet("class", num_classes, predict_bias=class_prior_bias(),
                   name="class_net", **kwargs)


def box_net(**kwargs: Any) -> HeadNet:
    """Per-anchor (ty, tx, th, tw) box regressions."""
    return HeadNet("box", 4, name="box_net", **kwargs)
