"""Summarise TFRecord files and draw samples with their boxes.

  python dataset/inspect_tfrecord.py --file_pattern='tfrecord/train-*.tfrecord' \\
      --output_dir=/tmp/samples --num_samples=8

Prints the number of images (and how many have no boxes), boxes per class
(label id and text), boxes per image, image sizes, invalid boxes, and the
feature keys of the first record; writes the first --num_samples images with
their boxes as PNGs. Records are decoded as the training input pipeline
decodes them.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from efficientdet_tf.datasets import cli  # noqa: E402

PROG = "inspect_tfrecord.py"


def build_parser() -> cli.Parser:
    parser = cli.Parser(__doc__, prog=PROG)
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


def main(argv: Sequence[str] | None = None) -> str:
    flags = build_parser().parse_args(argv)
    from efficientdet_tf.datasets.record_inspect import inspect_records
    return inspect_records(flags.file_pattern, flags.output_dir,
                           flags.num_samples, flags.max_records).summary()


if __name__ == "__main__":
    sys.exit(cli.run(main, prog=PROG))
