"""Train and evaluate EfficientDet (automl's main.py flags).

  python main.py --mode=train --model_name=efficientdet-d0 \\
      --training_file_pattern='tfrecord/train-*.tfrecord' \\
      --model_dir=/tmp/d0 --train_batch_size=8 --num_epochs=20 \\
      --hparams='num_classes=3,image_size=256' --ckpt=efficientdet-d0/

  python main.py --mode=eval --model_dir=/tmp/d0 --hparams=/tmp/d0/config.yaml \\
      --validation_file_pattern='tfrecord/val-*.tfrecord' --eval_timeout=600

K-fold cross-validation: --fold=k --num_folds=K splits the
--training_file_pattern records into K folds stratified by class, trains on
all folds but k and evaluates on fold k (no --validation_file_pattern); the
split goes to model_dir/folds.json. It depends only on the records and
--fold_seed (default 0), so every fold's run splits the same way
(dataset/split_kfold.py --seed=S writes that split to files). One run a fold:

  for k in 0 1 2 3 4; do
    python main.py --mode=train --eval_after_train --fold=$k --num_folds=5 \\
        --training_file_pattern='tfrecord/train-*.tfrecord' \\
        --model_dir=/tmp/kfold/fold-$k --hparams='num_classes=3' --num_epochs=20
  done

Rerunning a killed training command resumes from the newest checkpoint in
--model_dir (weights, EMA, optimizer state and step). The config is
defaults -> --model_name preset -> --hparams -> explicit flags
(--num_epochs); it is written to model_dir/config.yaml, and a model_dir
holding a different network is refused. Errors exit with status 1 and one
line on stderr (2 for flag errors). Installed with pip, this is the
``efficientdet-train`` command.
"""
from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Sequence

from efficientdet_tf.cli.command import (Parser, UsageError, boolean,
                                         positive_int, run)

if TYPE_CHECKING:
    from efficientdet_tf.config import Config
    from efficientdet_tf.datasets.kfold import Fold

PROG = "main.py"
MODES = ("train", "eval", "train_and_eval")  # runner.MODES, without importing TF
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
INTERRUPTED = ("rerun the same command to resume from the newest checkpoint "
               "in {model_dir}")


