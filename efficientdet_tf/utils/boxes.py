"""Box corners <-> COCO's ``[x, y, width, height]``.

The package keeps boxes as corners, in two orders: ``(ymin, xmin, ymax,
xmax)`` in the model, the records and the inference outputs, ``(xmin, ymin,
xmax, ymax)`` in the dataset converters (the order of VOC XML and Pillow).
COCO JSON (ground truth and results) wants ``[x, y, width, height]``.

The conversions take and give named corners, so a caller unpacks its own
order and no one reorders columns by index. They are plain arithmetic, not
tensor code (every caller builds JSON one box at a time, outside any graph),
which keeps Python ints ints (the demo's JSON stays integral) and works
elementwise on NumPy columns alike; hence here and not in ``ops/``.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

N = TypeVar("N")  # a number, or a NumPy array of them


def coco_bbox(xmin: N, ymin: N, xmax: N, ymax: N) -> list[N]:
    """COCO's ``[x, y, width, height]`` of the box with these corners."""
    return [xmin, ymin, xmax - xmin, ymax - ymin]


def coco_corners(bbox: Sequence[N]) -> tuple[N, N, N, N]:
    """``(xmin, ymin, xmax, ymax)`` of COCO's ``[x, y, width, height]``;
    anything but four values raises ``ValueError``."""
    x, y, width, height = bbox
    return x, y, x + width, y + height
