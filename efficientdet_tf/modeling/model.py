"""``build_model(config)``: EfficientNet -> extra levels -> BiFPN -> heads.

The result is a Keras 3 functional model: normalised float images
``[B, H, W, 3]`` -> ``(class_outputs, box_outputs)``, lists over levels
min..max of ``[B, H/2^l, W/2^l, A*num_classes]`` and ``[B, H/2^l, W/2^l, A*4]``
(docs/contracts.md, "Model I/O"). The batch dimension is dynamic; the spatial size is
the config's ``image_size``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import keras

from efficientdet_tf.config import Config, ConfigError, choose
from efficientdet_tf.modeling.bifpn import FPNCells, ResampleFeatureMap
from efficientdet_tf.modeling.fpn_topologies import fpn_topology
from efficientdet_tf.modeling.efficientnet import EfficientNet
from efficientdet_tf.modeling.heads import box_net, class_net
from efficientdet_tf.ops.levels import feature_sizes

BACKBONE_LEVELS = 5  # EfficientNet yields C1..C5; higher levels are pooled.


def num_anchors(config: Config) -> int:
    """Anchors per location: one per (octave scale, aspect ratio)."""
    return config.num_scales * len(config.aspect_ratios)


# ``mixed_precision`` values -> Keras dtype policy. automl's ``true`` means
# float16 (GPUs); ``bfloat16`` is for CPUs with native bfloat16 (AVX512-BF16,
# AMX) and TPUs, and needs no loss scaling (float32's exponent range).
_PRECISION_POLICIES = {"false": "float32", "none": "float32",
                       "true": "mixed_float16",
                       "float32": "float32", "float16": "mixed_float16",
                       "mixed_float16": "mixed_float16",
                       "bfloat16": "mixed_bfloat16",
                       "mixed_bfloat16": "mixed_bfloat16"}


def dtype_policy(config: Config) -> str:
    """The Keras dtype policy of ``config.mixed_precision``: ``float32``,
    ``mixed_float16`` (``true``, ``float16``) or ``mixed_bfloat16``
    (``bfloat16``)."""
    return choose(_PRECISION_POLICIES, "mixed_precision",
                  str(config.mixed_precision).lower())


def build_model(config: Config, name: str | None = None) -> keras.Model:
    """Builds EfficientDet for ``config`` in its :func:`dtype_policy`."""
    if not 1 <= config.min_level <= BACKBONE_LEVELS:
        raise ConfigError(f"min_level must be in 1..{BACKBONE_LEVELS}, got "
                         f"{config.min_level}")
    with _dtype_policy(dtype_policy(config)):
        return _build(config, name or config.name)


def _build(config: Config, name: str) -> keras.Model:
    bn = {"bn_momentum": config.batch_norm_momentum,
          "bn_epsilon": config.batch_norm_epsilon}
    sizes = feature_sizes(config.image_size, config.max_level)
    images = keras.Input((*config.image_size, 3), name="images")
    endpoints = _backbone(config, bn)(images)
    if len(endpoints) != BACKBONE_LEVELS:
        raise ConfigError(
            f"backbone_config.blocks reduce the image {len(endpoints)} times; "
            f"EfficientDet needs {BACKBONE_LEVELS} (the stem and four "
            "stride-2 stages)")
    feats = list(endpoints[config.min_level - 1:])
    for level in range(BACKBONE_LEVELS + 1, config.max_level + 1):
        feats.append(ResampleFeatureMap(
            sizes[level], config.fpn_num_filters,
            apply_bn=config.apply_bn_for_resampling,
            conv_after_downsample=config.conv_after_downsample,
            name=f"resample_p{level}", **bn)(feats[-1]))
    topology = fpn_topology(config.fpn_name, config.fpn_config,
                            config.min_level, config.max_level)
    cell_config = {
        "topology": [node.as_config() for node in topology],
        "min_level": config.min_level, "max_level": config.max_level,
        "feat_sizes": sizes, "filters": config.fpn_num_filters,
        "weight_method": config.fpn_weight_method, "act_type": config.act_type,
        "node_options": {
            "separable_conv": config.separable_conv,
            "conv_bn_act_pattern": config.conv_bn_act_pattern,
            "apply_bn_for_resampling": config.apply_bn_for_resampling,
            "conv_after_downsample": config.conv_after_downsample, **bn}}
    feats = FPNCells(config.fpn_cell_repeats, cell_config)(feats)
    head = dict(num_anchors=num_anchors(config), filters=config.fpn_num_filters,
                min_level=config.min_level, max_level=config.max_level,
                repeats=config.box_class_repeats, act_type=config.act_type,
                separable_conv=config.separable_conv,
                survival_prob=config.survival_prob, **bn)
    class_outputs = class_net(config.num_classes, **head)(feats)
    box_outputs = box_net(**head)(feats)
    return keras.Model(images, [class_outputs, box_outputs], name=name)


def _backbone(config: Config, bn: dict[str, float]) -> EfficientNet:
    """EfficientNet as the config says, its stages replaced by
    ``backbone_config.blocks`` when given."""
    custom = ({"block_strings": config.backbone_config["blocks"]}
              if config.backbone_config else {})
    return EfficientNet(
        config.backbone_name, include_top=False, act_type=config.act_type,
        survival_prob=config.backbone_survival_prob,
        grad_checkpoint=bool(config.grad_checkpoint), **custom, **bn)


@contextlib.contextmanager
def _dtype_policy(policy: str) -> Iterator[None]:
    """Keras sublayers take the global policy at construction; scope it to
    this build so building one mixed-precision model changes nothing else."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)

