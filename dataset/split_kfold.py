"""``efficientdet-split-kfold`` run from a clone (see ``--help``).

The command is :mod:`efficientdet_tf.cli.split_kfold`; this script only runs it.
"""
import sys

from efficientdet_tf.cli.split_kfold import main

if __name__ == "__main__":
    sys.exit(main())
