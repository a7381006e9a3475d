"""What every command shares: its parser, its flag types and its exit policy.

The exit policy, the same for every CLI:

  0    done.
  1    an error the user can fix: any :class:`EfficientDetError` (the
       library's own, its message names the file and the fix), an
       ``OSError`` (a path that does not exist, a full disk) or a TensorFlow
       op error (a file it cannot read, memory it cannot get). One line on
       stderr: ``<prog>: error: <message>``.
  2    a usage error: an unknown or missing flag, a bad value, or flags that
       do not go together (:class:`UsageError`). One line, ending in
       ``(see --help)``.
  130  interrupted (Ctrl-C). One line saying what was kept.

Anything else escapes with its traceback: it is a bug in the library, and a
one-line message would hide where it happened.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn, Sequence

from efficientdet_tf.errors import EfficientDetError

Command = Callable[[argparse.Namespace], None]


class UsageError(EfficientDetError):
    """Flags that parse one by one but do not go together (``--mode=eval``
    without ``--validation_file_pattern``). Reported like argparse's own
    errors, with exit status 2, because the fix is in the command line."""


class Parser(argparse.ArgumentParser):
    """Reports a usage error as one line, and prints the description as
    written, so the examples in a command's docstring keep their layout."""

    def __init__(self, prog: str, description: str | None) -> None:
        super().__init__(prog=prog, description=description,
                         allow_abbrev=False,
                         formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """A flag type for counts and sizes, so that 0 is refused while parsing
    instead of failing deep in a run."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def boolean(text: str) -> bool:
    """absl-style booleans, so automl command lines (``--flag=True``) work."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def run(parser: Parser, command: Command,
        argv: Sequence[str] | None = None, interrupted: str = "") -> int:
    """Parses ``argv`` with ``parser``, runs ``command`` on the flags and
    returns the exit status the module docstring's policy gives.

    ``argv`` None means the process's own command line; errors then name the
    command the user typed (``main.py``, ``efficientdet-train``). Called in
    process with ``argv``, they keep ``parser.prog``, since ``sys.argv[0]``
    is then the caller's. ``interrupted`` says what a Ctrl-C left behind; it
    is formatted with the flags, so it can name e.g. ``{model_dir}``.
    """
    if argv is None:
        parser.prog = os.path.basename(sys.argv[0])
    flags = parser.parse_args(argv)
    # Before the command imports TensorFlow: its C++ start-up chatter would
    # bury the command's own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        command(flags)
    except UsageError as err:
        parser.error(str(err))
    except KeyboardInterrupt:
        kept = interrupted.format(**vars(flags))
        print(f"{parser.prog}: interrupted{'; ' + kept if kept else ''}",
              file=sys.stderr)
        return 130
    except Exception as err:  # bugs are re-raised below
        message = _user_message(err)
        if message is None:
            raise
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
    return 0


def _user_message(err: Exception) -> str | None:
    """``err`` as one line if a person can act on it, None if it is a bug.

    A TensorFlow op error's first line is its message; the rest names graph
    nodes. TensorFlow is looked up rather than imported: when it is not
    loaded no op error can have been raised, and importing it would cost
    the dataset tools seconds.
    """
    if isinstance(err, (EfficientDetError, OSError)):
        text = str(err)
    else:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(err, tf.errors.OpError):
            return None
        text = err.message.partition("\n")[0]
    return " ".join(text.split())
