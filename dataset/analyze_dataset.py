"""``efficientdet-analyze-dataset`` run from a clone (see ``--help``).

The command is :mod:`efficientdet_tf.cli.analyze_dataset`; this script only
runs it.
"""
import sys

from efficientdet_tf.cli.analyze_dataset import main

if __name__ == "__main__":
    sys.exit(main())
