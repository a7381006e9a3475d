"""Split TFRecords into K folds stratified by class, for cross-validation.

  python dataset/split_kfold.py --input_file_pattern='tfrecord/train-*.tfrecord' \\
      --num_folds=5 --output_dir=folds

Writes folds/fold-0-of-5.tfrecord ... fold-4-of-5.tfrecord (each record
copied byte for byte into the file of its fold; all records of one source
id go to one fold) and folds/folds.json (the settings, each fold's images
and boxes per class, the source_id -> fold map), and prints the table.
Every class is dealt out evenly over the folds, rare ones first
(efficientdet_tf.datasets.kfold). Pass the --hparams you train with:
regenerate_source_id changes what a source id is.

Fold k is then validated on folds/fold-k-of-5.tfrecord after training on
the other four files (a comma-separated --training_file_pattern). main.py
--fold=k --num_folds=5 makes the same split without files, from the same
records and with --fold_seed equal to --seed here.
Installed with pip, this is the ``efficientdet-split-kfold`` command.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from efficientdet_tf.cli import dataset_flags
from efficientdet_tf.cli.command import Parser, UsageError, positive_int, run

PROG = "split_kfold.py"


def build_parser() -> Parser:
    parser = Parser(PROG, __doc__)
    parser.add_argument("--input_file_pattern", required=True,
                        help="the TFRecords to split: a glob (quote it) or "
                        "several joined by commas")
    parser.add_argument("--num_folds", type=positive_int, required=True,
                        help="number of folds, at least 2")
    parser.add_argument("--output_dir", required=True,
                        help="folder for fold-k-of-K.tfrecord and folds.json "
                        "(created if missing)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split; main.py's --fold_seed of the "
                        "same value splits the same way (default %(default)s)")
    dataset_flags.add_config_flags(parser)
    return parser


def _split(flags: argparse.Namespace) -> None:
    if flags.num_folds < 2:
        raise UsageError(f"--num_folds must be at least 2, got {flags.num_folds}")
    # Imported only now so that --help and flag errors stay instant.
    from efficientdet_tf.datasets import kfold
    from efficientdet_tf.training.runner import resolve_config

    config = resolve_config(flags.model_name, flags.hparams, {})
    pattern, num_folds = flags.input_file_pattern, flags.num_folds
    images = kfold.scan_records(pattern, config)
    assignment = kfold.assign_folds(images, num_folds, flags.seed)
    report = kfold.fold_report(images, assignment, num_folds)
    paths = kfold.write_fold_files(pattern, config, assignment, num_folds,
                                   flags.output_dir)
    json_path = kfold.write_json(
        os.path.join(flags.output_dir, kfold.FOLDS_FILE),
        kfold.folds_json(assignment, report, flags.seed, file_pattern=pattern,
                         files=[os.path.basename(p) for p in paths]))
    print(kfold.format_report(report, config.label_map))
    print("outputs:\n" + "\n".join(f"  {p}" for p in [*paths, json_path]))


def main(argv: Sequence[str] | None = None) -> int:
    """Splits as the flags say and prints the table; returns the exit
    status."""
    return run(build_parser(), _split, argv,
               interrupted=dataset_flags.NOTHING_KEPT)
