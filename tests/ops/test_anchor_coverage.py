"""Best-anchor IoU against hand computations and against brute force.

Hand cases use the tiny config (tests/conftest.py): image 16 high x 32 wide,
levels 3-4, two octave scales, ratios [1.0, (1.4, 0.7)], anchor_scale 2.
Level 3 (stride 8, centres y 4, 12 and x 4, 12, 20, 28) has anchors
a=0: 16x16, a=1: 22.4 wide x 11.2 tall, a=2: 16*sqrt2 square, a=3: 31.68 x
15.84; level 4 (stride 16, centres y 8 and x 8, 24) the same times two.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.ops.anchor_coverage import best_anchor_iou, input_scale_boxes
from efficientdet_tf.ops.anchors import anchor_boxes, box_iou, level_anchors
from tests.conftest import tiny_config


def box(center_y, center_x, height, width):
    """yxyx ``[..., 4]`` from centres and sizes (numbers or arrays)."""
    return np.stack([center_y - height / 2, center_x - width / 2,
                     center_y + height / 2, center_x + width / 2], axis=-1)


@pytest.mark.parametrize("center, size, level, anchor", [
    ((12, 20), (16 * math.sqrt(2), 16 * math.sqrt(2)), 3, 2),
    ((4, 4), (11.2, 22.4), 3, 1),
    ((8, 24), (22.4, 44.8), 4, 1),
    ((8, 8), (32 * math.sqrt(2) * 0.7, 32 * math.sqrt(2) * 1.4), 4, 3),
])
def test_box_equal_to_an_anchor(center, size, level, anchor):
    best = best_anchor_iou(box(*center, *size)[None], tiny_config())
    np.testing.assert_allclose(best.iou, [1.0], rtol=1e-6)
    assert best.level.tolist() == [level] and best.anchor.tolist() == [anchor]


def test_box_half_a_stride_from_an_anchor_centre():
    # A 16x16 box centred at x=8, halfway between the level-3 centres 4 and
    # 12: with the 16x16 anchor it overlaps 16 x 12 = 192, union 320 -> 0.6.
    # The other shapes overlap less: 22.4x11.2 -> 170.24/336.64 = 0.506,
    # 31.68x15.84 -> 0.502, 22.6 square -> 0.468, level 4 -> 0.25 at most.
    best = best_anchor_iou(box(4, 8, 16, 16)[None], tiny_config())
    np.testing.assert_allclose(best.iou, [0.6], rtol=1e-6)
    assert best.level.tolist() == [3] and best.anchor.tolist() == [0]


def test_boxes_without_area_get_zero():
    boxes = np.array([[4, 4, 4, 20], [4, 4, 12, 4], [12, 12, 4, 4],
                      [0, 0, 0, 0]], np.float64)
    best = best_anchor_iou(boxes, tiny_config())
    assert best.iou.tolist() == [0.0] * 4
    assert best.level.tolist() == [3] * 4 and best.anchor.tolist() == [0] * 4


def _random_boxes(image_size, count, seed):
    """Boxes of 2 px to 1.5 images (log-uniform sides, any aspect), centred
    anywhere in the image or a little outside it."""
    rng = np.random.default_rng(seed)
    height, width = image_size
    sides = np.exp(rng.uniform(np.log(2), np.log(1.5 * max(image_size)),
                               (count, 2)))
    centres = rng.uniform(-0.1, 1.1, (count, 2)) * [height, width]
    return box(centres[:, 0], centres[:, 1], sides[:, 0], sides[:, 1])


@pytest.mark.parametrize("model, overrides", [
    ("efficientdet-d0", {"image_size": 256}),
    ("efficientdet-lite0", None),  # 320 px: level 7 is 3x3, stride 106.7
    ("efficientdet-d0", {"image_size": [384, 640]}),
])
def test_equals_the_brute_force_maximum(model, overrides):
    config = get_config(model, overrides)
    boxes = _random_boxes(config.image_size, 200, seed=0)
    anchors = tf.constant(anchor_boxes(config)[None], tf.float64)
    iou = np.concatenate([box_iou(tf.constant(chunk[:, None]), anchors).numpy()
                          for chunk in np.array_split(boxes, 4)])  # [200, N]
    # Best IoU per box and anchor shape (level, a) over all locations.
    per_level = np.split(iou, np.cumsum([level.size // 4 for level in
                                         level_anchors(config)])[:-1], axis=1)
    num_anchors = level_anchors(config)[0].shape[2]
    per_shape = np.concatenate([
        level.reshape(len(boxes), -1, num_anchors).max(axis=1)
        for level in per_level], axis=1)
    assert iou.max(axis=1).min() > 0  # every box overlaps some anchor

    best = best_anchor_iou(boxes, config)
    # Not bit-exact: float32 corners make the anchors of one shape differ in
    # size by an ulp, so the nearest centre may miss the best by ~1e-7
    # relative (below the labeler's own float32 IoU error). Shapes of one
    # area (ratios 2 and 1/2) tie, up to that rounding, on a box inside
    # both, so the level and anchor are checked by the IoU they reach.
    np.testing.assert_allclose(best.iou, iou.max(axis=1), rtol=1e-6, atol=0)
    named = per_shape[np.arange(len(boxes)),
                      (best.level - config.min_level) * num_anchors + best.anchor]
    np.testing.assert_allclose(named, iou.max(axis=1), rtol=1e-6, atol=0)


def test_input_scale_boxes_by_hand():
    # Network 384 high x 640 wide. A 480x640 image scales by
    # min(384/480, 640/640) = 0.8; a 300x300 one by min(1.28, 2.13) = 1.28.
    normalised = np.array([[0.5, 0.25, 1.0, 0.75], [0.1, 0.2, 0.3, 0.4]])
    pixels = input_scale_boxes(normalised, np.array([[480, 640], [300, 300]]),
                               (384, 640))
    np.testing.assert_allclose(pixels, [[192, 128, 384, 384],
                                        [38.4, 76.8, 115.2, 153.6]], rtol=1e-6)
