"""main.py's modes as library calls: ``train``, ``eval``, ``train_and_eval``.

Evaluation itself is :func:`efficientdet_tf.evaluation.evaluate.evaluate`, imported
only when a run evaluates, so training needs neither pycocotools nor the
evaluation code. Every evaluation writes ``model_dir/eval`` (results JSON,
TensorBoard) and offers its weights to ``model_dir/archive`` (kept when its
AP is the best so far).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Mapping, TextIO

import keras
import tensorflow as tf

from efficientdet_tf.modeling import checkpoint as ckpt_lib
from efficientdet_tf.training import curves, trainer_state
from efficientdet_tf.utils import summaries
from efficientdet_tf.utils.plotting import PlotsUnavailable
from efficientdet_tf.config import Config, get_config
from efficientdet_tf.datasets import record_check
from efficientdet_tf.datasets.kfold import Fold
from efficientdet_tf.modeling.detector import Detector
from efficientdet_tf.modeling.model import build_model
from efficientdet_tf.training.trainer import Trainer, TrainOptions
from efficientdet_tf.errors import EfficientDetError

MODES = ("train", "eval", "train_and_eval")
EVAL_DIR = "eval"


class RunError(EfficientDetError):
    """A mode that cannot run as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How to evaluate (main.py's flags of the same meaning)."""
    file_pattern: str
    val_json_file: str | None = None
    batch_size: int = 8
    samples: int | None = None  # automl's eval_samples; None: every record
    timeout: float | None = None  # eval mode: wait this long for new checkpoints
    fold: Fold | None = None  # K-fold: evaluate this fold of file_pattern only


def resolve_config(model_name: str, hparams: str | None,
                   explicit: Mapping[str, Any]) -> Config:
    """defaults -> ``model_name`` preset -> ``hparams`` (YAML file or
    ``a=1,b.c=2``) -> explicit flags (only those given, i.e. not None)."""
    config = get_config(model_name, hparams or None)
    return config.override({k: v for k, v in explicit.items() if v is not None})


class Evaluator:
    """Evaluates into ``model_dir/eval`` (one TensorBoard writer for the
    whole run) and keeps the best weights in ``model_dir/archive``."""

    def __init__(self, model_dir: str, options: EvalOptions, stream: TextIO):
        try:
            from efficientdet_tf.evaluation.evaluate import evaluate
        except ImportError as err:
            raise RunError(f"evaluation is unavailable ({err}); install the "
                           "package's requirements (pycocotools)") from None
        self._evaluate = evaluate
        # The detector of the model last evaluated: its traced function is
        # reused while the model stays the same (every epoch of a run).
        self._detector: Detector | None = None
        self.options, self.stream = options, stream
        self.model_dir = model_dir
        self._said_no_plots = False
        self.output_dir = os.path.join(model_dir, EVAL_DIR)
        self.writer = tf.summary.create_file_writer(self.output_dir)
        self.best = trainer_state.BestKeeper(model_dir)

    def __call__(self, model: keras.Model, config: Config, step: int
                 ) -> dict[str, float]:
        """COCO metrics of the model's current weights at ``step``; they go
        to archive/ when their AP is the best so far."""
        if (self._detector is None or self._detector.model is not model
                or self._detector.config != config):
            self._detector = Detector(model, config)
        fold = self.options.fold
        metrics = self._evaluate(
            self._detector, self.options.file_pattern,
            val_json_file=self.options.val_json_file,
            batch_size=self.options.batch_size, max_images=self.options.samples,
            output_dir=self.output_dir, summary_writer=self.writer, step=step,
            keep=fold.keep(held_out=True) if fold is not None else None)
        self._draw_curves(step)
        if self.best.offer(step, metrics, model):
            self.stream.write(f"best {trainer_state.BEST_METRIC} so far: "
                              f"{metrics[trainer_state.BEST_METRIC]:.4f} at step "
                              f"{step}, kept in {self.best.directory}\n")
            self.stream.flush()
        return metrics


    def _draw_curves(self, step: int) -> None:
        """Redraws ``training_curves.png`` (also into TensorBoard); without
        matplotlib says so once."""
        try:
            path = curves.write_training_curves(self.model_dir)
        except PlotsUnavailable as err:
            if not self._said_no_plots:
                self.stream.write(f"no {curves.CURVES_FILE}: {err}\n")
                self._said_no_plots = True
            return
        with self.writer.as_default():
            summaries.png_image("training_curves", path, step)
        self.writer.flush()


def _evaluate_trainer(trainer: Trainer, evaluator: Evaluator) -> None:
    """Evaluates (and may keep as best) the EMA weights: the ones automl
    evaluates and exports."""
    if trainer.chief:
        with trainer.evaluation_weights():
            evaluator(trainer.model, trainer.config, trainer.step)


def _checked_records(config: Config, training_pattern: str | None,
                     evaluation: EvalOptions | None) -> dict[str, str]:
    """Scans the validation records before anything is built (the Trainer
    scans the training ones, which a K-fold run also evaluates), because
    class ids beyond ``num_classes`` would be scored silently and a damaged
    shard would fail only when reached; returns the run's patterns by what
    they hold, for
    :func:`~efficientdet_tf.datasets.record_check.naming_damaged_files`."""
    if evaluation and evaluation.file_pattern != training_pattern:
        record_check.check_records(evaluation.file_pattern, config,
                                   "validation data")
    patterns = {"training data": training_pattern,
                "validation data": evaluation.file_pattern if evaluation else None}
    return {what: pattern for what, pattern in patterns.items() if pattern}


def run_train(config: Config, options: TrainOptions,
              strategy: tf.distribute.Strategy | None = None,
              eval_after_train: EvalOptions | None = None,
              stream: TextIO | None = None) -> Trainer:
    """Trains to the end (resuming when ``model_dir`` holds a checkpoint),
    then evaluates once when ``eval_after_train`` is given."""
    patterns = _checked_records(config, options.training_file_pattern,
                                eval_after_train)
    with record_check.naming_damaged_files(patterns):
        trainer = Trainer(config, options, strategy, stream)
        trainer.train()
        if eval_after_train:
            _evaluate_trainer(trainer, Evaluator(
                options.model_dir, eval_after_train, trainer.stream))
    return trainer


def run_train_and_eval(config: Config, options: TrainOptions,
                       eval_options: EvalOptions,
                       strategy: tf.distribute.Strategy | None = None,
                       stream: TextIO | None = None) -> Trainer:
    """Alternates one epoch of training with one evaluation.

    A run resumed mid-epoch finishes that epoch first; one resumed exactly
    at an epoch end trains on (that epoch's evaluation is not repeated).
    """
    patterns = _checked_records(config, options.training_file_pattern,
                                eval_options)
    with record_check.naming_damaged_files(patterns):
        trainer = Trainer(config, options, strategy, stream)
        evaluator = Evaluator(options.model_dir, eval_options, trainer.stream)
        while trainer.step < trainer.total_steps:
            epoch_end = ((trainer.step // trainer.steps_per_epoch + 1)
                         * trainer.steps_per_epoch)
            trainer.train(until_step=epoch_end)
            _evaluate_trainer(trainer, evaluator)
    return trainer


def run_eval(config: Config, model_dir: str, options: EvalOptions,
             stream: TextIO | None = None) -> dict[str, float]:
    """Evaluates ``model_dir``'s newest checkpoint (EMA weights); with
    ``options.timeout``, keeps evaluating each new checkpoint until none
    arrived for that many seconds or the run's last step was evaluated.
    Returns the last metrics."""
    stream = stream or sys.stdout
    trainer_state.prepare_model_dir(model_dir, config, write=False)
    prefix = None
    if not options.timeout:
        prefix = trainer_state.latest_checkpoint(model_dir)
        if prefix is None:
            raise RunError(f"no checkpoint in {model_dir} to evaluate (give "
                           "--eval_timeout to wait for one)")
    patterns = _checked_records(config, None, options)
    evaluator = Evaluator(model_dir, options, stream)
    model = build_model(config)
    with record_check.naming_damaged_files(patterns):
        if prefix is not None:
            return _evaluate_checkpoint(model, config, prefix, evaluator)
        return _evaluate_new_checkpoints(model, config, model_dir, options,
                                         evaluator)


def _evaluate_new_checkpoints(model: keras.Model, config: Config,
                              model_dir: str, options: EvalOptions,
                              evaluator: Evaluator) -> dict[str, float]:
    """Evaluates each checkpoint as it appears (run_eval with a timeout)."""
    metrics: dict[str, float] = {}
    seen = False
    for prefix in tf.train.checkpoints_iterator(model_dir, timeout=options.timeout):
        seen = True
        try:
            metrics = _evaluate_checkpoint(model, config, prefix, evaluator)
        except ckpt_lib.CheckpointError as err:
            # Training's rotation may delete a checkpoint before we read it.
            evaluator.stream.write(f"skipped {prefix}: {err}\n")
            continue
        step, total = trainer_state.checkpoint_steps(prefix)
        if total is not None and step >= total:
            break
    if not seen:
        raise RunError(f"no checkpoint appeared in {model_dir} within "
                       f"--eval_timeout={options.timeout:g} s")
    return metrics


def _evaluate_checkpoint(model: keras.Model, config: Config, prefix: str,
                         evaluator: Evaluator) -> dict[str, float]:
    ckpt_lib.load_weights(model, prefix, use_ema=True)
    step = trainer_state.checkpoint_steps(prefix)[0]
    evaluator.stream.write(f"evaluating {prefix} (step {step})\n")
    evaluator.stream.flush()
    return evaluator(model, config, step)
