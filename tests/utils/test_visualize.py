"""Box drawing: colours per class, score filtering, captions."""
from __future__ import annotations

import numpy as np

from efficientdet_tf.utils.visualize import class_color, class_name, draw_detections


def test_draws_box_outline_in_class_colour():
    image = np.zeros((60, 80, 3), np.uint8)
    out = draw_detections(image, [(20, 10, 50, 70)], [2], [0.9],
                          label_map={2: "square"}, line_width=1)
    assert out.shape == image.shape and out is not image
    assert tuple(out[50, 40]) == class_color(2)   # bottom edge
    assert tuple(out[35, 70]) == class_color(2)   # right edge
    assert tuple(out[35, 40]) == (0, 0, 0)        # inside untouched
    assert image.sum() == 0                       # input not modified


def test_min_score_and_max_boxes():
    image = np.zeros((40, 40, 3), np.uint8)
    boxes = [(5, 5, 15, 15), (20, 20, 35, 35)]
    none = draw_detections(image, boxes, [1, 1], [0.1, 0.2], min_score=0.5)
    assert none.sum() == 0
    one = draw_detections(image, boxes, [1, 3], [0.6, 0.9], max_boxes=1,
                          line_width=1)
    assert tuple(one[35, 28]) == class_color(3)
    assert tuple(one[15, 10]) == (0, 0, 0)


def test_ground_truth_without_scores_and_names():
    out = draw_detections(np.zeros((30, 30, 3), np.uint8), [(5, 5, 25, 25)], [7])
    assert out.sum() > 0
    assert class_name(7, None) == "7" and class_name(1, {1: "cat"}) == "cat"
    assert class_color(1) != class_color(2)


def test_boxes_far_outside_or_not_finite_are_clipped_or_skipped():
    """An untrained model's decoded boxes reach 1e30 and inf; drawing them
    into the eval summaries crashed Pillow (a bug: training stopped at its
    first evaluation)."""
    image = np.zeros((64, 64, 3), np.uint8)
    boxes = [(1e30, 1e30, 2e30, 2e30), (np.inf, 0, 1, 1), (np.nan, 0, 9, 9),
             (-1e12, -1e12, 1e12, 1e12), (10, 10, 20, 20)]
    out = draw_detections(image, boxes, [1, 1, 1, 2, 3], [0.9] * 5,
                          line_width=1)
    assert out[10, 15].any() and out[15, 10].any()  # the ordinary box
    assert out[63, 30].any() and out[30, 63].any()  # the huge one, clipped
    assert out.shape == image.shape
