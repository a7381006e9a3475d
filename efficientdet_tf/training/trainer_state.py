"""What a training run keeps in ``model_dir`` and how a killed run resumes.

Layout::

    model_dir/config.yaml        the config of the run (checked on restart)
    model_dir/checkpoint         state file naming the newest ckpt-N
    model_dir/ckpt-N.{index,data-*}   the last --keep_checkpoint_max states
    model_dir/archive/ckpt-N.*   the weights with the best eval AP so far
    model_dir/archive/best_eval.json  its step and metrics
    model_dir/train/, eval/      TensorBoard summaries

A training checkpoint is a native one (:func:`~efficientdet_tf.modeling.checkpoint.save_native`)
whose root holds, beside ``model`` and ``ema`` (what ``load_weights`` reads):

* ``optimizer``: every optimizer variable keyed by its Keras path without
  the optimizer's own name (``iteration``,
  ``<official_name_with_underscores>_momentum``,
  ``loss_scale/dynamic_scale`` under mixed precision;
  :func:`optimizer_variables`). Keras 3 names slots after the variable
  paths, which are the official names here, so the keys do not depend on
  creation order and a rebuilt optimizer restores one to one; the
  optimizer's name is left out because Keras numbers it per process
  (``sgd``, ``sgd_1``, ...);
* ``train_state``: the step and the run's total steps (continuous eval
  stops once it has seen the last one);
* ``data`` (``--deterministic`` runs on one replica only: multi-device
  iterators cannot be saved): the input iterator, so a resumed run reads the
  same batches an uninterrupted one would. Its shuffle and prefetch buffers
  make the checkpoint larger, which is why other runs skip it.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import keras
import tensorflow as tf
import yaml

from efficientdet_tf.modeling import checkpoint as ckpt_lib
from efficientdet_tf.config import Config
from efficientdet_tf.training.ema import WeightAverage
from efficientdet_tf.utils.files import CONFIG_FILE, atomic_write
from efficientdet_tf.errors import EfficientDetError

_LOG = logging.getLogger(__name__)

# automl's name for the best-eval checkpoint folder: its users export with
# --ckpt_path=<model_dir>/archive/.
BEST_DIR = "archive"
BEST_FILE = "best_eval.json"
BEST_METRIC = "AP"
STEP_KEY = "train_state/step/.ATTRIBUTES/VARIABLE_VALUE"
TOTAL_STEPS_KEY = "train_state/total_steps/.ATTRIBUTES/VARIABLE_VALUE"

# Keys that decide the network's variables and their shapes: a checkpoint
# of one value does not belong in a run of another.
ARCHITECTURE_KEYS = (
    "backbone_name", "backbone_config", "act_type", "min_level", "max_level",
    "num_scales", "aspect_ratios", "num_classes", "fpn_name", "fpn_config",
    "fpn_num_filters", "fpn_cell_repeats", "fpn_weight_method",
    "box_class_repeats", "separable_conv", "apply_bn_for_resampling",
    "conv_after_downsample", "conv_bn_act_pattern")


class ModelDirError(EfficientDetError, ValueError):
    """``model_dir`` holds a run that this one cannot continue."""


def prepare_model_dir(model_dir: str, config: Config, write: bool = True) -> None:
    """Refuses a ``model_dir`` whose ``config.yaml`` describes another
    network, then (when ``write``) records this run's config there
    atomically. Other differences (learning rate, epochs) are allowed:
    continuing a run with new schedule settings is legitimate."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            previous = yaml.safe_load(f) or {}
        new = yaml.safe_load(yaml.safe_dump(config.as_dict()))
        changed = [f"{key}: {previous.get(key)!r} -> {new.get(key)!r}"
                   for key in ARCHITECTURE_KEYS
                   if previous.get(key) != new.get(key)]
        if changed:
            raise ModelDirError(
                f"{model_dir} holds a run of another network ({'; '.join(changed)}"
                f"); pass --hparams={path} to continue it, or choose a new "
                "--model_dir")
    if write:
        tf.io.gfile.makedirs(model_dir)
        config.to_yaml(path)


def latest_checkpoint(directory: str) -> str | None:
    """The newest checkpoint prefix in ``directory``, or None when it holds
    none at all (a fresh run).

    A directory that holds checkpoints but cannot be resolved raises the
    :class:`~efficientdet_tf.modeling.checkpoint.CheckpointError` instead: read as
    "no checkpoint", it would restart a killed run at step 0 and overwrite
    its work."""
    if not tf.io.gfile.isdir(directory):
        return None
    holds = (tf.io.gfile.glob(os.path.join(directory, "*.index"))
             or tf.io.gfile.exists(os.path.join(directory, ckpt_lib.STATE_FILE)))
    return ckpt_lib.resolve_checkpoint(directory) if holds else None


