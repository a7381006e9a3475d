"""Learning-rate schedules, optimizers and the weight-decay / freezing rules.

automl's learning rate is tuned for a global batch of 64; it scales it by the
*per-shard* batch and counts schedule steps as if that were the whole batch,
so runs on a different number of devices silently train with another
schedule. Here the rate is scaled by the **global** batch and every length
(warm-up, decay, total) is counted in the steps this run really takes.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

import keras
import tensorflow as tf

from efficientdet_tf.modeling.checkpoint import all_layers, official_variable_map
from efficientdet_tf.config import Config, ConfigError

REFERENCE_BATCH = 64  # the global batch automl's learning_rate is tuned for


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """Everything a schedule needs, in steps of this run."""
    base_lr: float
    warmup_init_lr: float
    warmup_steps: int
    total_steps: int
    method: str = "cosine"
    first_drop_step: int = 0
    second_drop_step: int = 0
    poly_power: float = 0.9


def schedule_spec(config: Config, global_batch: int,
                  examples_per_epoch: int) -> ScheduleSpec:
    """Derives the schedule for ``global_batch`` and the dataset size."""
    if global_batch < 1 or examples_per_epoch < 1:
        raise ValueError("global batch and examples per epoch must be >= 1")
    scale = global_batch / REFERENCE_BATCH
    steps_per_epoch = max(1, math.ceil(examples_per_epoch / global_batch))
    total = max(1, int(round(config.num_epochs * steps_per_epoch)))
    warmup = min(total - 1, int(round(config.lr_warmup_epoch * steps_per_epoch)))
    return ScheduleSpec(
        base_lr=config.learning_rate * scale,
        warmup_init_lr=config.lr_warmup_init * scale,
        warmup_steps=max(0, warmup), total_steps=total,
        method=config.lr_decay_method,
        first_drop_step=int(config.first_lr_drop_epoch * steps_per_epoch),
        second_drop_step=int(config.second_lr_drop_epoch * steps_per_epoch),
        poly_power=config.poly_lr_power)


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``warmup_init_lr`` to ``base_lr``, then cosine,
    step (x0.1 at each drop) , polynomial or constant decay."""

    METHODS = ("cosine", "stepwise", "polynomial", "constant")

    def __init__(self, spec: ScheduleSpec | dict[str, Any]):
        self.spec = spec if isinstance(spec, ScheduleSpec) else ScheduleSpec(**spec)
        if self.spec.method not in self.METHODS:
            raise ConfigError(f"lr_decay_method must be one of {self.METHODS}, "
                              f"got {self.spec.method!r}")

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        s = self.spec
        step = tf.cast(step, tf.float32)
        warmup = float(max(s.warmup_steps, 1))
        warm_lr = s.warmup_init_lr + (s.base_lr - s.warmup_init_lr) * step / warmup
        decay_steps = float(max(s.total_steps - s.warmup_steps, 1))
        progress = tf.clip_by_value((step - s.warmup_steps) / decay_steps, 0., 1.)
        if s.method == "cosine":
            lr = 0.5 * s.base_lr * (1.0 + tf.cos(math.pi * progress))
        elif s.method == "polynomial":
            lr = s.base_lr * (1.0 - progress) ** s.poly_power
        elif s.method == "stepwise":
            lr = s.base_lr * tf.where(
                step < s.first_drop_step, 1.0,
                tf.where(step < s.second_drop_step, 0.1, 0.01))
        else:
            lr = tf.constant(s.base_lr, tf.float32)
        return tf.where(step < s.warmup_steps, warm_lr, lr)

    def get_config(self) -> dict[str, Any]:
        return {"spec": dataclasses.asdict(self.spec)}


def build_optimizer(config: Config, schedule: WarmupSchedule) -> keras.optimizers.Optimizer:
    """SGD with momentum (official), Adam or AdamW, with global-norm clipping.

    Weight decay for SGD/Adam is an explicit L2 term in the loss
    (:func:`l2_regularization`), as automl does; AdamW decays decoupled.
    """
    clip = config.clip_gradients_norm or None
    name = str(config.optimizer).lower()
    if name == "sgd":
        return keras.optimizers.SGD(schedule, momentum=config.momentum,
                                    global_clipnorm=clip)
    if name == "adam":
        return keras.optimizers.Adam(schedule, global_clipnorm=clip)
    if name == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay,
                                      global_clipnorm=clip)
    raise ConfigError(f"optimizer must be sgd, adam or adamw, got {config.optimizer!r}")


def decayed_variables(variables: Sequence[keras.Variable]) -> list[keras.Variable]:
    """Conv/dense kernels (incl. depthwise/pointwise) only, as automl: batch
    norm, biases and fusion weights are not decayed."""
    return [v for v in variables if v.path.endswith("kernel")]


def l2_regularization(variables: Sequence[keras.Variable], weight_decay: float) -> tf.Tensor:
    """``weight_decay * sum(||w||^2) / 2`` over the decayed variables
    (float32 even for mixed precision)."""
    decayed = decayed_variables(variables)
    if not decayed or not weight_decay:
        return tf.constant(0.0)
    return weight_decay * tf.add_n(
        [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in decayed])


def trainable_after_freeze(named: Mapping[str, keras.Variable],
                           var_freeze_expr: str | None) -> list[keras.Variable]:
    """The variables of ``named`` (official name -> variable, as
    :func:`~efficientdet_tf.modeling.checkpoint.official_variable_map`) to train.

    automl's rule, so its users' expressions freeze the same variables:
    ``re.match`` against TensorFlow's name, the official name plus ``:0``.
    The expression is anchored at the start: ``(efficientnet|fpn_cells)``
    freezes backbone and BiFPN (not ``resample_p6``), ``bn`` freezes nothing
    and ``.*bn`` every batch norm.
    """
    if not var_freeze_expr:
        return list(named.values())
    try:
        pattern = re.compile(var_freeze_expr)
    except re.error as err:
        raise ConfigError(f"var_freeze_expr {var_freeze_expr!r} is not "
                          f"a regular expression ({err})") from None
    return [v for name, v in named.items() if not pattern.match(f"{name}:0")]


def freeze_variables(model: keras.Model, var_freeze_expr: str | None
                     ) -> list[keras.Variable]:
    """The trainable variables left to train (:func:`trainable_after_freeze`),
    and every batch norm all of whose weights are frozen set
    ``trainable = False``: Keras 3 then normalises with its moving
    statistics and never updates them, so frozen layers stay bit-identical
    (automl keeps updating the statistics of frozen layers)."""
    kept = {id(v) for v in trainable_after_freeze(official_variable_map(model),
                                                  var_freeze_expr)}
    for layer in all_layers(model):
        if (isinstance(layer, keras.layers.BatchNormalization) and layer.weights
                and not any(id(w) in kept for w in layer.weights)):
            layer.trainable = False
    trainable = [v for v in model.trainable_variables if id(v) in kept]
    if not trainable:
        raise ConfigError(f"var_freeze_expr {var_freeze_expr!r} freezes "
                          "every variable; nothing would train")
    return trainable