def build_parser() -> Parser:
    """automl's main.py flags, with the same names and meanings."""
    p = Parser(PROG, __doc__)
    flag = p.add_argument
    flag("--mode", choices=MODES, default="train",
         help="train: train to the end; eval: evaluate the newest checkpoint "
         "of --model_dir (with --eval_timeout, each new one as it appears); "
         "train_and_eval: alternate one epoch of training and one evaluation "
         "(default %(default)s)")
    flag("--training_file_pattern", "--train_file_pattern",
         dest="training_file_pattern",
         help="training TFRecords: a glob (quote it) or several joined by "
         "commas; needed by train and train_and_eval")
    flag("--validation_file_pattern", "--val_file_pattern",
         dest="validation_file_pattern",
         help="validation TFRecords; needed by eval, train_and_eval and "
         "--eval_after_train")
    flag("--val_json_file", help="COCO ground-truth JSON of the validation "
         "records (default: ground truth read from the records); with --fold "
         "that of the training records, of which only the held-out fold's "
         "images are scored")
    flag("--model_name", default="efficientdet-d0",
         help="model preset: efficientdet-d0..d7x or efficientdet-lite0..4 "
         "(default %(default)s)")
    flag("--model_dir", required=True,
         help="directory of the run: config.yaml, checkpoints (ckpt-N), "
         "archive/ (best eval AP), train/ and eval/ TensorBoard summaries")
    flag("--ckpt", help="initial weights when --model_dir has no checkpoint "
         "yet: an official automl checkpoint (its EMA weights), a "
         "backbone-only one, or a native one (directory or prefix); variables "
         "whose shape differs (another num_classes) keep their initial values "
         "and are listed")
    flag("--hparams", default="",
         help="config overrides: a YAML file or 'a=1,b.c=2' with automl's "
         "keys, e.g. 'num_classes=3,learning_rate=0.02'; also useful: "
         "var_freeze_expr (regex matched from the start of official variable "
         "names, as automl's re.match: '(efficientnet|fpn_cells)' freezes "
         "backbone and BiFPN), moving_average_decay "
         "(0: no EMA), mixed_precision (true: float16, bfloat16: CPUs with "
         "AVX512-BF16/AMX), optimizer (sgd, adam, adamw); "
         "image_size strings are automl's WIDTHxHEIGHT ('640x384' is 640 wide)")
    flag("--train_batch_size", type=positive_int, default=64,
         help="global training batch, split across replicas; the learning "
         "rate is scaled by it / 64 (default %(default)s)")
    flag("--eval_batch_size", type=positive_int, default=8,
         help="evaluation batch (default %(default)s)")
    flag("--num_examples_per_epoch", type=positive_int,
         help="images per epoch (default: count the training records, which "
         "reads every file once)")
    flag("--num_epochs", type=positive_int,
         help="training epochs (default: the config's num_epochs)")
    flag("--strategy", choices=STRATEGIES, default="default",
         help="default/one_device: one GPU or the CPU; mirrored: every local "
         "GPU; multi_worker: every worker in TF_CONFIG; tpu: the TPU given "
         "by --tpu (default %(default)s)")
    flag("--tpu", help="TPU name or grpc:// address for --strategy=tpu "
         "('local' on a TPU VM)")
    flag("--eval_after_train", "--eval_after_training", dest="eval_after_train",
         type=boolean, nargs="?", const=True, default=False,
         help="in train mode, evaluate once after the last step")
    flag("--eval_samples", type=positive_int,
         help="evaluate at most this many validation images (default: all)")
    flag("--eval_timeout", type=float,
         help="eval mode: keep evaluating new checkpoints, stopping when none "
         "arrived for this many seconds or the run's last step was "
         "evaluated (default: evaluate the newest checkpoint once)")
    flag("--save_checkpoints_steps", type=positive_int, default=100,
         help="save a checkpoint every this many steps; one is also saved at "
         "each epoch end and at the last step (default %(default)s)")
    flag("--keep_checkpoint_max", type=positive_int, default=5,
         help="newest checkpoints kept in --model_dir; archive/ is kept apart "
         "(default %(default)s)")
    flag("--seed", type=int, help="random seed for initialisation, data "
         "order and augmentation (default: random)")
    flag("--deterministic", type=boolean, nargs="?", const=True, default=False,
         help="deterministic kernels and input order (seed 0 unless --seed); "
         "checkpoints then also hold the input position, so a resumed run "
         "repeats exactly what an uninterrupted one does; slower")
    flag("--log_every_steps", type=positive_int, default=10,
         help="without a terminal, print a progress line (and write "
         "TensorBoard scalars) every this many steps (default %(default)s)")
    flag("--num_folds", type=positive_int,
         help="K-fold cross-validation: split the --training_file_pattern "
         "records into this many folds, stratified by class; goes with --fold")
    flag("--fold", type=int,
         help="the held-out fold, 0..num_folds-1: its records are the "
         "validation data (so no --validation_file_pattern, in every mode) "
         "and the other folds' the training data")
    flag("--fold_seed", type=int,
         help="seed of the split into folds (default 0); apart from --seed so "
         "that every fold of a cross-validation, whatever its training seed, "
         "splits the same way")
    return p


def _check_fold_flags(flags: argparse.Namespace) -> None:
    """--fold, --num_folds and --fold_seed go together and in range; the
    held-out fold replaces --validation_file_pattern."""
    if (flags.fold is None) != (flags.num_folds is None):
        raise UsageError("--fold and --num_folds go together")
    if flags.fold is None:
        if flags.fold_seed is not None:
            raise UsageError("--fold_seed goes with --fold and --num_folds")
        return
    if flags.num_folds < 2:
        raise UsageError(f"--num_folds must be at least 2, got {flags.num_folds}")
    if not 0 <= flags.fold < flags.num_folds:
        raise UsageError(f"--fold must be 0..{flags.num_folds - 1} for "
                         f"--num_folds={flags.num_folds}, got {flags.fold}")
    if flags.validation_file_pattern:
        raise UsageError("--validation_file_pattern does not go with --fold: "
                         "the held-out fold of --training_file_pattern is the "
                         "validation data")


