"""Convert Pascal VOC or LabelImg XML annotations to sharded TFRecords.

  # VOC devkit: VOCdevkit/VOC2007/ImageSets/Main/trainval.txt, Annotations/, JPEGImages/
  python dataset/create_pascal_tfrecord.py --data_dir=VOCdevkit --year=VOC2007 \\
      --set=trainval --output_path=tfrecord/pascal --num_shards=4
  # a folder of LabelImg XML files (images beside them, or in --image_dir)
  python dataset/create_pascal_tfrecord.py --annotations_dir=labels \\
      --image_dir=images --output_path=tfrecord/train

Writes {output_path}-00000-of-0000N.tfrecord (automl's keys, with difficult,
truncated and view), {output_path}.json (COCO ground truth for evaluation:
image ids = the records' source_id, category ids = label ids) and, when the
label map is derived from the data, {output_path}.label_map.yaml. Boxes past
the image edge are clipped, zero-area/inverted boxes skipped, unreadable
images skipped, other formats re-encoded as RGB JPEG, EXIF rotation applied;
the summary counts each. A class missing from the label map is an error
naming the file and the object.
Installed with pip, this is the ``efficientdet-convert-voc`` command.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from efficientdet_tf.cli.command import Parser, run
from efficientdet_tf.cli import dataset_flags

PROG = "create_pascal_tfrecord.py"


def build_parser() -> Parser:
    parser = Parser(PROG, __doc__)
    parser.add_argument("--output_path", required=True,
                        help="path prefix of the shards, e.g. tfrecord/pascal")
    parser.add_argument("--output_json_path", default=None,
                        help="where to write the COCO ground truth (default "
                        "{output_path}.json)")
    dataset_flags.add_voc_flags(parser)
    dataset_flags.add_output_flags(parser)
    dataset_flags.add_policy_flags(parser)
    return parser


def _convert(flags: argparse.Namespace) -> None:
    from efficientdet_tf.datasets.voc import convert_pascal
    print(convert_pascal(dataset_flags.voc_source_from(flags),
                         flags.output_path, flags.num_shards,
                         flags.label_map_json_path,
                         dataset_flags.options_from(flags), flags.num_threads,
                         flags.output_json_path).summary())


def main(argv: Sequence[str] | None = None) -> int:
    """Converts as the flags say and prints the summary; returns the exit
    status."""
    return run(build_parser(), _convert, argv,
               interrupted=dataset_flags.NOTHING_KEPT)