def checkpoint_steps(prefix: str) -> tuple[int, int | None]:
    """(step, total steps of its run) stored in a training checkpoint; a
    checkpoint without them (converted, or archive/) counts as step 0."""
    reader = tf.train.load_checkpoint(prefix)
    keys = reader.get_variable_to_shape_map()
    step = int(reader.get_tensor(STEP_KEY)) if STEP_KEY in keys else 0
    total = int(reader.get_tensor(TOTAL_STEPS_KEY)) if TOTAL_STEPS_KEY in keys else None
    return step, total


def optimizer_variables(optimizer: keras.optimizers.Optimizer
                        ) -> dict[str, keras.Variable]:
    """The optimizer's variables by stable name: the Keras path with the
    optimizer's own (per-process numbered) name replaced by its role, ""
    for the optimizer that updates the weights and ``loss_scale/`` for a
    mixed-precision wrapper around it."""
    inner = getattr(optimizer, "inner_optimizer", None)
    roles = ({optimizer.name: "loss_scale/", inner.name: ""} if inner is not None
             else {optimizer.name: ""})
    named = {}
    for variable in optimizer.variables:
        scope, _, leaf = variable.path.partition("/")
        named[roles.get(scope, scope + "/") + leaf] = variable
    if len(named) != len(optimizer.variables):
        raise ValueError("optimizer variables with duplicate names cannot be "
                         "checkpointed by name")
    return named


class TrainState:
    """The variables a resumed run needs, saved and restored together."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 ema: WeightAverage | None, total_steps: int):
        if not optimizer.built:
            raise ValueError("build the optimizer (optimizer.build(variables)) "
                             "before creating its TrainState: restoring needs "
                             "its slot variables to exist")
        self.model, self.optimizer, self.ema = model, optimizer, ema
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.total_steps = tf.Variable(total_steps, dtype=tf.int64,
                                       trainable=False, name="total_steps")
        self.iterator: Any = None

    def _roots(self) -> dict[str, tf.train.Checkpoint]:
        roots = {"optimizer": tf.train.Checkpoint(**optimizer_variables(self.optimizer)),
                 "train_state": tf.train.Checkpoint(
                     step=self.step, total_steps=self.total_steps)}
        if self.iterator is not None:
            roots["data"] = tf.train.Checkpoint(iterator=self.iterator)
        return roots

    def save(self, directory: str, max_to_keep: int) -> str:
        """Writes the next checkpoint atomically, keeping the newest
        ``max_to_keep``; returns its prefix."""
        shadows = self.ema.shadows if self.ema else None
        return ckpt_lib.save_native(self.model, directory, ema=shadows,
                                    extras=self._roots(), max_to_keep=max_to_keep)

    def restore(self, prefix: str) -> list[str]:
        """Restores everything from a training checkpoint; returns warnings
        for parts the checkpoint lacks (e.g. written without EMA or with
        another optimizer), which then start fresh."""
        ckpt_lib.load_weights(self.model, prefix, use_ema=False)
        roots = self._roots()
        if self.ema:
            roots["ema"] = tf.train.Checkpoint(**self.ema.shadows)
        missing = []
        for name, root in roots.items():
            status = tf.train.Checkpoint(**{name: root}).read(prefix)
            status.expect_partial()
            try:
                status.assert_existing_objects_matched()
            except AssertionError:
                missing.append(name)
        if self.ema and "ema" in missing:
            self.ema.reset()
        return [f"{prefix} has no (complete) '{name}' state; it starts fresh"
                for name in missing]


class BestKeeper:
    """Keeps the weights with the highest eval AP in ``model_dir/archive``."""

    def __init__(self, model_dir: str):
        self.directory = os.path.join(model_dir, BEST_DIR)
        self.path = os.path.join(self.directory, BEST_FILE)

    def best(self) -> float | None:
        if not tf.io.gfile.exists(self.path):
            return None
        with tf.io.gfile.GFile(self.path) as f:
            return float(json.load(f)[BEST_METRIC])

    def offer(self, step: int, metrics: Mapping[str, float],
              model: keras.Model) -> bool:
        """Saves ``model``'s weights (those just evaluated) when
        ``metrics[AP]`` beats the best so far; returns whether it did."""
        if BEST_METRIC not in metrics:
            raise ValueError(f"evaluation returned no {BEST_METRIC!r} metric "
                             f"(got {', '.join(metrics)}) to pick the best by")
        value = float(metrics[BEST_METRIC])
        best = self.best()
        if best is not None and value <= best:
            return False
        prefix = ckpt_lib.save_native(model, self.directory, max_to_keep=1)
        atomic_write(self.path, json.dumps(
            {"step": step, "checkpoint": os.path.basename(prefix),
             **{k: float(v) for k, v in metrics.items()}}, indent=1) + "\n")
        _LOG.info("new best %s %.4f at step %d -> %s", BEST_METRIC, value,
                  step, prefix)
        return True
