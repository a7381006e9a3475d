"""The training loop: a custom loop under any ``tf.distribute`` strategy.

One step, per replica: detection loss (focal + ``box_loss_weight`` x Huber
(+ ``iou_loss_weight`` x IoU loss), :func:`~efficientdet_tf.ops.losses.detection_loss`)
plus L2 weight decay on the kernels (not for AdamW, which decays by
itself), gradients, global-norm clipping, optimizer update; then, once per
step, the EMA of the weights.

Replicas combine so that N replicas with batch b train exactly like one
device with batch N*b (the schedule is scaled to that global batch):

* the loss normaliser is the *global* batch's ``positives + 1``: each
  replica scales its :func:`detection_loss` (normalised by its own
  positives) by ``(own positives + 1) / (global positives + 1)``, so the
  summed gradient is that of the global-batch loss;
* the L2 term, identical on every replica, is divided by
  ``num_replicas_in_sync``;
* gradients are summed across replicas *before* clipping by global norm.
  Keras 3 clips each replica's share before its own all-reduce, which clips
  another quantity than automl's single-device clip; so the loop takes
  clipping over (``global_clipnorm`` is read from the optimizer and
  cleared), clips the summed gradient and hands the optimizer 1/N of it per
  replica, which Keras' all-reduce sums back. With one replica this is a
  plain clip; with N it costs a second all-reduce.

With several replicas the batch norms use global-batch statistics
(:func:`synchronize_batch_norms`), so every worker
keeps the same moving averages.

``var_freeze_expr`` freezes every variable whose official name it matches
from the start, as automl's ``re.match`` does
(:func:`~efficientdet_tf.training.optim.trainable_after_freeze`): frozen variables
get no gradient, no weight decay and no EMA, and the batch norms it covers
entirely also stop updating their moving statistics
(:func:`~efficientdet_tf.training.optim.freeze_variables`), so frozen really means
bit-identical.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import sys
import tempfile
from typing import Any, ContextManager, Iterator, TextIO

import keras
import numpy as np
import tensorflow as tf

from efficientdet_tf.modeling import checkpoint as ckpt_lib
from efficientdet_tf.utils import summaries
from efficientdet_tf.training import trainer_state
from efficientdet_tf.config import Config
from efficientdet_tf.datasets import record_check
from efficientdet_tf.datasets.doctor import training_verdict
from efficientdet_tf.datasets.kfold import Fold
from efficientdet_tf.data.pipeline import build_dataset, targets_from_labels
from efficientdet_tf.training.ema import WeightAverage, averaged_variables
from efficientdet_tf.ops.losses import detection_loss
from efficientdet_tf.modeling.model import build_model, dtype_policy
from efficientdet_tf.training.optim import (WarmupSchedule, build_optimizer,
                                   freeze_variables, l2_regularization,
                                   schedule_spec)
from efficientdet_tf.utils.progress import Progress
from efficientdet_tf.training.strategy import is_chief
from efficientdet_tf.errors import EfficientDetError

SUM = tf.distribute.ReduceOp.SUM


class TrainingError(EfficientDetError):
    """A problem with the run's inputs or its course; the message says what
    to do (main.py prints it as one line)."""


class TrainingDivergedError(TrainingError):
    """The loss or the weights stopped being finite."""


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """A training run's settings that are not hyperparameters (main.py's
    flags of the same names)."""
    model_dir: str
    training_file_pattern: str
    train_batch_size: int = 64  # global, over all replicas
    num_examples_per_epoch: int | None = None  # None: count the records
    ckpt: str | None = None  # initial weights when model_dir has none
    save_checkpoints_steps: int = 100
    keep_checkpoint_max: int = 5
    seed: int | None = None
    deterministic: bool = False
    log_every_steps: int = 10
    fold: Fold | None = None  # K-fold: train on the records of the other folds


def check_training_files(file_pattern: str, config: Config) -> int:
    """Reads every training record once before anything is built
    (:func:`~efficientdet_tf.datasets.record_check.check_records`: class ids
    within ``num_classes``, no damaged shard) and returns their number; a
    bad pattern is a :class:`TrainingError` naming the file and the fix."""
    try:
        return record_check.check_records(file_pattern, config, "training data")
    except record_check.RecordError as err:
        raise TrainingError(str(err)) from None


def synchronize_batch_norms(model: keras.Model) -> None:
    """Makes every batch norm of ``model`` compute its training statistics
    over the global batch (all replicas), as automl's TPU/multi-GPU batch
    norm does. With per-replica statistics each worker's moving averages
    drift apart, so which worker saves the checkpoint would change the
    exported model; one replica gains nothing, hence only for several."""
    for layer in ckpt_lib.all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _checkpointable(iterator: Any) -> bool:
    """Whether ``tf.train.Checkpoint`` can save the iterator's position
    (not for multi-device distributed iterators)."""
    try:
        tf.train.Checkpoint(iterator=iterator)
    except ValueError:
        return False
    return True


class Trainer:
    """Builds model, optimizer, EMA and input under ``strategy`` and resumes
    from ``model_dir`` (or initialises from ``options.ckpt``).

    The constructor checks the training files first, so a wrong pattern
    fails in a second rather than after the model was built.
    """

    def __init__(self, config: Config, options: TrainOptions,
                 strategy: tf.distribute.Strategy | None = None,
                 stream: TextIO | None = None):
        self.config, self.options = config, options
        self.strategy = strategy or tf.distribute.get_strategy()
        self.stream = stream or sys.stdout
        self.chief = is_chief(self.strategy)
        examples = check_training_files(options.training_file_pattern, config)
        counted = "the records counted"
        if options.fold is not None:
            examples = options.fold.training_records
            counted = f"the records outside fold {options.fold.index} counted"
        if options.num_examples_per_epoch:
            examples = options.num_examples_per_epoch
        else:
            self._say(f"{examples} training examples per epoch ({counted}; "
                      "--num_examples_per_epoch sets another epoch)")
        self._say(training_verdict(options.training_file_pattern, config))
        replicas = self.strategy.num_replicas_in_sync
        if options.train_batch_size < 1 or options.train_batch_size % replicas:
            raise TrainingError(f"train_batch_size {options.train_batch_size} "
                                f"must be a positive multiple of the {replicas} "
                                "replicas it is split across")
        self.spec = schedule_spec(config, options.train_batch_size, examples)
        self.steps_per_epoch = math.ceil(examples / options.train_batch_size)
        self.total_steps = self.spec.total_steps
        trainer_state.prepare_model_dir(options.model_dir, config, write=self.chief)
        self._seed_everything()
        with self.strategy.scope():
            self.model = build_model(config)
            if replicas > 1:
                synchronize_batch_norms(self.model)
            self.trainable = freeze_variables(self.model, config.var_freeze_expr)
            self.schedule = WarmupSchedule(self.spec)
            inner = build_optimizer(config, self.schedule)
            # The loop clips the all-reduced gradient itself (module docstring).
            self.clip_norm, inner.global_clipnorm = inner.global_clipnorm, None
            # float16 needs loss scaling; bfloat16 has float32's range.
            self.optimizer = (keras.optimizers.LossScaleOptimizer(inner)
                              if dtype_policy(config) == "mixed_float16" else inner)
            self.optimizer.build(self.trainable)
            self.ema = (WeightAverage(averaged_variables(self.model, self.trainable),
                                      config.moving_average_decay)
                        if config.moving_average_decay else None)
            self.state = trainer_state.TrainState(self.model, self.optimizer,
                                                  self.ema, self.total_steps)
        self._say(f"{config.name}: {self.total_steps} steps ({config.num_epochs:g} "
                  f"epochs of {self.steps_per_epoch}), global batch "
                  f"{options.train_batch_size} on {replicas} replica(s), peak "
                  f"learning rate {self.spec.base_lr:.4g} (learning_rate "
                  f"{config.learning_rate:g} x batch / 64), {len(self.trainable)} "
                  "variables trained")
        self.iterator = self._initialise()
        self._step_fn = tf.function(self._step)
        self._finite_fn = tf.function(self._weights_finite)
        self.writer = (tf.summary.create_file_writer(
            os.path.join(options.model_dir, "train")) if self.chief
            else tf.summary.create_noop_writer())

    @property
    def step(self) -> int:
        return int(self.state.step.numpy())

    def _say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    @property
    def _seed(self) -> int | None:
        seed = self.options.seed
        return 0 if seed is None and self.options.deterministic else seed

    def _seed_everything(self) -> None:
        """``--deterministic`` fixes every seed (0 unless ``--seed``) and
        makes TensorFlow's kernels deterministic, which a bit-exact resume
        needs; ``--seed`` alone only fixes initialisation and data order.

        It also turns grappler's graph rewrites off. Deterministic kernels
        are not enough: grappler rewrites sums of more than two tensors (the
        gradients of the head convolutions shared by five levels, BiFPN's
        fusions) into accumulations in whatever order the inputs arrive, so
        the last bits of the sum, and after a thousand steps the AP, change
        from run to run. They bought no speed on the demo's training step
        (D0, 128 px, batch 8, 2 cores, three alternating runs each): 26.4 to
        29.9 images/s with them, 26.9 to 30.9 without.
        """
        if self.options.deterministic:
            tf.config.experimental.enable_op_determinism()
            tf.config.optimizer.set_experimental_options(
                {"disable_meta_optimizer": True})
        if self._seed is not None:
            keras.utils.set_random_seed(self._seed)

    def _input(self, seed: int | None) -> Any:
        fold = self.options.fold
        keep = fold.keep(held_out=False) if fold is not None else None
        return iter(self.strategy.distribute_datasets_from_function(
            lambda context: build_dataset(
                self.options.training_file_pattern, self.config, training=True,
                batch_size=self.options.train_batch_size, seed=seed,
                deterministic=self.options.deterministic, input_context=context,
                keep=keep)))

    def _initialise(self) -> Any:
        """Resumes from model_dir's newest checkpoint, else loads
        ``--ckpt``; returns the input iterator positioned accordingly.

        ``--deterministic`` runs checkpoint the iterator when the strategy's
        iterator supports it (one replica); otherwise a resumed run reads a
        fresh input seeded with ``seed + step``, so it does not replay the
        batches it started with.
        """
        latest = trainer_state.latest_checkpoint(self.options.model_dir)
        start = trainer_state.checkpoint_steps(latest)[0] if latest else 0
        iterator = self._input(self._seed)
        if self.options.deterministic and _checkpointable(iterator):
            self.state.iterator = iterator
        else:
            if self.options.deterministic:
                self._say("note: this strategy's input iterator cannot be "
                          "checkpointed; a resumed run continues with other batches")
            if start and self._seed is not None:
                iterator = self._input(self._seed + start)
        if latest:
            for warning in self.state.restore(latest):
                self._say(f"warning: {warning}")
            self._say(f"resuming from {latest} at step {self.step}")
            if self.options.ckpt:
                self._say(f"--ckpt {self.options.ckpt} ignored: {self.options.model_dir} "
                          "already holds a checkpoint of this run")
        elif self.options.ckpt:
            report = ckpt_lib.load_weights(self.model, self.options.ckpt,
                                           use_ema=True, skip_mismatch=True)
            self._say(f"initialised from {report.summary()}")
            if self.ema:
                self.ema.reset()
        return iterator

    def _loss_scale(self) -> tf.Tensor | float:
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return self.optimizer.dynamic_scale
        return 1.0

    def _replica_step(self, images: tf.Tensor, labels: dict[str, tf.Tensor]
                      ) -> dict[str, tf.Tensor]:
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        targets = targets_from_labels(labels, self.config)
        positives = tf.reduce_sum(tf.cast(targets.num_positives, tf.float32))
        share = (positives + 1.0) / (context.all_reduce(SUM, positives) + 1.0)
        decoupled = str(self.config.optimizer).lower() == "adamw"
        with tf.GradientTape() as tape:
            class_outputs, box_outputs = self.model(images, training=True)
            terms = detection_loss(class_outputs, box_outputs, targets, self.config)
            decay = (tf.constant(0.0) if decoupled else l2_regularization(
                self.trainable, self.config.weight_decay)) / replicas
            loss = terms["total"] * share + decay
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, self.trainable)
        if replicas > 1:
            grads = context.all_reduce(SUM, grads)
        if self.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, self.clip_norm * self._loss_scale())
        if replicas > 1:
            grads = [g / replicas for g in grads]
        self.optimizer.apply(grads, self.trainable)
        losses = {"loss": loss, "cls_loss": terms["cls_loss"] * share,
                  "box_loss": terms["box_loss"] * share}
        if self.config.iou_loss_type:
            losses["box_iou_loss"] = terms["box_iou_loss"] * share
        if not decoupled and self.config.weight_decay:
            losses["weight_decay"] = decay
        return losses

    def _step(self, iterator: Iterator) -> dict[str, tf.Tensor]:
        images, labels = next(iterator)
        learning_rate = self.schedule(self.optimizer.iterations)
        per_replica = self.strategy.run(self._replica_step, args=(images, labels))
        losses = {name: self.strategy.reduce(SUM, value, axis=None)
                  for name, value in per_replica.items()}
        self.state.step.assign_add(1)
        if self.ema:
            self.ema.update(self.state.step)
        return {**losses, "learning_rate": learning_rate}

    def _weights_finite(self) -> tf.Tensor:
        values = [*self.model.weights, *(self.ema.shadows.values() if self.ema else [])]
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32)))
                              for v in values])

    def train(self, until_step: int | None = None) -> int:
        """Trains up to ``until_step`` (default: the end of the run),
        saving every ``save_checkpoints_steps``, at each epoch end and at the
        last step; returns the step reached. Raises
        :class:`TrainingDivergedError` without saving when the loss or the
        weights stop being finite."""
        options = self.options
        target = self.total_steps if until_step is None else min(until_step,
                                                                 self.total_steps)
        step = self.step
        progress = Progress(step, self.total_steps, options.train_batch_size,
                            every=options.log_every_steps, stream=self.stream)
        try:
            with self.writer.as_default():
                while step < target:
                    values = {k: float(v) for k, v in self._step_fn(self.iterator).items()}
                    learning_rate = values.pop("learning_rate")
                    step += 1
                    if not all(math.isfinite(v) for v in values.values()):
                        raise TrainingDivergedError(self._diagnosis(
                            step, values, "the loss is not finite"))
                    progress.update(step, values, learning_rate)
                    if step % options.log_every_steps == 0 or step == target:
                        self._summarise(step, values, learning_rate,
                                        progress.images_per_second())
                    if (step % options.save_checkpoints_steps == 0 or step == target
                            or step % self.steps_per_epoch == 0):
                        # Non-finite weights must not take a good checkpoint's
                        # place in the rotation.
                        if not bool(self._finite_fn()):
                            raise TrainingDivergedError(self._diagnosis(
                                step, values, "the weights are no longer finite "
                                f"({self._non_finite_weights()})"))
                        progress.message(f"saved {self._save()} (step {step})")
        finally:
            progress.close()
            self.writer.flush()
        return step

    def _summarise(self, step: int, values: dict[str, float], learning_rate: float,
                   images_per_second: float) -> None:
        for name, value in values.items():
            summaries.scalar(f"loss/{name}", value, step)
        summaries.scalar("learning_rate", learning_rate, step)
        if images_per_second:
            summaries.scalar("images_per_second", images_per_second, step)

    def _non_finite_weights(self, shown: int = 3) -> str:
        """Names the first non-finite variables (the EMA's as ``ema:name``);
        only called once training has diverged, so speed does not matter."""
        named = [*ckpt_lib.official_variable_map(self.model).items(),
                 *((f"ema:{n}", v) for n, v in
                   (self.ema.shadows.items() if self.ema else []))]
        bad = [n for n, v in named if not np.isfinite(v.numpy()).all()]
        more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
        return ", ".join(bad[:shown]) + more

    def _save(self) -> str:
        if self.chief:
            return self.state.save(self.options.model_dir,
                                   self.options.keep_checkpoint_max)
        # Other workers write too (their variables may take part in
        # collective reads), into a directory thrown away afterwards.
        scratch = tempfile.mkdtemp(prefix="efficientdet-worker-")
        try:
            return self.state.save(scratch, 1)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def evaluation_weights(self) -> ContextManager[None]:
        """The weights to evaluate or export: the EMA when there is one."""
        return self.ema.applied() if self.ema else contextlib.nullcontext()

    def _diagnosis(self, step: int, values: dict[str, float], what: str) -> str:
        bad = [k for k, v in values.items() if not math.isfinite(v) and k != "loss"]
        terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        latest = trainer_state.latest_checkpoint(self.options.model_dir)
        kept = (f"the last good checkpoint is {latest} (step "
                f"{trainer_state.checkpoint_steps(latest)[0]})" if latest
                else "no checkpoint had been written yet")
        culprit = f" in {', '.join(bad)}" if bad else ""
        boxes = (" Non-finite box terms with a finite cls_loss usually mean "
                 "broken boxes." if bad and set(bad) <= {"box_loss", "box_iou_loss"}
                 else "")
        return (f"training diverged at step {step}: {what}{culprit}"
                f"{' (' + terms + ')' if terms else ''}. Nothing was saved after "
                f"it; {kept}.{boxes} Try a lower learning_rate (now "
                f"{self.config.learning_rate:g}, e.g. --hparams=learning_rate="
                f"{self.config.learning_rate / 10:g}) or a longer lr_warmup_epoch, "
                f"and check the boxes with python dataset/inspect_tfrecord.py "
                f"--file_pattern='{self.options.training_file_pattern}'")
