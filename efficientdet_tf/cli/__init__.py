"""The command line tools, one module each.

Every module holds one command's flags (``build_parser``) and its ``main``,
which parses them, calls library functions and exits through
:func:`efficientdet_tf.cli.command.run`, so all commands share one exit
policy. ``pip install`` makes each ``main`` a command (setup.py's
``console_scripts``: ``efficientdet-train``, ``efficientdet-inspect``, ...);
the scripts of a clone (``main.py``, ``model_inspect.py``, ``dataset/*.py``)
are thin wrappers around the same functions. Nothing here imports
TensorFlow until a command runs, so ``--help`` and flag errors stay instant.
"""
