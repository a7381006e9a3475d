"""``efficientdet-inspect-records`` run from a clone (see ``--help``).

The command is :mod:`efficientdet_tf.cli.inspect_tfrecord`; this script only runs it.
"""
import sys

from efficientdet_tf.cli.inspect_tfrecord import main

if __name__ == "__main__":
    sys.exit(main())
