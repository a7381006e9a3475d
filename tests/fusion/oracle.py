"""A perfect "detector" for fusion tests: it finds the filled rectangles
drawn by :func:`scene` in whatever pixels it is given (a crop, a flip, a
rescaled or padded copy), so the expected detections of any view or tile
are known exactly and the fusion's geometry can be checked to the pixel.

Object ``i`` is painted in a colour of its own, ``(OBJECT_RED + i, 60 *
class, 255)``: the blue 255 appears nowhere else (the background is black,
padding is the mean colour), and a resize blends only an object's edge
pixels, which then match no object colour.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from efficientdet_tf.config import get_config
from efficientdet_tf.fusion.merge import Detections
from efficientdet_tf.serving.predictors import LoadedModel

OBJECT_RED = 10


class Box(NamedTuple):
    """A drawn object: yxyx pixel box (end exclusive) and class."""
    ymin: int
    xmin: int
    ymax: int
    xmax: int
    label: int


def scene(height: int, width: int, objects: Sequence[Box]) -> np.ndarray:
    pixels = np.zeros((height, width, 3), np.uint8)
    for i, (ymin, xmin, ymax, xmax, label) in enumerate(objects):
        pixels[ymin:ymax, xmin:xmax] = (OBJECT_RED + i, 60 * label, 255)
    return pixels


def detect(pixels: np.ndarray, score: float = 0.9) -> Detections:
    """Every object colour's bounding box in ``pixels``."""
    painted = pixels[..., 2] == 255
    boxes, classes = [], []
    for red, green in sorted({(int(r), int(g)) for r, g in
                              pixels[painted][:, :2]}):
        ys, xs = np.nonzero(painted & (pixels[..., 0] == red)
                            & (pixels[..., 1] == green))
        if green % 60 or not green:
            continue  # a blended edge colour, not an object's
        boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
        classes.append(green // 60)
    if not boxes:
        return Detections.empty()
    return Detections(np.array(boxes, np.float32),
                      np.full(len(boxes), score, np.float32),
                      np.array(classes, np.int32))


def oracle_model(path: str = "oracle", score: float = 0.9,
                 calls: list | None = None) -> LoadedModel:
    """:func:`detect` as a model; ``calls`` collects the input shapes."""
    config = get_config("efficientdet-d0", {"num_classes": 3,
                                             "image_size": 128})

    def run(images: np.ndarray) -> list[Detections]:
        if calls is not None:
            calls.extend(pixels.shape for pixels in images)
        return [detect(pixels, score) for pixels in images]
    return LoadedModel(path, run, config, {})


def as_boxes(found: Detections) -> list[Box]:
    """Detections as sorted integer-rounded :class:`Box` es."""
    return sorted(Box(*(int(round(float(v))) for v in box), int(label))
                  for box, label in zip(found.boxes, found.classes))
