"""How well a config's anchors cover a dataset's boxes.

A ground-truth box trains the network only through the anchors it matches:
with IoU below ``match_threshold`` against every anchor, it gets at most the
one anchor the labeler forces onto it, and objects like it are learnt badly
or not at all. The best-anchor IoU of each box, under the exact anchors
:mod:`~efficientdet_tf.ops.anchors` gives the labeler, is what the dataset
doctor reports and what anchor fitting maximises.

It is computed without the ``[boxes, anchors]`` IoU matrix (49,104 anchors
for D0 at 512): for one anchor shape, the overlap with a box along each axis
only shrinks as the centres move apart, so the best anchor of that shape is
the one centred nearest the box's centre, row and column chosen separately.
That leaves ``levels x A`` candidates per box.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from efficientdet_tf.config import Config
from efficientdet_tf.ops.anchors import level_anchors


class BestAnchor(NamedTuple):
    """Per box ``[N]``: the best IoU with any anchor, the pyramid level of
    that anchor and its index ``a`` at its location (``scale_index *
    len(aspect_ratios) + ratio_index``)."""
    iou: np.ndarray
    level: np.ndarray
    anchor: np.ndarray


def input_scale_boxes(boxes: np.ndarray, image_sizes: np.ndarray,
                      image_size: tuple[int, int]) -> np.ndarray:
    """Normalised yxyx boxes ``[N, 4]`` of images of ``(height, width)``
    ``image_sizes`` ``[N, 2]`` -> yxyx pixels ``[N, 4]`` in the network input,
    as evaluation and export resize: by ``min(H / h, W / w)`` in float32
    (:func:`~efficientdet_tf.ops.geometry.scale_geometry` without jitter)."""
    sizes = np.asarray(image_sizes, np.float32).reshape(-1, 2)
    scale = np.min(np.asarray(image_size, np.float32) / sizes, axis=1)
    pixels = np.asarray(boxes, np.float64).reshape(-1, 4) * np.tile(sizes, 2)
    return pixels * scale[:, None].astype(np.float64)


def best_anchor_iou(boxes: np.ndarray, config: Config) -> BestAnchor:
    """Best-anchor IoU of yxyx pixel boxes ``[N, 4]`` (network-input scale)
    under ``config``'s anchors (``image_size``, levels, ``num_scales``,
    ``aspect_ratios``, ``anchor_scale``). Boxes of no area get IoU 0."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    center_y = (boxes[:, 0] + boxes[:, 2]) / 2
    center_x = (boxes[:, 1] + boxes[:, 3]) / 2
    best = np.zeros(len(boxes))
    best_level = np.full(len(boxes), config.min_level, np.int32)
    best_anchor = np.zeros(len(boxes), np.int32)
    for level, anchors in zip(range(config.min_level, config.max_level + 1),
                              level_anchors(config)):
        rows = _nearest_center(center_y, anchors[:, 0, 0][:, [0, 2]].mean(-1))
        cols = _nearest_center(center_x, anchors[0, :, 0][:, [1, 3]].mean(-1))
        candidates = anchors[rows, cols].astype(np.float64)  # [N, A, 4]
        iou = _iou(boxes[:, None, :], candidates)
        anchor = np.argmax(iou, axis=1)
        level_best = iou[np.arange(len(boxes)), anchor]
        better = level_best > best
        best = np.where(better, level_best, best)
        best_level = np.where(better, level, best_level)
        best_anchor = np.where(better, anchor, best_anchor)
    return BestAnchor(best, best_level, best_anchor)


def _nearest_center(values: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the grid centre (sorted, evenly spaced) nearest each value."""
    if len(centers) == 1:
        return np.zeros(len(values), np.int64)
    index = np.searchsorted(centers, values).clip(1, len(centers) - 1)
    left, right = centers[index - 1], centers[index]
    return np.where(values - left <= right - values, index - 1, index)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of yxyx boxes, broadcasting ``[..., 4]``; 0 where the union is."""
    height = np.clip(np.minimum(a[..., 2], b[..., 2])
                     - np.maximum(a[..., 0], b[..., 0]), 0, None)
    width = np.clip(np.minimum(a[..., 3], b[..., 3])
                    - np.maximum(a[..., 1], b[..., 1]), 0, None)
    intersection = height * width
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(
        a[..., 3] - a[..., 1], 0, None)
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - intersection
    return np.divide(intersection, union, out=np.zeros_like(union),
                     where=union > 0)
