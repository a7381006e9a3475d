"""Convert a COCO instances JSON and its image folder to sharded TFRecords.

  python dataset/create_coco_tfrecord.py --image_dir=val2017 \\
      --object_annotations_file=annotations/instances_val2017.json \\
      --output_file_prefix=tfrecord/val --num_shards=8

Writes {prefix}-00000-of-00008.tfrecord ... (automl's keys; labels are the
COCO category ids, text the category names). Boxes past the image edge are
clipped, zero-area/inverted boxes skipped, unreadable images skipped, non-RGB
or non-JPEG images re-encoded as RGB JPEG, EXIF rotation applied; the summary
counts each. An unknown category id is an error naming the image and object.
Shards appear only when the whole conversion succeeded.

Exports of annotation tools work as they are: a category 0 that no object
uses (labelme2coco's _background_, Roboflow's project entry) is dropped and
reported; file_name may carry the export's folders (images/x.jpg) whether
--image_dir is the export folder or the image folder; CVAT's rotated boxes
become the upright box around them. Categories numbered from 0 and used
(Label Studio) need --category_id_offset=1.
Installed with pip, this is the ``efficientdet-convert-coco`` command.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from efficientdet_tf.cli.command import Parser, run
from efficientdet_tf.cli import dataset_flags

PROG = "create_coco_tfrecord.py"


def build_parser() -> Parser:
    parser = Parser(PROG, __doc__)
    parser.add_argument("--image_dir", required=True,
                        help="folder holding the images named by file_name")
    parser.add_argument("--object_annotations_file", required=True,
                        help="COCO instances JSON (images, annotations, "
                        "categories)")
    parser.add_argument("--output_file_prefix", required=True,
                        help="path prefix of the shards, e.g. tfrecord/train")
    parser.add_argument("--include_masks", action="store_true",
                        help="also store each object's mask (from polygons or "
                        "RLE) as a PNG in image/object/mask")
    parser.add_argument(
        "--category_id_offset", type=int, default=0,
        help="add this to every category id, for exports that number their "
        "categories from 0 (Label Studio): 1 makes them 1..N, as class ids "
        "must be (0 is the background). The JSON then no longer matches the "
        "records' labels: evaluate against ground truth from the records "
        "(default %(default)s)")
    dataset_flags.add_output_flags(parser)
    dataset_flags.add_policy_flags(parser)
    return parser


def _convert(flags: argparse.Namespace) -> None:
    from efficientdet_tf.datasets.coco import convert_coco
    print(convert_coco(flags.image_dir, flags.object_annotations_file,
                       flags.output_file_prefix, flags.num_shards,
                       flags.include_masks, dataset_flags.options_from(flags),
                       flags.num_threads,
                       category_id_offset=flags.category_id_offset).summary())


def main(argv: Sequence[str] | None = None) -> int:
    """Converts as the flags say and prints the summary; returns the exit
    status."""
    return run(build_parser(), _convert, argv,
               interrupted=dataset_flags.NOTHING_KEPT)