def _check_flags(flags: argparse.Namespace) -> None:
    """The flags each mode needs, which argparse cannot express."""
    _check_fold_flags(flags)
    validation = "validation_file_pattern"
    asked = f"--mode={flags.mode}"
    if flags.fold is not None:
        validation = "training_file_pattern"
        asked += " --fold"
    needed = {"train": ["training_file_pattern"], "eval": [validation],
              "train_and_eval": ["training_file_pattern", validation]}
    if flags.mode == "train" and flags.eval_after_train:
        needed["train"].append(validation)
        asked += " --eval_after_train"
    missing = [n for n in dict.fromkeys(needed[flags.mode])
               if not getattr(flags, n)]
    if missing:
        raise UsageError(f"{asked} needs {', '.join('--' + n for n in missing)}")
    if flags.strategy == "tpu" and not flags.tpu:
        raise UsageError("--strategy=tpu needs --tpu")


def _run(flags: argparse.Namespace) -> None:
    """Resolves the config, then runs the mode on it."""
    _check_flags(flags)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # Imported only now so that --help and flag errors stay instant.
    from efficientdet_tf.training import runner
    from efficientdet_tf.training.strategy import make_strategy
    from efficientdet_tf.training.trainer import TrainOptions

    config = runner.resolve_config(flags.model_name, flags.hparams,
                                   {"num_epochs": flags.num_epochs})
    fold = _start_fold(flags, config) if flags.fold is not None else None
    eval_options = None
    if flags.validation_file_pattern or fold:
        eval_options = runner.EvalOptions(
            flags.validation_file_pattern or flags.training_file_pattern,
            flags.val_json_file, flags.eval_batch_size, flags.eval_samples,
            flags.eval_timeout, fold)
    if flags.mode == "eval":
        runner.run_eval(config, flags.model_dir, eval_options)
        return
    options = TrainOptions(
        model_dir=flags.model_dir, training_file_pattern=flags.training_file_pattern,
        train_batch_size=flags.train_batch_size,
        num_examples_per_epoch=flags.num_examples_per_epoch, ckpt=flags.ckpt,
        save_checkpoints_steps=flags.save_checkpoints_steps,
        keep_checkpoint_max=flags.keep_checkpoint_max, seed=flags.seed,
        deterministic=flags.deterministic, log_every_steps=flags.log_every_steps,
        fold=fold)
    strategy = make_strategy(flags.strategy, flags.tpu)
    if flags.mode == "train":
        runner.run_train(config, options, strategy,
                         eval_options if flags.eval_after_train else None)
    else:
        runner.run_train_and_eval(config, options, eval_options, strategy)


def _start_fold(flags: argparse.Namespace, config: Config) -> Fold:
    """Splits the training records, records the split in model_dir (or
    checks it against the one there) and says what each side holds."""
    from efficientdet_tf.datasets import kfold
    from efficientdet_tf.training import trainer_state

    # A model_dir of another network is refused before folds.json goes in.
    trainer_state.prepare_model_dir(flags.model_dir, config, write=False)
    fold = kfold.held_out_fold(
        flags.training_file_pattern, config, flags.fold, flags.num_folds,
        0 if flags.fold_seed is None else flags.fold_seed)
    print(fold.summary(kfold.record_fold(fold, flags.model_dir)), flush=True)
    return fold


def main(argv: Sequence[str] | None = None) -> int:
    """Trains and / or evaluates as the flags say; returns the exit status."""
    return run(build_parser(), _run, argv, interrupted=INTERRUPTED)
