"""Anchors, box coder and labeler against hand computations.

The tiny config used throughout: image 16 (high) x 32 (wide), levels 3..4,
two octave scales, aspect ratios [1.0, (1.4, 0.7)], anchor_scale 2. Level 3 is
a 2x4 grid of stride 8, level 4 a 1x2 grid of stride 16, A = 4 anchors per
location: (2*4 + 1*2) * 4 = 40 anchors, level 4 starting at index 32.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config
from efficientdet_tf.ops import anchors as anchors_lib
from efficientdet_tf.config import get_config

SQRT2 = math.sqrt(2.0)


def box(center_y, center_x, half_h, half_w):
    return [center_y - half_h, center_x - half_w, center_y + half_h, center_x + half_w]


# --- anchors -----------------------------------------------------------------

def test_aspect_ratio_numbers_and_pairs():
    pairs = anchors_lib.aspect_ratio_pairs([1.0, 2.0, 0.5, (1.4, 0.7), [0.7, 1.4]])
    np.testing.assert_allclose(pairs, [(1, 1), (SQRT2, 1 / SQRT2),
                                       (1 / SQRT2, SQRT2), (1.4, 0.7), (0.7, 1.4)])
    for bad in ([0.0], [(1.0, -1.0)], ["wide"], [True], []):
        with pytest.raises(ValueError):
            anchors_lib.aspect_ratio_pairs(bad)


def test_tiny_grid_count_and_order():
    boxes = anchors_lib.anchor_boxes(tiny_config())
    assert boxes.shape == (40, 4) and boxes.dtype == np.float32
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    expected = []
    for stride, rows, cols in ((8, 2, 4), (16, 1, 2)):
        for row in range(rows):
            for col in range(cols):
                expected += [(stride / 2 + row * stride, stride / 2 + col * stride)] * 4
    np.testing.assert_allclose(centers, expected, atol=1e-5)
    # Within a location: scale outer, ratio inner (head channel layout).
    heights = boxes[:4, 2] - boxes[:4, 0]
    np.testing.assert_allclose(heights, [16, 16 * 0.7, 16 * SQRT2, 16 * SQRT2 * 0.7],
                               rtol=1e-6)


def test_anchor_values_at_two_levels():
    boxes = anchors_lib.anchor_boxes(tiny_config())
    base3 = 2.0 * 8 * SQRT2  # anchor_scale * stride * 2**(1/2)
    # Level 3, row 0, col 1 (centre y=4, x=12): anchors 4..7.
    np.testing.assert_allclose(boxes[4], box(4, 12, 8, 8), atol=1e-5)
    np.testing.assert_allclose(boxes[7], box(4, 12, base3 * 0.7 / 2, base3 * 1.4 / 2),
                               atol=1e-5)
    # Level 4, row 0, col 1 (centre y=8, x=24): anchors 32 + 4..7.
    np.testing.assert_allclose(boxes[37], box(8, 24, 32 * 0.7 / 2, 32 * 1.4 / 2),
                               atol=1e-5)
    np.testing.assert_allclose(boxes[38], box(8, 24, 16 * SQRT2, 16 * SQRT2), atol=1e-5)


def test_numeric_ratio_means_sqrt_width_and_inverse_sqrt_height():
    boxes = anchors_lib.anchor_boxes(get_config("efficientdet-d0"))
    # Level 3, first location (centre 4, 4), scale 0, ratio 2.0: base 4 * 8.
    np.testing.assert_allclose(boxes[1], box(4, 4, 16 / SQRT2, 16 * SQRT2), atol=1e-5)


def test_d0_has_49104_anchors_and_level_views_agree():
    config = get_config("efficientdet-d0")
    boxes = anchors_lib.anchor_boxes(config)
    assert boxes.shape == (49104, 4)
    levels = anchors_lib.level_anchors(config)
    assert [lvl.shape for lvl in levels] == [(s, s, 9, 4) for s in (64, 32, 16, 8, 4)]
    np.testing.assert_array_equal(
        np.concatenate([lvl.reshape(-1, 4) for lvl in levels]), boxes)


def test_non_divisible_size_uses_fractional_strides():
    # lite0: 320 does not tile level 7 (3 cells): stride 320/3, as automl.
    levels = anchors_lib.level_anchors(get_config("efficientdet-lite0"))
    assert sum(lvl.shape[0] * lvl.shape[1] * 9 for lvl in levels) == 19206
    top = levels[-1]
    centers_x = (top[0, :, 0, 1] + top[0, :, 0, 3]) / 2
    np.testing.assert_allclose(centers_x, [160 / 3, 160, 800 / 3], rtol=1e-6)


def test_cached_and_read_only():
    first = anchors_lib.anchor_boxes(tiny_config())
    assert anchors_lib.anchor_boxes(tiny_config()) is first
    assert anchors_lib.anchor_boxes(tiny_config(anchor_scale=3.0)) is not first
    with pytest.raises(ValueError):
        first[0, 0] = 1.0


# --- box coder ---------------------------------------------------------------

def test_encode_hand_values():
    codes = anchors_lib.encode_boxes([[5.0, 5.0, 15.0, 45.0]], [[0.0, 0.0, 10.0, 20.0]])
    np.testing.assert_allclose(codes, [[0.5, 0.75, 0.0, math.log(2.0)]], atol=1e-6)


@pytest.mark.parametrize("dtype,atol", [(np.float64, 1e-5), (np.float32, 1e-3)])
def test_encode_decode_round_trip(dtype, atol):
    rng = np.random.default_rng(0)
    def random_boxes(n):
        corner = rng.uniform(0, 400, (n, 2))
        return np.concatenate([corner, corner + rng.uniform(1, 200, (n, 2))], 1)
    boxes, anchors = random_boxes(100).astype(dtype), random_boxes(100).astype(dtype)
    decoded = anchors_lib.decode_boxes(anchors_lib.encode_boxes(boxes, anchors), anchors)
    assert decoded.dtype == dtype
    np.testing.assert_allclose(decoded, boxes, atol=atol, rtol=1e-5)


def test_degenerate_boxes_encode_finite():
    codes = anchors_lib.encode_boxes([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]],
                                     [[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
    assert np.isfinite(codes).all()


# --- IoU family ----------------------------------------------------------------

V_ASPECT = 4 / math.pi ** 2 * (math.atan(2.0) - math.atan(0.5)) ** 2
CASES = {  # name: (box a, box b, {iou_type: hand value})
    "identical": ([0, 0, 2, 2], [0, 0, 2, 2],
                  {"iou": 1.0, "giou": 1.0, "diou": 1.0, "ciou": 1.0}),
    # 2x2 inside 4x4, same centre and shape: IoU 4/16, enclosing box = outer.
    "nested": ([0, 0, 4, 4], [1, 1, 3, 3],
               {"iou": 0.25, "giou": 0.25, "diou": 0.25, "ciou": 0.25}),
    # Unit squares side by side with a gap of 1: union 2, enclosing 1x3,
    # centre distance 2, enclosing diagonal^2 = 1 + 9.
    "disjoint": ([0, 0, 1, 1], [0, 2, 1, 3],
                 {"iou": 0.0, "giou": -1 / 3, "diou": -0.4, "ciou": -0.4}),
    # Tall 2x1 and wide 1x2 sharing a corner square: IoU 1/3, enclosing 2x2,
    # centre distance^2 0.5, diagonal^2 8.
    "crossed": ([0, 0, 2, 1], [0, 0, 1, 2],
                {"iou": 1 / 3, "giou": 1 / 3 - 1 / 4, "diou": 1 / 3 - 1 / 16,
                 "ciou": 1 / 3 - 1 / 16 - V_ASPECT ** 2 / (2 / 3 + V_ASPECT)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("iou_type", anchors_lib.IOU_TYPES)
def test_iou_family_hand_values(case, iou_type):
    box_a, box_b, expected = CASES[case]
    value = anchors_lib.box_iou(np.float32(box_a), np.float32(box_b), iou_type)
    np.testing.assert_allclose(value, expected[iou_type], atol=1e-6)
    swapped = anchors_lib.box_iou(np.float32(box_b), np.float32(box_a), iou_type)
    np.testing.assert_allclose(swapped, value, atol=1e-6)


def test_iou_pairwise_by_broadcasting_and_unknown_type():
    a = np.float32([[0, 0, 2, 2], [0, 0, 4, 4]])
    b = np.float32([[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6]])
    matrix = anchors_lib.box_iou(a[:, None], b[None])
    np.testing.assert_allclose(matrix, [[1, 1 / 7, 0], [0.25, 0.25, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="giou"):
        anchors_lib.box_iou(a, a, "gio")


# --- labeler -----------------------------------------------------------------

def flat(targets):
    cls = np.concatenate([np.reshape(t, -1) for t in targets.cls_targets])
    boxes = np.concatenate([np.reshape(t, (-1, 4)) for t in targets.box_targets])
    return cls, boxes, float(targets.num_positives)


def test_box_on_an_anchor_is_positive_for_it():
    config = tiny_config()
    anchors = anchors_lib.anchor_boxes(config)
    targets = anchors_lib.label_anchors(anchors[37:38], [2], config)
    # Anchor 37 = level 4, row 0, col 1, anchor 1 in the per-level layout.
    assert targets.cls_targets[1][0, 1, 1] == 1  # class id 2 -> channel 1
    np.testing.assert_allclose(targets.box_targets[1][0, 1, 4:8], 0.0, atol=1e-6)
    cls, _, num_positives = flat(targets)
    assert cls[37] == 1 and num_positives == (cls >= 0).sum() >= 1
    assert [t.shape for t in targets.cls_targets] == [(2, 4, 4), (1, 2, 4)]
    assert [t.shape for t in targets.box_targets] == [(2, 4, 16), (1, 2, 16)]


def test_crowd_boxes_are_never_positive():
    config = tiny_config()
    anchors = anchors_lib.anchor_boxes(config)
    targets = anchors_lib.label_anchors(anchors[[37, 4]], [2, 1], config,
                                        is_crowd=[True, False])
    cls, _, num_positives = flat(targets)
    assert cls[37] == anchors_lib.IGNORED and cls[4] == 0
    assert np.all(cls[cls >= 0] == 0)  # only the non-crowd box's class
    crowd_only = anchors_lib.label_anchors(anchors[37:38], [2], config, is_crowd=[1])
    cls, boxes, num_positives = flat(crowd_only)
    assert num_positives == 0 and (cls < 0).all() and cls[37] == anchors_lib.IGNORED
    assert not boxes.any()


@pytest.mark.parametrize("boxes,classes", [
    (np.zeros([0, 4]), np.zeros([0])),
    (np.array([[0, 0, 0, 0], [1, 2, 9, 9]]), np.array([3, -1])),  # padding rows
])
def test_no_objects_gives_all_negative_targets(boxes, classes):
    cls, box_targets, num_positives = flat(
        anchors_lib.label_anchors(boxes, classes, tiny_config()))
    assert num_positives == 0
    assert (cls == anchors_lib.BACKGROUND).all()
    assert np.isfinite(box_targets).all() and not box_targets.any()


def test_force_match_gives_a_small_box_its_best_anchor():
    config = tiny_config()
    small = np.float32([[3, 11, 5, 13]])  # 2x2 at (4, 12): IoU << 0.5 everywhere
    best = int(np.argmax(anchors_lib.box_iou(small, anchors_lib.anchor_boxes(config))))
    cls, _, num_positives = flat(anchors_lib.label_anchors(small, [3], config))
    assert num_positives == 1 and cls[best] == 2
    cls, _, num_positives = flat(
        anchors_lib.label_anchors(small, [3], config, force_match=False))
    assert num_positives == 0 and (cls == -1).all()


def test_between_thresholds_is_ignored():
    config = tiny_config()
    anchors = anchors_lib.anchor_boxes(config)
    gt = np.float32([[0, 0, 12, 20]])
    iou = anchors_lib.box_iou(gt, anchors).numpy()
    cls, _, _ = flat(anchors_lib.label_anchors(
        gt, [1], config, unmatched_threshold=0.3, force_match=False))
    np.testing.assert_array_equal(cls == 0, iou >= 0.5)
    np.testing.assert_array_equal(cls == anchors_lib.IGNORED, (iou >= 0.3) & (iou < 0.5))
    assert ((0.3 <= iou) & (iou < 0.5)).any() and (iou >= 0.5).any()


def reference_labels(anchors, boxes, classes, threshold=0.5):
    """Slow transcription of automl's matcher: per-anchor argmax with the
    threshold, then each box in order forcing its best anchor (the lowest box
    index wins an anchor claimed twice)."""
    iou = np.array([[float(anchors_lib.box_iou(b, a)) for a in anchors] for b in boxes])
    row = iou.argmax(0)
    matched = np.where(iou.max(0) >= threshold, row, -1)
    for r in reversed(range(len(boxes))):
        matched[iou[r].argmax()] = r
    cls = np.where(matched >= 0, np.asarray(classes)[matched] - 1, -1)
    codes = anchors_lib.encode_boxes(np.asarray(boxes)[np.maximum(matched, 0)], anchors)
    return cls, np.where((matched >= 0)[:, None], codes, 0.0)


def test_matches_a_direct_transcription_of_automl():
    config = tiny_config()
    anchors = anchors_lib.anchor_boxes(config)
    # Includes two identical small boxes claiming the same anchor.
    boxes = np.float32([[2, 2, 14, 14], [0, 8, 16, 32], [6, 20, 9, 23],
                        [6, 20, 9, 23], [1, 1, 15, 31]])
    classes = [1, 2, 3, 1, 2]
    cls, box_targets, num_positives = flat(
        anchors_lib.label_anchors(boxes, classes, config))
    want_cls, want_boxes = reference_labels(anchors, boxes, classes)
    np.testing.assert_array_equal(cls, want_cls)
    np.testing.assert_allclose(box_targets, want_boxes, atol=1e-5)
    assert num_positives == (want_cls >= 0).sum()


def test_labeler_inside_tf_data_with_padded_boxes():
    config = tiny_config()
    images = [(np.float32([[2, 2, 14, 14], [6, 20, 9, 23]]), [1, 3]),
              (np.float32([[0, 8, 16, 32]]), [2]),
              (np.zeros([0, 4], np.float32), [])]
    padded_boxes = np.zeros([3, 4, 4], np.float32)
    padded_classes = np.full([3, 4], -1, np.int64)
    for i, (b, c) in enumerate(images):
        padded_boxes[i, :len(b)], padded_classes[i, :len(c)] = b, c
    dataset = tf.data.Dataset.from_tensor_slices((padded_boxes, padded_classes)).map(
        lambda b, c: anchors_lib.label_anchors(b, c, config)).batch(3)
    batch = next(iter(dataset))
    assert [t.shape for t in batch.cls_targets] == [(3, 2, 4, 4), (3, 1, 2, 4)]
    for i, (b, c) in enumerate(images):
        want = anchors_lib.label_anchors(b, np.int64(c), config)
        for got_level, want_level in zip(batch.cls_targets, want.cls_targets,
                                         strict=True):
            np.testing.assert_array_equal(got_level[i], want_level)
        for got_level, want_level in zip(batch.box_targets, want.box_targets,
                                         strict=True):
            np.testing.assert_allclose(got_level[i], want_level)
        assert float(batch.num_positives[i]) == float(want.num_positives)
