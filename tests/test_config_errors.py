"""A bad value in a user's YAML is the user's error, not a bug: every check
that rejects one raises the library's ConfigError, which the CLIs print as
one line (a plain ValueError there would be a traceback)."""
from __future__ import annotations

import pytest

from efficientdet_tf.config import ConfigError, get_config
from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.modeling.efficientnet import backbone_params
from efficientdet_tf.modeling.fpn_topologies import fpn_topology
from efficientdet_tf.modeling.layers import activation
from efficientdet_tf.ops.anchors import anchor_boxes
from efficientdet_tf.ops.postprocess import NmsSettings
from efficientdet_tf.training.ema import WeightAverage
from efficientdet_tf.training.optim import (WarmupSchedule, build_optimizer,
                                            schedule_spec)


def optimizer_for(overrides: str):
    config = get_config("efficientdet-d0", overrides)
    return build_optimizer(config, WarmupSchedule(schedule_spec(config, 8, 64)))


CHECKS = {
    "optimizer": (lambda: optimizer_for("optimizer=rmsprop"), "rmsprop"),
    "lr_decay_method": (lambda: optimizer_for("lr_decay_method=exponential"),
                        "exponential"),
    "moving_average_decay": (lambda: WeightAverage({}, 1.5),
                             "moving_average_decay"),
    "nms_configs.method": (
        lambda: NmsSettings.from_config({"method": "soft"}), "soft"),
    "aspect_ratios": (lambda: anchor_boxes(
        get_config("efficientdet-d0", {"aspect_ratios": [-1.0]})), "-1.0"),
}


@pytest.mark.parametrize("key", sorted(CHECKS))
def test_bad_value_is_a_config_error(key):
    call, named = CHECKS[key]
    with pytest.raises(ConfigError, match=named) as raised:
        call()
    assert isinstance(raised.value, EfficientDetError)


@pytest.mark.parametrize("lookup, named, known", [
    (lambda: activation("gelu2"), "act_type 'gelu2'", "swish"),
    (lambda: backbone_params("efficientnet-b9"), "backbone 'efficientnet-b9'",
     "efficientnet-b0"),
    (lambda: fpn_topology("pan", None, 3, 7), "fpn_name 'pan'", "qufpn"),
])
def test_unknown_named_choice_lists_the_known_ones(lookup, named, known):
    with pytest.raises(ConfigError, match=f"unknown {named}; known: .*{known}"):
        lookup()
