"""``efficientdet-voc-to-coco`` run from a clone (see ``--help``).

The command is :mod:`efficientdet_tf.cli.voc_to_coco`; this script only runs it.
"""
import sys

from efficientdet_tf.cli.voc_to_coco import main

if __name__ == "__main__":
    sys.exit(main())
