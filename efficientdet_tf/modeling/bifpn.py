"""BiFPN: the feature network's layers, one generic cell over a topology.

The cell walks a topology (:mod:`efficientdet_tf.modeling.fpn_topologies`:
BiFPN and other FPN variants are data there, not code here). Layer names
follow the official checkpoints (``fpn_cells/cell_0/fnode1/resample_0_2_6/
conv2d``, ``.../WSM_1``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
import tensorflow as tf

from efficientdet_tf.config import ConfigError
from efficientdet_tf.modeling.fpn_topologies import FNodeSpec
from efficientdet_tf.modeling.layers import activation, batch_norm

FUSION_METHODS = ("sum", "attn", "fastattn", "channel_attn", "channel_fastattn")
FASTATTN_EPSILON = 1e-4


def fuse(method: str, nodes: Sequence[tf.Tensor],
         raw: Sequence[tf.Tensor]) -> tf.Tensor:
    """The weighted sum of a node's (resampled) inputs.

    ``attn``: softmax across inputs. ``fastattn``: ReLU then divide by the sum
    plus 1e-4 (the paper's fast normalised fusion), so weights are always
    non-negative whatever the raw values. ``channel_*``: the same per channel.

    The operations come in automl's order (``input * weight / total`` for
    the fast fusion; stack, multiply and reduce for softmax). The fusion
    weights' gradients are sums over whole feature maps that nearly cancel,
    so another order of the same arithmetic (``input * (weight / total)``)
    changed them by up to 24 % against the official step's.
    """
    if method in ("attn", "channel_attn"):
        weights = [tf.cast(w, nodes[0].dtype) for w in raw]
        normalised = (tf.nn.softmax(tf.stack(weights)) if method == "attn" else
                      tf.nn.softmax(tf.stack(weights, axis=-1), axis=-1))
        return tf.reduce_sum(tf.stack(nodes, axis=-1) * normalised, axis=-1)
    if method in ("fastattn", "channel_fastattn"):
        weights = [tf.nn.relu(tf.cast(w, nodes[0].dtype)) for w in raw]
        total = tf.add_n(weights) + FASTATTN_EPSILON
        return tf.add_n([node * weight / total
                         for node, weight in zip(nodes, weights)])
    raise ValueError(f"fusion method {method!r} has no weights")


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class ResampleFeatureMap(keras.layers.Layer):
    """Brings a feature map to a target size and channel count.

    A 1x1 conv (+BN) matches channels only when they differ (official
    behaviour: no variables otherwise); max/avg pooling with a (stride+1)
    window downsamples; nearest-neighbour upsamples. Sizes may be non-square.
    """

    def __init__(self, target_size: Sequence[int], target_filters: int,
                 pooling_type: str = "max", apply_bn: bool = True,
                 conv_after_downsample: bool = False, bn_momentum: float = 0.99,
                 bn_epsilon: float = 1e-3, **kwargs: Any):
        super().__init__(**kwargs)
        if pooling_type not in ("max", "avg"):
            raise ValueError(f"pooling_type must be 'max' or 'avg', got "
                             f"{pooling_type!r}")
        self.target_size = tuple(int(s) for s in target_size)
        self.target_filters = target_filters
        self.pooling_type = pooling_type
        self.apply_bn = apply_bn
        self.conv_after_downsample = conv_after_downsample
        self.bn_momentum, self.bn_epsilon = bn_momentum, bn_epsilon
        self.conv = keras.layers.Conv2D(target_filters, 1, padding="same",
                                        name="conv2d")
        self.bn = batch_norm("bn", bn_momentum, bn_epsilon) if apply_bn else None

    def build(self, input_shape: Any) -> None:
        if input_shape[-1] == self.target_filters:
            return
        self.conv.build(input_shape)
        if self.bn is not None:
            self.bn.build((*input_shape[:-1], self.target_filters))

    def _match_channels(self, x: tf.Tensor, training: bool | None) -> tf.Tensor:
        if x.shape[-1] == self.target_filters:
            return x
        x = self.conv(x)
        return self.bn(x, training=training) if self.bn is not None else x

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        height, width = x.shape[1], x.shape[2]
        target_h, target_w = self.target_size
        if height > target_h and width > target_w:
            if not self.conv_after_downsample:
                x = self._match_channels(x, training)
            stride_h = (height - 1) // target_h + 1
            stride_w = (width - 1) // target_w + 1
            pool = tf.nn.max_pool2d if self.pooling_type == "max" else tf.nn.avg_pool2d
            x = pool(x, ksize=[stride_h + 1, stride_w + 1],
                     strides=[stride_h, stride_w], padding="SAME")
            if self.conv_after_downsample:
                x = self._match_channels(x, training)
            return x
        if height < target_h and width > target_w or (
                height > target_h and width < target_w):
            raise ValueError(f"{self.name}: cannot resample {height}x{width} "
                             f"to {target_h}x{target_w}")
        x = self._match_channels(x, training)
        if (height, width) != (target_h, target_w):
            x = _upsample_nearest(x, target_h, target_w)
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_size": list(self.target_size),
                "target_filters": self.target_filters,
                "pooling_type": self.pooling_type, "apply_bn": self.apply_bn,
                "conv_after_downsample": self.conv_after_downsample,
                "bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon}


def _upsample_nearest(x: tf.Tensor, target_h: int, target_w: int) -> tf.Tensor:
    """Nearest upsampling with automl's corner convention (source index =
    floor(dst * in / out)); integer factors use repeat, which is the same
    result, cheaper, and TFLite-friendly."""
    height, width = x.shape[1], x.shape[2]
    if target_h % height == 0 and target_w % width == 0:
        x = tf.repeat(x, target_h // height, axis=1)
        return tf.repeat(x, target_w // width, axis=2)
    resized = tf.raw_ops.ResizeNearestNeighbor(
        images=tf.cast(x, tf.float32), size=[target_h, target_w],
        align_corners=False, half_pixel_centers=False)
    return tf.cast(resized, x.dtype)


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class OpAfterCombine(keras.layers.Layer):
    """act -> separable 3x3 conv -> BN after a fusion (or conv -> BN -> act
    with ``conv_bn_act_pattern``, which then drops the conv bias)."""

    def __init__(self, filters: int, act_type: str, separable_conv: bool = True,
                 conv_bn_act_pattern: bool = False, bn_momentum: float = 0.99,
                 bn_epsilon: float = 1e-3, **kwargs: Any):
        super().__init__(**kwargs)
        self.filters, self.act_type = filters, act_type
        self.separable_conv = separable_conv
        self.conv_bn_act_pattern = conv_bn_act_pattern
        self.bn_momentum, self.bn_epsilon = bn_momentum, bn_epsilon
        self._act = activation(act_type)
        conv_cls = (keras.layers.SeparableConv2D if separable_conv
                    else keras.layers.Conv2D)
        self.conv = conv_cls(filters, 3, padding="same",
                             use_bias=not conv_bn_act_pattern, name="conv")
        self.bn = batch_norm("bn", bn_momentum, bn_epsilon)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not self.conv_bn_act_pattern:
            x = self._act(x)
        x = self.bn(self.conv(x), training=training)
        return self._act(x) if self.conv_bn_act_pattern else x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters,
                "act_type": self.act_type, "separable_conv": self.separable_conv,
                "conv_bn_act_pattern": self.conv_bn_act_pattern,
                "bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon}


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class FNode(keras.layers.Layer):
    """Resamples its inputs to one level, fuses them, then convolves."""

    def __init__(self, feat_level: int, inputs_offsets: Sequence[int],
                 node_id: int, target_size: Sequence[int], filters: int,
                 weight_method: str, act_type: str, pooling_type: str = "max",
                 separable_conv: bool = True, conv_bn_act_pattern: bool = False,
                 apply_bn_for_resampling: bool = True,
                 conv_after_downsample: bool = False, bn_momentum: float = 0.99,
                 bn_epsilon: float = 1e-3, **kwargs: Any):
        super().__init__(**kwargs)
        if weight_method not in FUSION_METHODS:
            raise ConfigError(f"fpn_weight_method must be one of "
                             f"{FUSION_METHODS}, got {weight_method!r}")
        self.feat_level, self.node_id = feat_level, node_id
        self.inputs_offsets = [int(i) for i in inputs_offsets]
        self.target_size = [int(s) for s in target_size]
        self.filters, self.weight_method = filters, weight_method
        self.act_type, self.pooling_type = act_type, pooling_type
        self.separable_conv = separable_conv
        self.conv_bn_act_pattern = conv_bn_act_pattern
        self.apply_bn_for_resampling = apply_bn_for_resampling
        self.conv_after_downsample = conv_after_downsample
        self.bn_momentum, self.bn_epsilon = bn_momentum, bn_epsilon
        bn = {"bn_momentum": bn_momentum, "bn_epsilon": bn_epsilon}
        self.resamples = [
            ResampleFeatureMap(target_size, filters, pooling_type,
                               apply_bn_for_resampling, conv_after_downsample,
                               name=f"resample_{i}_{offset}_{node_id}", **bn)
            for i, offset in enumerate(self.inputs_offsets)]
        self.op_after_combine = OpAfterCombine(
            filters, act_type, separable_conv, conv_bn_act_pattern,
            name=f"op_after_combine{node_id}", **bn)

    def build(self, input_shape: Any) -> None:
        shape = () if self.weight_method in ("attn", "fastattn") else (self.filters,)
        self.fusion_weights = [] if self.weight_method == "sum" else [
            self.add_weight(name="WSM" if i == 0 else f"WSM_{i}", shape=shape,
                            initializer="ones", dtype="float32")
            for i in range(len(self.inputs_offsets))]

    def call(self, feats: Sequence[tf.Tensor],
             training: bool | None = None) -> tf.Tensor:
        nodes = [resample(feats[offset], training=training)
                 for resample, offset in zip(self.resamples, self.inputs_offsets)]
        if self.weight_method == "sum":
            fused = tf.add_n(nodes)
        else:
            fused = fuse(self.weight_method, nodes, self.fusion_weights)
        return self.op_after_combine(fused, training=training)

    def get_config(self) -> dict[str, Any]:
        keys = ("feat_level", "inputs_offsets", "node_id", "target_size",
                "filters", "weight_method", "act_type", "pooling_type",
                "separable_conv", "conv_bn_act_pattern",
                "apply_bn_for_resampling", "conv_after_downsample",
                "bn_momentum", "bn_epsilon")
        return {**super().get_config(), **{k: getattr(self, k) for k in keys}}


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class FPNCell(keras.layers.Layer):
    """One feature-network cell: walks the topology; its output per level
    is the newest node of that level."""

    def __init__(self, topology: Sequence[FNodeSpec | Mapping[str, Any]],
                 min_level: int, max_level: int,
                 feat_sizes: Sequence[Sequence[int]], filters: int,
                 weight_method: str, act_type: str,
                 node_options: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.topology = [FNodeSpec.from_config(node) for node in topology]
        self.min_level, self.max_level = min_level, max_level
        self.feat_sizes = [list(s) for s in feat_sizes]
        self.filters = filters
        self.weight_method, self.act_type = weight_method, act_type
        self.node_options = dict(node_options or {})
        num_levels = max_level - min_level + 1
        self.fnodes = [
            FNode(spec.feat_level, spec.inputs_offsets, num_levels + j,
                  self.feat_sizes[spec.feat_level], filters, weight_method,
                  act_type, name=f"fnode{j}", **self.node_options)
            for j, spec in enumerate(self.topology)]
        newest = {level: i for i, level in
                  enumerate(range(min_level, max_level + 1))}
        for j, spec in enumerate(self.topology):
            newest[spec.feat_level] = num_levels + j
        self._output_ids = [newest[level]
                            for level in range(min_level, max_level + 1)]

    def call(self, feats: Sequence[tf.Tensor],
             training: bool | None = None) -> list[tf.Tensor]:
        nodes = list(feats)
        for fnode in self.fnodes:
            nodes.append(fnode(nodes, training=training))
        return [nodes[i] for i in self._output_ids]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(),
                "topology": [spec.as_config() for spec in self.topology],
                "min_level": self.min_level, "max_level": self.max_level,
                "feat_sizes": self.feat_sizes, "filters": self.filters,
                "weight_method": self.weight_method,
                "act_type": self.act_type, "node_options": self.node_options}


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class FPNCells(keras.layers.Layer):
    """``cell_repeats`` cells applied in sequence."""

    def __init__(self, cell_repeats: int, cell_config: dict[str, Any],
                 **kwargs: Any):
        kwargs.setdefault("name", "fpn_cells")
        super().__init__(**kwargs)
        self.cell_repeats = cell_repeats
        self.cell_config = dict(cell_config)
        self.cells = [FPNCell(name=f"cell_{c}", **self.cell_config)
                      for c in range(cell_repeats)]

    def call(self, feats: Sequence[tf.Tensor],
             training: bool | None = None) -> list[tf.Tensor]:
        for cell in self.cells:
            feats = cell(feats, training=training)
        return feats

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "cell_repeats": self.cell_repeats,
                "cell_config": self.cell_config}
