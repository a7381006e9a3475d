"""Write COCO-format ground truth for Pascal VOC or LabelImg XML annotations.

  python dataset/voc_to_coco.py --annotations_dir=labels \\
      --label_map_json_path=label_map.yaml --output_json_path=val.json

For evaluation with pycocotools when you do not need TFRecords. Image ids are
1..N in the order the files are listed (sorted XML names, or the set file),
the same ids create_pascal_tfrecord.py gives; category ids are the label map's.
No image is decoded: sizes come from the XML (or the image header when the
XML has none). create_pascal_tfrecord.py writes this file too, and its copy
also reflects images it had to skip.
"""
from __future__ import annotations

import sys
from typing import Sequence

from efficientdet_tf.datasets import cli

PROG = "voc_to_coco.py"


def build_parser() -> cli.Parser:
    parser = cli.Parser(__doc__, prog=PROG)
    parser.add_argument("--output_json_path", required=True,
                        help="the COCO JSON to write")
    cli.add_voc_flags(parser)
    cli.add_policy_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    parser = build_parser()
    flags = parser.parse_args(argv)
    source = cli.voc_source_from(flags, parser)
    from efficientdet_tf.datasets.voc import write_voc_coco_json
    return write_voc_coco_json(source, flags.output_json_path,
                               flags.label_map_json_path,
                               cli.options_from(flags)).summary()


if __name__ == "__main__":
    sys.exit(cli.run(main, prog=PROG))
