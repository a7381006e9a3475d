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
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from efficientdet_tf.datasets import cli  # noqa: E402

PROG = "create_coco_tfrecord.py"


def build_parser() -> cli.Parser:
    parser = cli.Parser(__doc__, prog=PROG)
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
    cli.add_output_flags(parser)
    cli.add_policy_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    flags = build_parser().parse_args(argv)
    from efficientdet_tf.datasets.coco import convert_coco
    return convert_coco(flags.image_dir, flags.object_annotations_file,
                        flags.output_file_prefix, flags.num_shards,
                        flags.include_masks, cli.options_from(flags),
                        flags.num_threads,
                        category_id_offset=flags.category_id_offset).summary()


if __name__ == "__main__":
    sys.exit(cli.run(main, prog=PROG))
