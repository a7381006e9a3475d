"""The base class of every error the library raises for a person to fix.

Each part of the library keeps its own error class next to the code that
raises it (``ConfigError`` in config, ``ConversionError`` in the dataset
converters, ...); all of them derive from :class:`EfficientDetError` so that a
caller, and every command line tool, can tell "the input needs fixing" from
"the library has a bug" with one ``except`` clause. Nothing here imports
TensorFlow, so the CLIs can catch the family before they import it.
"""
from __future__ import annotations


class EfficientDetError(Exception):
    """A problem with what the user gave: a flag, a setting, a file, a record.

    The message is written for a person, because the CLIs print it as the
    whole of their answer (one line, no traceback): it names the file,
    record, object or setting at fault and says what to change, e.g.
    ``annotations/0007.xml: object 3 'bicycle' is not in label_map (known:
    person, car, bus)``. Any other exception that escapes the library is a
    bug and keeps its traceback.
    """
