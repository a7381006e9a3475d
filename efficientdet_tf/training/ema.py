"""Exponential moving average (EMA) of the weights, kept as automl keeps it.

automl evaluates and exports the EMA weights, not the raw ones, and its
checkpoints carry a shadow for every trainable weight *and* every batch-norm
moving statistic (``<name>/ExponentialMovingAverage``). Here the shadows are
plain variables keyed by the same official names, so
:func:`efficientdet_tf.modeling.checkpoint.save_native` stores them as the ``ema``
root and ``load_weights(use_ema=True)`` picks them up.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import keras
import tensorflow as tf

from efficientdet_tf.config import ConfigError
from efficientdet_tf.modeling.checkpoint import all_layers, official_variable_map


def averaged_variables(model: keras.Model, trainable: list[keras.Variable]
                       ) -> dict[str, keras.Variable]:
    """What the EMA shadows (official name -> variable): the trained
    weights and the moving statistics of the batch norms that still learn.
    Frozen variables never change, so their average is themselves and
    ``load_weights`` falls back to them."""
    changing = {id(v) for v in trainable}
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            changing.update((id(layer.moving_mean), id(layer.moving_variance)))
    return {name: v for name, v in official_variable_map(model).items()
            if id(v) in changing}


class WeightAverage:
    """Shadow copies of ``variables`` (official name -> model variable).

    Create it under the training strategy's scope so the shadows live where
    the variables do. :meth:`update` runs in cross-replica context (after
    ``strategy.run``): every replica holds the same weights after an
    all-reduced update, so one value per variable is averaged.
    """

    def __init__(self, variables: Mapping[str, keras.Variable], decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"moving_average_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.variables = dict(variables)
        self.shadows = {
            name: tf.Variable(tf.convert_to_tensor(variable), trainable=False,
                              name="ExponentialMovingAverage")
            for name, variable in self.variables.items()}

    def reset(self) -> None:
        """Shadows := current weights (after initialising from a checkpoint,
        so the average starts there rather than at random values)."""
        for name, shadow in self.shadows.items():
            shadow.assign(tf.convert_to_tensor(self.variables[name]))

    def decay_at(self, step: tf.Tensor) -> tf.Tensor:
        """automl's ``min(decay, (1 + step) / (10 + step))``: early in
        training the average follows the weights closely instead of staying
        near the random initialisation for thousands of steps."""
        step = tf.cast(step, tf.float32)
        return tf.minimum(self.decay, (1.0 + step) / (10.0 + step))

    def update(self, step: tf.Tensor) -> None:
        """``shadow -= (1 - decay) * (shadow - weight)`` for every shadow;
        ``step`` counts the updates done, this one included.

        The subtractive form leaves a shadow bit-identical when its weight
        did not move (``shadow * d + w * (1 - d)`` can round off).
        """
        rate = 1.0 - self.decay_at(step)
        for name, shadow in self.shadows.items():
            weight = tf.convert_to_tensor(self.variables[name])
            shadow.assign_sub((shadow - weight) * rate)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Swaps the averaged weights into the model for the ``with`` block
        (evaluation, export) and the raw ones back afterwards, even when the
        block raises, so training continues from its own weights."""
        backup = {name: variable.numpy()
                  for name, variable in self.variables.items()}
        for name, variable in self.variables.items():
            variable.assign(tf.convert_to_tensor(self.shadows[name]))
        try:
            yield
        finally:
            for name, variable in self.variables.items():
                variable.assign(backup[name])
