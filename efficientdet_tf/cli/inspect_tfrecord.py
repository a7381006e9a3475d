"""Summarise TFRecord files and draw samples with their boxes.

  python dataset/inspect_tfrecord.py --file_pattern='tfrecord/train-*.tfrecord' \\
      --output_dir=/tmp/samples --num_samples=8

Prints the number of images (and how many have no boxes), boxes per class
(label id and text), boxes per image, image sizes, invalid boxes, and the
feature keys of the first record; writes the first --num_samples images with
their boxes as PNGs. Records are decoded as the training input pipeline
decodes them.
Installed with pip, this is the ``efficientdet-inspect-records`` command.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from efficientdet_tf.cli.command import Parser, run

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
    return parser


def _inspect(flags: argparse.Namespace) -> None:
    from efficientdet_tf.datasets.record_inspect import inspect_records
    print(inspect_records(flags.file_pattern, flags.output_dir,
                          flags.num_samples, flags.max_records).summary())


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the records' summary (and draws samples); returns the exit
    status."""
    return run(build_parser(), _inspect, argv)
