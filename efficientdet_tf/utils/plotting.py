"""matplotlib as an optional extra: one place that imports it and turns a
figure into a PNG file.

Only matplotlib's object API is used (``Figure``, rendered by Agg when
saved), never pyplot: no global figure state, no display backend switched
under a user's notebook, nothing to close.
"""
from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.utils.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


class PlotsUnavailable(EfficientDetError, RuntimeError):
    """matplotlib is not installed, so no plot can be drawn."""


def require_matplotlib() -> type[Figure]:
    """matplotlib's ``Figure`` class, or :class:`PlotsUnavailable`."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise PlotsUnavailable("plots need matplotlib: pip install "
                               "'efficientdet_tf[plots]'") from error
    return Figure


def render_png(figure: Figure) -> bytes:
    """The figure as PNG bytes at ``DPI`` (Agg renders any ``Figure``)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_png(figure: Figure, path: str | os.PathLike) -> str:
    """Renders ``figure`` to ``path`` atomically; returns the path."""
    atomic_write(path, render_png(figure))
    return os.fspath(path)
