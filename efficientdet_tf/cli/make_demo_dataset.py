"""Generate the demo detection dataset: coloured shapes on textured backgrounds.

  python dataset/make_demo_dataset.py --output_dir=/tmp/shapes
  python dataset/make_demo_dataset.py --output_dir=/tmp/parts --scene=parts

Scene "shapes" (the demo): three classes (1 circle, 2 square, 3 triangle),
1-4 large objects per image. Scene "parts": 1 bar, 2 pin, 3 dot, 1-6 small
and elongated objects per image (a second dataset to fine-tune on). Writes
{output_dir}/label_map.yaml, and for each of train/ and val/: images/*.jpg,
annotations.json (COCO) and xml/*.xml (LabelImg), so both converters can be
tried on it:

  python dataset/create_coco_tfrecord.py --image_dir=/tmp/shapes/train/images \\
      --object_annotations_file=/tmp/shapes/train/annotations.json \\
      --output_file_prefix=/tmp/shapes/tfrecord/train --num_shards=2
  python dataset/create_pascal_tfrecord.py --annotations_dir=/tmp/shapes/val/xml \\
      --image_dir=/tmp/shapes/val/images --output_path=/tmp/shapes/tfrecord/val \\
      --label_map_json_path=/tmp/shapes/label_map.yaml

The same --seed gives byte-identical files.
Installed with pip, this is the ``efficientdet-demo-data`` command.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from efficientdet_tf.cli.command import Parser, run
from efficientdet_tf.datasets import demo

PROG = "make_demo_dataset.py"


def build_parser() -> Parser:
    parser = Parser(PROG, __doc__)
    parser.add_argument("--output_dir", required=True,
                        help="folder to write into (created if missing)")
    parser.add_argument("--num_train", type=int, default=320,
                        help="training images (default %(default)s)")
    parser.add_argument("--num_val", type=int, default=64,
                        help="validation images, 0 for none (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed gives the same files "
                        "(default %(default)s)")
    parser.add_argument("--image_size", type=int, default=256,
                        help="side of the square images in pixels, at least 64; "
                        "object sizes (30-110 px at 256) scale with it "
                        "(default %(default)s)")
    parser.add_argument("--scene", default="shapes", choices=tuple(demo.SCENES),
                        help="what to draw (default %(default)s)")
    return parser


def _generate(flags: argparse.Namespace) -> None:
    print(demo.make_demo_dataset(flags.output_dir, flags.num_train, flags.num_val,
                            flags.seed, flags.image_size, flags.scene))


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the dataset and prints what was written; returns the exit
    status."""
    return run(build_parser(), _generate, argv)
