"""EfficientNet B0-B7 and EfficientNet-lite0-4, as used by EfficientDet.

The architecture is data: seven block strings (``r1_k3_s11_e1_i32_o16_se0.25``)
decoded once and scaled by a width and a depth coefficient with the official
rounding, so a variant is a row in :data:`BACKBONE_PARAMS`, not new code.

Layer names follow the official checkpoints (``efficientnet-b0/blocks_3/
tpu_batch_normalization_1/gamma``) so the variable paths of this model are the
official checkpoint keys; ``checkpoint.py`` only renames Keras 3's depthwise
``kernel`` to the official ``depthwise_kernel``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import keras
import tensorflow as tf

from efficientdet_tf.config import ConfigError, choose
from efficientdet_tf.modeling.layers import (DepthwiseConv2D, activation,
                                             batch_norm, conv_initializer,
                                             dense_initializer, drop_connect,
                                             recompute_gradient, spatial_mean)

BLOCK_STRINGS: tuple[str, ...] = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)


@dataclasses.dataclass(frozen=True)
class BackboneParams:
    """Compound-scaling row: width/depth multipliers and defaults per variant."""
    width: float
    depth: float
    resolution: int
    dropout_rate: float
    lite: bool = False  # relu6, no squeeze-excite, stem/head not scaled


BACKBONE_PARAMS: dict[str, BackboneParams] = {
    "efficientnet-b0": BackboneParams(1.0, 1.0, 224, 0.2),
    "efficientnet-b1": BackboneParams(1.0, 1.1, 240, 0.2),
    "efficientnet-b2": BackboneParams(1.1, 1.2, 260, 0.3),
    "efficientnet-b3": BackboneParams(1.2, 1.4, 300, 0.3),
    "efficientnet-b4": BackboneParams(1.4, 1.8, 380, 0.4),
    "efficientnet-b5": BackboneParams(1.6, 2.2, 456, 0.4),
    "efficientnet-b6": BackboneParams(1.8, 2.6, 528, 0.5),
    "efficientnet-b7": BackboneParams(2.0, 3.1, 600, 0.5),
    "efficientnet-lite0": BackboneParams(1.0, 1.0, 224, 0.2, lite=True),
    "efficientnet-lite1": BackboneParams(1.0, 1.1, 240, 0.2, lite=True),
    "efficientnet-lite2": BackboneParams(1.1, 1.2, 260, 0.3, lite=True),
    "efficientnet-lite3": BackboneParams(1.2, 1.4, 280, 0.3, lite=True),
    "efficientnet-lite4": BackboneParams(1.4, 1.8, 300, 0.3, lite=True),
}

DEFAULT_SURVIVAL_PROB = 0.8
STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One MBConv stage (or, after :func:`expand_blocks`, one block)."""
    num_repeat: int
    kernel_size: int
    strides: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: float | None
    id_skip: bool = True


_BLOCK_RE = re.compile(
    r"^r(?P<r>\d+)_k(?P<k>\d+)_s(?P<s>\d)(?P<s2>\d)_e(?P<e>\d+)"
    r"_i(?P<i>\d+)_o(?P<o>\d+)(?:_se(?P<se>[\d.]+))?(?P<noskip>_noskip)?$")


def decode_block_string(text: str) -> BlockArgs:
    """``r2_k3_s22_e6_i16_o24_se0.25`` -> BlockArgs (square strides only)."""
    match = _BLOCK_RE.match(text)
    if not match:
        raise ConfigError(f"bad EfficientNet block string {text!r}; expected "
                         "e.g. 'r2_k3_s22_e6_i16_o24_se0.25'")
    if match["s"] != match["s2"]:
        raise ConfigError(f"{text!r}: non-square strides are not supported")
    return BlockArgs(
        num_repeat=int(match["r"]), kernel_size=int(match["k"]),
        strides=int(match["s"]), expand_ratio=int(match["e"]),
        input_filters=int(match["i"]), output_filters=int(match["o"]),
        se_ratio=float(match["se"]) if match["se"] else None,
        id_skip=not match["noskip"])


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scales a channel count by ``width``, rounded to a multiple of ``divisor``
    but never more than 10 % below the exact value (official rule)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scales a stage's block count by ``depth``, rounding up."""
    return int(math.ceil(depth * repeats))


def expand_blocks(backbone_name: str,
                  block_strings: Sequence[str] = BLOCK_STRINGS) -> list[BlockArgs]:
    """One scaled BlockArgs per block: repeats unrolled, later repeats of a
    stage taking the stage's output filters and stride 1. Lite variants keep
    the first and last stages' repeats unscaled (automl's ``fix_head_stem``)."""
    params = backbone_params(backbone_name)
    stages = [decode_block_string(s) for s in block_strings]
    blocks = []
    for index, stage in enumerate(stages):
        fixed = params.lite and index in (0, len(stages) - 1)
        repeats = stage.num_repeat if fixed else round_repeats(
            stage.num_repeat, params.depth)
        first = dataclasses.replace(
            stage,
            input_filters=round_filters(stage.input_filters, params.width),
            output_filters=round_filters(stage.output_filters, params.width),
            se_ratio=None if params.lite else stage.se_ratio)
        blocks.append(first)
        rest = dataclasses.replace(first, input_filters=first.output_filters,
                                   strides=1)
        blocks.extend([rest] * (repeats - 1))
    return blocks


