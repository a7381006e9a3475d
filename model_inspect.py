"""Inspect, convert and export EfficientDet models from the command line.

A thin CLI: it parses flags and dispatches ``--runmode`` to a library
function, so everything it does is testable from ``efficientdet_tf``.

  python model_inspect.py --runmode=convert_ckpt --model_name=efficientdet-d0 \\
      --ckpt_path=efficientdet-d0/ --model_dir=/tmp/d0_native
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NamedTuple, NoReturn, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def convert_ckpt(flags: argparse.Namespace) -> None:
    """Official (or native) checkpoint -> native checkpoint + config.yaml."""
    from efficientdet_tf.checkpoint import convert_checkpoint
    prefix, report = convert_checkpoint(flags.model_name, flags.ckpt_path,
                                        flags.model_dir, flags.hparams)
    print(report.summary())
    print(f"wrote {prefix} and {os.path.join(flags.model_dir, 'config.yaml')}")


class Runmode(NamedTuple):
    run: Callable[[argparse.Namespace], None]
    required: tuple[str, ...]  # flags that must be given


RUNMODES: dict[str, Runmode] = {
    "convert_ckpt": Runmode(convert_ckpt, ("ckpt_path", "model_dir")),
}


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="model_inspect.py", description=__doc__,
                     allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runmode", required=True, choices=sorted(RUNMODES),
                        help="what to do; convert_ckpt: load an official "
                        "automl checkpoint (EMA weights) and save it as a "
                        "native checkpoint plus config.yaml in --model_dir")
    parser.add_argument("--model_name", default="efficientdet-d0",
                        help="model preset, efficientdet-d0..d7x or "
                        "efficientdet-lite0..4 (default %(default)s)")
    parser.add_argument("--ckpt_path", help="checkpoint prefix, or a "
                        "directory holding one (e.g. an extracted automl "
                        "archive)")
    parser.add_argument("--model_dir", help="output directory for "
                        "convert_ckpt (created if missing)")
    parser.add_argument("--hparams", default="", help="config overrides: a "
                        "YAML file or 'a=1,b.c=2'; image_size strings are "
                        "automl's WIDTHxHEIGHT")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    flags = parser.parse_args(argv)
    runmode = RUNMODES[flags.runmode]
    absent = [f"--{n}" for n in runmode.required if not getattr(flags, n)]
    if absent:
        parser.error(f"--runmode={flags.runmode} needs {', '.join(absent)}")
    # Imported only now so that --help and flag errors stay instant.
    import tensorflow as tf

    from efficientdet_tf.checkpoint import CheckpointError
    from efficientdet_tf.config import ConfigError
    try:
        runmode.run(flags)
    except (CheckpointError, ConfigError, OSError, tf.errors.OpError) as err:
        print(f"model_inspect.py: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
