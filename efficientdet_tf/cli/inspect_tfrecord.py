"""Summarise TFRecord files and draw samples with their boxes.

  python dataset/inspect_tfrecord.py --file_pattern='tfrecord/train-*.tfrecord' \\
      --output_dir=/tmp/samples --num_samples=8

Prints the number of images (and how many have no boxes), boxes per class
(label id and text), boxes per image, image sizes, invalid boxes, and the
feature keys of the first record; writes the first --num_samples images with
their boxes as PNGs. Records are decoded as the training input pipeline
decodes them.

With --augment it draws what training feeds the network instead: the first
--num_samples images of a seeded training pipeline under the config
(--model_name, --hparams, as main.py resolves them), augmented and
letterboxed, with their boxes, tiled into <output_dir>/augmented.png:

  python dataset/inspect_tfrecord.py --file_pattern='tfrecord/train-*.tfrecord' \\
      --augment --hparams=my.yaml --num_samples=16 --output_dir=/tmp/samples
Installed with pip, this is the ``efficientdet-inspect-records`` command.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from efficientdet_tf.cli import dataset_flags
from efficientdet_tf.cli.command import Parser, UsageError, run

PROG = "inspect_tfrecord.py"


def build_parser() -> Parser:
    parser = Parser(PROG, __doc__)
    parser.add_argument("--file_pattern", required=True,
                        help="glob of record files (quote it), or several "
                        "globs joined by commas")
    parser.add_argument("--output_dir", default=None,
                        help="folder for the sample PNGs (none drawn without it)")
    parser.add_argument("--num_samples", type=int, default=4,
                        help="how many of the first records to draw "
                        "(default %(default)s)")
    parser.add_argument("--max_records", type=int, default=0,
                        help="stop after this many records, 0 for all "
                        "(default %(default)s)")
    augment = parser.add_argument_group("augmented samples")
    augment.add_argument("--augment", action="store_true",
                         help="draw training inputs (augmented, letterboxed) "
                         "into one contact sheet instead of the raw images")
    dataset_flags.add_config_flags(augment)
    augment.add_argument("--seed", type=int, default=0,
                         help="seed of the augmentation draws; another seed, "
                         "other samples (default %(default)s)")
    return parser


def _inspect(flags: argparse.Namespace) -> None:
    from efficientdet_tf.datasets.record_inspect import inspect_records
    if flags.augment and not flags.output_dir:
        raise UsageError("--augment writes a contact sheet: give --output_dir")
    if flags.num_samples < 1 and flags.augment:
        raise UsageError("--augment needs --num_samples >= 1")
    print(inspect_records(flags.file_pattern,
                          None if flags.augment else flags.output_dir,
                          flags.num_samples, flags.max_records).summary())
    if flags.augment:
        _draw_augmented(flags)


def _draw_augmented(flags: argparse.Namespace) -> None:
    from efficientdet_tf.datasets import augment_preview
    from efficientdet_tf.training.runner import resolve_config
    config = resolve_config(flags.model_name, flags.hparams, {})
    path = augment_preview.write_contact_sheet(
        flags.file_pattern, config,
        os.path.join(flags.output_dir, "augmented.png"), flags.num_samples,
        flags.seed)
    height, width = config.image_size
    print(f"augmented training samples ({flags.num_samples} at {height}x"
          f"{width}; {augment_preview.describe_augmentation(config)}): {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the records' summary (and draws samples); returns the exit
    status."""
    return run(build_parser(), _inspect, argv)
