"""Write COCO-format ground truth for Pascal VOC or LabelImg XML annotations.

  python dataset/voc_to_coco.py --annotations_dir=labels \\
      --label_map_json_path=label_map.yaml --output_json_path=val.json

For evaluation with pycocotools when you do not need TFRecords. Image ids are
1..N in the order the files are listed (sorted XML names, or the set file),
the same ids create_pascal_tfrecord.py gives; category ids are the label map's.
No image is decoded: sizes come from the XML (or the image header when the
XML has none). create_pascal_tfrecord.py writes this file too, and its copy
also reflects images it had to skip.
Installed with pip, this is the ``efficientdet-voc-to-coco`` command.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from efficientdet_tf.cli.command import Parser, run
from efficientdet_tf.cli import dataset_flags

PROG = "voc_to_coco.py"


def build_parser() -> Parser:
    parser = Parser(PROG, __doc__)
    parser.add_argument("--output_json_path", required=True,
                        help="the COCO JSON to write")
    dataset_flags.add_voc_flags(parser)
    dataset_flags.add_policy_flags(parser)
    return parser


def _write(flags: argparse.Namespace) -> None:
    from efficientdet_tf.datasets.voc import write_voc_coco_json
    print(write_voc_coco_json(dataset_flags.voc_source_from(flags),
                              flags.output_json_path,
                              flags.label_map_json_path,
                              dataset_flags.options_from(flags)).summary())


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the COCO JSON and prints the summary; returns the exit status."""
    return run(build_parser(), _write, argv,
               interrupted=dataset_flags.NOTHING_KEPT)