def backbone_params(backbone_name: str) -> BackboneParams:
    return choose(BACKBONE_PARAMS, "backbone", backbone_name)


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class SqueezeExcite(keras.layers.Layer):
    """Channel gating from a squeeze of the block's (expanded) features; the
    bottleneck width comes from the block's *input* filters, as official."""

    def __init__(self, reduced_filters: int, output_filters: int,
                 act_type: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.reduced_filters = reduced_filters
        self.output_filters = output_filters
        self.act_type = act_type
        self._act = activation(act_type)
        self.reduce = keras.layers.Conv2D(
            reduced_filters, 1, padding="same", use_bias=True,
            kernel_initializer=conv_initializer(), name="conv2d")
        self.expand = keras.layers.Conv2D(
            output_filters, 1, padding="same", use_bias=True,
            kernel_initializer=conv_initializer(), name="conv2d_1")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        squeezed = spatial_mean(x)
        gate = self.expand(self._act(self.reduce(squeezed)))
        return tf.sigmoid(gate) * x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reduced_filters": self.reduced_filters,
                "output_filters": self.output_filters, "act_type": self.act_type}


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class MBConvBlock(keras.layers.Layer):
    """Inverted residual: [1x1 expand] -> depthwise -> [SE] -> 1x1 project,
    with a drop-connect residual when shape is preserved.

    ``grad_checkpoint``: in training, the branch's activations are recomputed
    for the backward pass instead of kept (drop-connect stays outside, so
    its random mask is drawn once).
    """

    def __init__(self, block: dict[str, Any], act_type: str, bn_momentum: float,
                 bn_epsilon: float, survival_prob: float | None,
                 grad_checkpoint: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.grad_checkpoint = grad_checkpoint
        self.block = dict(block)
        self.act_type = act_type
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.survival_prob = survival_prob
        args = BlockArgs(**block)
        self._args = args
        self._act = activation(act_type)
        expanded = args.input_filters * args.expand_ratio
        # Official names count up per layer type inside the block.
        conv_names = iter(["conv2d", "conv2d_1"])
        bn_names = iter(["tpu_batch_normalization",
                         "tpu_batch_normalization_1",
                         "tpu_batch_normalization_2"])
        self.expand_conv = self.expand_bn = None
        if args.expand_ratio != 1:
            self.expand_conv = keras.layers.Conv2D(
                expanded, 1, padding="same", use_bias=False,
                kernel_initializer=conv_initializer(), name=next(conv_names))
            self.expand_bn = batch_norm(next(bn_names), bn_momentum, bn_epsilon)
        self.depthwise = DepthwiseConv2D(
            args.kernel_size, strides=args.strides, padding="same",
            use_bias=False, depthwise_initializer=conv_initializer(),
            name="depthwise_conv2d")
        self.depthwise_bn = batch_norm(next(bn_names), bn_momentum, bn_epsilon)
        self.se = None
        if args.se_ratio:
            self.se = SqueezeExcite(
                max(1, int(args.input_filters * args.se_ratio)), expanded,
                act_type, name="se")
        self.project_conv = keras.layers.Conv2D(
            args.output_filters, 1, padding="same", use_bias=False,
            kernel_initializer=conv_initializer(), name=next(conv_names))
        self.project_bn = batch_norm(next(bn_names), bn_momentum, bn_epsilon)

    @property
    def has_residual(self) -> bool:
        args = self._args
        return (args.id_skip and args.strides == 1
                and args.input_filters == args.output_filters)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        def branch(x: tf.Tensor, recomputing: bool) -> tf.Tensor:
            bn = {"training": training, "update_statistics": not recomputing}
            if self.expand_conv is not None:
                x = self._act(self.expand_bn(self.expand_conv(x), **bn))
            x = self._act(self.depthwise_bn(self.depthwise(x), **bn))
            if self.se is not None:
                x = self.se(x)
            return self.project_bn(self.project_conv(x), **bn)
        x = (recompute_gradient(branch, inputs) if training and self.grad_checkpoint
             else branch(inputs, recomputing=False))
        if self.has_residual:
            x = drop_connect(x, self.survival_prob, bool(training)) + inputs
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "block": self.block,
                "act_type": self.act_type, "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
                "survival_prob": self.survival_prob,
                "grad_checkpoint": self.grad_checkpoint}


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class ConvBnAct(keras.layers.Layer):
    """conv2d -> tpu_batch_normalization -> activation (the stem and the
    classifier head's 1x1 conv)."""

    def __init__(self, filters: int, kernel_size: int, strides: int,
                 act_type: str, bn_momentum: float, bn_epsilon: float,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
        self.act_type = act_type
        self.bn_momentum, self.bn_epsilon = bn_momentum, bn_epsilon
        self._act = activation(act_type)
        self.conv = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same",
            use_bias=False, kernel_initializer=conv_initializer(), name="conv2d")
        self.bn = batch_norm("tpu_batch_normalization", bn_momentum, bn_epsilon)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self._act(self.bn(self.conv(x), training=training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "act_type": self.act_type, "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon}


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class ClassifierHead(ConvBnAct):
    """1x1 conv -> BN -> act -> global average pool -> dropout -> dense; one
    layer because official checkpoints keep the dense under ``head/``."""

    def __init__(self, num_classes: int, dropout_rate: float, *args: Any,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.num_classes, self.dropout_rate = num_classes, dropout_rate
        self.dropout = keras.layers.Dropout(dropout_rate)
        self.dense = keras.layers.Dense(
            num_classes, kernel_initializer=dense_initializer(), name="dense")

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = tf.squeeze(spatial_mean(super().call(x, training=training)), [1, 2])
        return self.dense(self.dropout(x, training=training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes,
                "dropout_rate": self.dropout_rate}


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class EfficientNet(keras.layers.Layer):
    """The backbone as one layer named after the variant (the checkpoint scope).

    ``include_top=False`` returns the five reduction endpoints C1..C5 (the
    output of the last block before each stride-2 block, and of the last
    block); EfficientDet uses C3..C5. ``include_top=True`` returns class logits.
    """

    def __init__(self, backbone_name: str = "efficientnet-b0",
                 include_top: bool = False, num_classes: int = 1000,
                 act_type: str | None = None, bn_momentum: float = 0.99,
                 bn_epsilon: float = 1e-3,
                 survival_prob: float | None = DEFAULT_SURVIVAL_PROB,
                 dropout_rate: float | None = None,
                 block_strings: Sequence[str] = BLOCK_STRINGS,
                 grad_checkpoint: bool = False, **kwargs: Any):
        kwargs.setdefault("name", backbone_name)
        super().__init__(**kwargs)
        self.grad_checkpoint = grad_checkpoint
        params = backbone_params(backbone_name)
        self.backbone_name = backbone_name
        self.include_top = include_top
        self.num_classes = num_classes
        self.act_type = act_type or ("relu6" if params.lite else "swish")
        self.bn_momentum, self.bn_epsilon = bn_momentum, bn_epsilon
        self.survival_prob = survival_prob
        self.dropout_rate = (params.dropout_rate if dropout_rate is None
                             else dropout_rate)
        self.block_strings = list(block_strings)
        bn = {"bn_momentum": bn_momentum, "bn_epsilon": bn_epsilon}
        stem_filters = (STEM_FILTERS if params.lite
                        else round_filters(STEM_FILTERS, params.width))
        self.stem = ConvBnAct(stem_filters, 3, 2, self.act_type, name="stem", **bn)
        blocks = expand_blocks(backbone_name, self.block_strings)
        self.blocks = [
            MBConvBlock(dataclasses.asdict(b), self.act_type,
                        survival_prob=self._block_survival(i, len(blocks)),
                        grad_checkpoint=grad_checkpoint, name=f"blocks_{i}", **bn)
            for i, b in enumerate(blocks)]
        # A block ends a reduction stage when the next one downsamples.
        self._endpoint_ids = [i for i in range(len(blocks))
                              if i == len(blocks) - 1 or blocks[i + 1].strides > 1]
        if include_top:
            head_filters = (HEAD_FILTERS if params.lite
                            else round_filters(HEAD_FILTERS, params.width))
            self.head = ClassifierHead(num_classes, self.dropout_rate,
                                       head_filters, 1, 1, self.act_type,
                                       name="head", **bn)

    def _block_survival(self, index: int, count: int) -> float | None:
        """Linearly decays survival from 1 to ``survival_prob`` over depth."""
        if not self.survival_prob:
            return None
        return 1.0 - (1.0 - self.survival_prob) * index / count

    def call(self, x: tf.Tensor, training: bool | None = None):
        x = self.stem(x, training=training)
        endpoints = []
        for index, block in enumerate(self.blocks):
            x = block(x, training=training)
            if index in self._endpoint_ids:
                endpoints.append(x)
        if not self.include_top:
            return endpoints
        return self.head(x, training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone_name": self.backbone_name,
                "include_top": self.include_top, "num_classes": self.num_classes,
                "act_type": self.act_type, "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
                "survival_prob": self.survival_prob,
                "dropout_rate": self.dropout_rate,
                "block_strings": self.block_strings,
                "grad_checkpoint": self.grad_checkpoint}


def build_classifier(backbone_name: str = "efficientnet-b0",
                     num_classes: int = 1000,
                     image_size: int | None = None) -> keras.Model:
    """EfficientNet as a standalone image classifier (logits)."""
    size = image_size or backbone_params(backbone_name).resolution
    inputs = keras.Input((size, size, 3), name="images")
    logits = EfficientNet(backbone_name, include_top=True,
                          num_classes=num_classes)(inputs)
    return keras.Model(inputs, logits, name=backbone_name)
