"""Learning-rate schedule, optimizers, weight decay and freezing rules."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from tests.conftest import tiny_config
from efficientdet_tf.modeling.checkpoint import all_layers, official_variable_map
from efficientdet_tf.config import ConfigError, get_config
from efficientdet_tf.modeling.model import build_model
from efficientdet_tf.training.optim import (WarmupSchedule, build_optimizer,
                                   decayed_variables, freeze_variables,
                                   l2_regularization, schedule_spec,
                                   trainable_after_freeze)


def spec_for(global_batch=64, examples=640, **overrides):
    config = get_config("efficientdet-d0", {"num_epochs": 10,
                                            "lr_warmup_epoch": 1.0, **overrides})
    return schedule_spec(config, global_batch, examples)


def test_schedule_scales_with_global_batch_and_counts_real_steps():
    spec = spec_for(global_batch=16, examples=640)
    assert spec.base_lr == pytest.approx(0.08 * 16 / 64)
    assert spec.warmup_init_lr == pytest.approx(0.008 * 16 / 64)
    assert (spec.warmup_steps, spec.total_steps) == (40, 400)  # 40 steps/epoch


def test_warmup_then_cosine():
    spec = spec_for()
    schedule = WarmupSchedule(spec)
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == pytest.approx(spec.warmup_init_lr)
    assert lr(spec.warmup_steps // 2) == pytest.approx(
        (spec.warmup_init_lr + spec.base_lr) / 2, rel=1e-5)
    assert lr(spec.warmup_steps) == pytest.approx(spec.base_lr)
    middle = (spec.warmup_steps + spec.total_steps) / 2
    assert lr(middle) == pytest.approx(spec.base_lr / 2, rel=1e-5)
    assert lr(spec.total_steps) == pytest.approx(0.0, abs=1e-9)
    quarter = spec.warmup_steps + (spec.total_steps - spec.warmup_steps) / 4
    assert lr(quarter) == pytest.approx(
        0.5 * spec.base_lr * (1 + math.cos(math.pi / 4)), rel=1e-5)


def test_stepwise_and_polynomial():
    spec = spec_for(lr_decay_method="stepwise", first_lr_drop_epoch=5,
                    second_lr_drop_epoch=8)
    schedule = WarmupSchedule(spec)
    assert float(schedule(30)) == pytest.approx(spec.base_lr)
    assert float(schedule(55)) == pytest.approx(spec.base_lr * 0.1)
    assert float(schedule(85)) == pytest.approx(spec.base_lr * 0.01)
    poly = WarmupSchedule(spec_for(lr_decay_method="polynomial"))
    assert float(poly(100)) == pytest.approx(0.0, abs=1e-9)


def test_schedule_serialises():
    schedule = WarmupSchedule(spec_for())
    clone = WarmupSchedule.from_config(schedule.get_config())
    assert float(clone(7)) == float(schedule(7))


def test_bad_method():
    with pytest.raises(ValueError, match="lr_decay_method"):
        WarmupSchedule(spec_for(lr_decay_method="linear"))


@pytest.mark.parametrize("name,cls", [("sgd", keras.optimizers.SGD),
                                      ("adam", keras.optimizers.Adam),
                                      ("adamw", keras.optimizers.AdamW)])
def test_build_optimizer(name, cls):
    config = get_config("efficientdet-d0", {"optimizer": name})
    optimizer = build_optimizer(config, WarmupSchedule(spec_for()))
    assert isinstance(optimizer, cls)
    assert optimizer.global_clipnorm == 10.0
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(get_config("efficientdet-d0", {"optimizer": "lamb"}),
                        WarmupSchedule(spec_for()))


def _variables():
    dense = keras.layers.Dense(3, name="dense")
    bn = keras.layers.BatchNormalization(name="bn")
    dense.build((None, 2))
    bn.build((None, 3))
    return dense, bn


def test_weight_decay_only_on_kernels():
    dense, bn = _variables()
    variables = dense.trainable_weights + bn.trainable_weights
    assert [v.path for v in decayed_variables(variables)] == ["dense/kernel"]
    dense.kernel.assign(np.ones((2, 3)))
    assert float(l2_regularization(variables, 0.1)) == pytest.approx(0.1 * 6 / 2)


def test_freeze_expression():
    dense, bn = _variables()
    named = {v.path: v for v in dense.trainable_weights + bn.trainable_weights}
    kept = trainable_after_freeze(named, "(bn|nothing)")
    assert [v.path for v in kept] == ["dense/kernel", "dense/bias"]
    assert trainable_after_freeze(named, None) == list(named.values())
    with pytest.raises(ConfigError, match="not a regular expression"):
        trainable_after_freeze(named, "(bn")


def test_freeze_expression_matches_official_names_from_the_start_as_automl():
    """automl applies ``re.match`` to TensorFlow's variable names (official
    name + ``:0``). A search anywhere in the Keras paths froze other
    variables: ``bn`` every batch norm (automl: none), ``.*depthwise_kernel``
    nothing (the Keras path ends in ``depthwise_conv2d/kernel``)."""
    model = build_model(tiny_config())
    named = official_variable_map(model)

    def frozen(var_freeze_expr: str) -> set[str]:
        kept = {id(v) for v in trainable_after_freeze(named, var_freeze_expr)}
        return {n for n, v in named.items() if id(v) not in kept}

    def frozen_norms() -> set[str]:
        return {layer.path for layer in all_layers(model)
                if isinstance(layer, keras.layers.BatchNormalization)
                and not layer.trainable}

    assert not frozen("bn")
    assert len(freeze_variables(model, "bn")) == len(model.trainable_variables)
    assert not frozen_norms()

    by_norms = frozen(".*bn")
    assert "class_net/class-0-bn-3/gamma" in by_norms
    assert all("bn" in n.split("/")[-2] for n in by_norms)
    depthwise = frozen(".*depthwise_kernel")
    assert depthwise and all(n.endswith("/depthwise_kernel") for n in depthwise)
    # The ":0" suffix is part of the name automl matches.
    assert frozen(".*/bias:0") and not frozen(".*/bias$")

    trained = freeze_variables(model, "(efficientnet|fpn_cells)")
    assert {n.split("/")[0] for n in frozen("(efficientnet|fpn_cells)")} == {
        "efficientnet-b0", "fpn_cells"}
    assert not any(v.path.startswith(("efficientnet", "fpn_cells")) for v in trained)
    norms = frozen_norms()
    assert "efficientnet-b0/stem/tpu_batch_normalization" in norms
    assert not any(n.startswith(("class_net", "box_net")) for n in norms)
