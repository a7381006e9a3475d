"""``efficientdet-convert-voc`` run from a clone (see ``--help``).

The command is :mod:`efficientdet_tf.cli.create_pascal_tfrecord`; this script only runs it.
"""
import sys

from efficientdet_tf.cli.create_pascal_tfrecord import main

if __name__ == "__main__":
    sys.exit(main())
