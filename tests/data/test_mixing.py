"""Mosaic, MixUp and CutMix on small non-square images with hand-placed boxes.

Every source image is a flat value with a brighter rectangle where each of
its boxes is, so a test can check that pixels and boxes moved together.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import ConfigError
from efficientdet_tf.data import mixing

H, W = 64, 96  # non-square on purpose
M = 3


def make_group(box_lists, height=H, width=W, rows=M):
    """``k`` images (background ``10 * (i + 1)``, box ``j`` of image ``i``
    filled with ``100 + 10 * i + j``) and their padded boxes and classes
    (class ``j + 1``)."""
    k = len(box_lists)
    images = np.zeros((k, height, width, 3), np.float32)
    boxes = np.zeros((k, rows, 4), np.float32)
    classes = np.full((k, rows), -1, np.int32)
    for i, box_list in enumerate(box_lists):
        images[i] = 10 * (i + 1)
        for j, (y0, x0, y1, x1) in enumerate(box_list):
            images[i, y0:y1, x0:x1] = 100 + 10 * i + j
            boxes[i, j] = (y0, x0, y1, x1)
            classes[i, j] = j + 1
    return tf.constant(images), tf.constant(boxes), tf.constant(classes)


def kept(boxes, classes):
    """The non-padding rows as ``{class: box}`` (classes unique per test)."""
    boxes, classes = np.asarray(boxes), np.asarray(classes)
    return {int(c): tuple(b) for b, c in zip(boxes, classes) if c >= 1}


def source_image(image):
    """``[H, W]``: which image of a :func:`make_group` each pixel is from."""
    values = np.asarray(image)[:, :, 0].astype(int)
    return np.where(values < 100, values // 10 - 1, (values - 100) // 10)


def assert_valid_output(image, boxes, classes, height, width):
    """Right shapes; kept boxes inside the image with area; padding clean."""
    boxes, classes = np.asarray(boxes), np.asarray(classes)
    assert image.shape[:2] == (height, width)
    real = classes >= 1
    assert np.all(boxes[real, :2] >= 0)
    assert np.all(boxes[real, 2] <= height) and np.all(boxes[real, 3] <= width)
    assert np.all(boxes[real, 2] > boxes[real, 0])
    assert np.all(boxes[real, 3] > boxes[real, 1])
    assert np.all(boxes[~real] == 0) and np.all(classes[~real] == -1)
    # Kept rows first.
    assert not np.any(real[1:] & ~real[:-1])


# ---------------------------------------------------------------- mosaic

CENTER = (24, 40)


def test_mosaic_boxes_land_in_their_quadrant():
    # Image 0's bottom-right corner and image 3's top-left corner touch the
    # centre: shifts (24 - 64, 40 - 96) = (-40, -56) and (24, 40).
    images, boxes, classes = make_group(
        [[(50, 70, 60, 90)], [], [], [(5, 6, 15, 20)]])
    image, out_boxes, out_classes = mixing.mosaic_at(
        images, boxes, classes, CENTER)
    image = image.numpy()
    assert out_boxes.shape == (4 * M, 4) and out_classes.shape == (4 * M,)
    np.testing.assert_array_equal(out_boxes[:2], [[10, 14, 20, 34],
                                                  [29, 46, 39, 60]])
    np.testing.assert_array_equal(out_classes[:2], [1, 1])
    np.testing.assert_array_equal(image[10:20, 14:34], 100)
    np.testing.assert_array_equal(image[29:39, 46:60], 130)
    # Each quadrant shows its image (backgrounds 10, 20, 30, 40).
    assert image[0, 0, 0] == 10 and image[0, 39, 0] == 10
    assert image[0, 40, 0] == 20 and image[23, 95, 0] == 20
    assert image[24, 0, 0] == 30 and image[63, 39, 0] == 30
    assert image[24, 40, 0] == 40 and image[63, 95, 0] == 40


def test_mosaic_places_picture_corners_not_letterbox_padding():
    # Image 0's picture is 40 x 60 (padding below and right): its corner
    # (40, 60) goes to the centre, shift (-16, -20). Image 1's picture is
    # only 16 rows high: rows above it in its quadrant are left at 0.
    images, boxes, classes = make_group([[(30, 50, 40, 60)], [], [], []])
    images = images.numpy()
    images[0, 40:] = 0
    images[0, :, 60:] = 0
    images[1, 16:] = 0
    content = [[40, 60], [16, W], [H, W], [H, W]]
    image, out_boxes, _ = mixing.mosaic_at(
        tf.constant(images), boxes, classes, CENTER, content_sizes=content)
    image = image.numpy()
    np.testing.assert_array_equal(out_boxes[0], [14, 30, 24, 40])
    top_left = image[:24, :40]
    assert np.all(top_left > 0)  # all picture, no padding
    np.testing.assert_array_equal(top_left[14:24, 30:40], 100)
    np.testing.assert_array_equal(image[:8, 40:], 0)
    np.testing.assert_array_equal(image[8:24, 40:], 20)


@pytest.mark.parametrize("min_fraction, expect_kept", [(0.1, {1, 2}),
                                                      (0.25, {1})])
def test_mosaic_clips_and_drops_cut_boxes(min_fraction, expect_kept):
    # Image 3 (shift (24, 40), quadrant rows 24..64): box 1 stays whole,
    # box 2 keeps rows 62..64 of 62..72 (20%), box 3 falls off the bottom.
    # Image 0 (shift (-40, -56)): its box lands above-left of the image.
    images, boxes, classes = make_group(
        [[(0, 0, 10, 10)], [], [],
         [(0, 0, 10, 10), (38, 0, 48, 10), (45, 10, 55, 20)]])
    image, out_boxes, out_classes = mixing.mosaic_at(
        images, boxes, classes, CENTER, min_visible_fraction=min_fraction)
    expected = {1: (24, 40, 34, 50), 2: (62, 40, 64, 50)}
    assert kept(out_boxes, out_classes) == {c: expected[c] for c in expect_kept}
    assert_valid_output(image, out_boxes, out_classes, H, W)


def test_mosaic_truncates_or_pads_to_max_boxes():
    images, boxes, classes = make_group([[(0, 0, 64, 96)]] * 4)
    _, out_boxes, out_classes = mixing.mosaic_at(
        images, boxes, classes, CENTER, max_boxes=2)
    assert out_boxes.shape == (2, 4)
    np.testing.assert_array_equal(out_boxes, [[0, 0, 24, 40], [0, 40, 24, 96]])
    np.testing.assert_array_equal(out_classes, [1, 1])
    _, out_boxes, out_classes = mixing.mosaic_at(
        images, boxes, classes, CENTER, max_boxes=20)
    assert out_boxes.shape == (20, 4)
    assert int(np.sum(out_classes.numpy() >= 1)) == 4


@pytest.mark.parametrize("height, width", [(H, W), (W, H)])
def test_mosaic_centre_stays_in_range_and_seed_repeats(height, width):
    rng = np.random.default_rng(0)
    box_lists = [[tuple(rng.integers(0, 30, 2)) + tuple(rng.integers(30, 64, 2))
                  for _ in range(M)] for _ in range(4)]
    images, boxes, classes = make_group(box_lists, height, width)
    results = []
    for seed in range(6):
        image, out_boxes, out_classes = mixing.mosaic(
            images, boxes, classes, tf.constant([seed, 7]))
        assert_valid_output(image, out_boxes, out_classes, height, width)
        # The top-left quadrant is where image 0's pixels are.
        top_left = source_image(image)[:, :] == 0
        cy, cx = np.sum(top_left[:, 0]), np.sum(top_left[0, :])
        assert 0.25 * height <= cy <= 0.75 * height
        assert 0.25 * width <= cx <= 0.75 * width
        results.append((cy, cx))
    assert len(set(results)) > 1
    again = mixing.mosaic(images, boxes, classes, tf.constant([3, 7]))
    first = mixing.mosaic(images, boxes, classes, tf.constant([3, 7]))
    for a, b in zip(again, first):
        np.testing.assert_array_equal(a, b)


def test_mosaic_rejects_bad_center_range_and_group_size():
    images, boxes, classes = make_group([[]] * 4)
    with pytest.raises(ConfigError, match="center_range"):
        mixing.mosaic(images, boxes, classes, tf.constant([0, 0]),
                      center_range=(0.8, 0.2))
    with pytest.raises(ValueError, match="group of 4"):
        mixing.mosaic_at(images[:2], boxes[:2], classes[:2], CENTER)


# ----------------------------------------------------------------- mixup

def test_mixup_blends_pixels_and_keeps_both_images_boxes():
    a = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    b = np.full((2, 3, 3), 10.0, np.float32)
    boxes = tf.constant([[[0, 0, 1, 2], [0, 0, 0, 0]],
                         [[1, 1, 2, 3], [0, 1, 2, 2]]], tf.float32)
    classes = tf.constant([[4, -1], [5, 6]])
    image, out_boxes, out_classes, weights = mixing.mixup_with_ratio(
        tf.constant(np.stack([a, b])), boxes, classes, 0.3)
    np.testing.assert_allclose(image, 0.3 * a + 0.7 * b, rtol=1e-6)
    np.testing.assert_array_equal(
        out_boxes, [[0, 0, 1, 2], [1, 1, 2, 3], [0, 1, 2, 2], [0, 0, 0, 0]])
    np.testing.assert_array_equal(out_classes, [4, 5, 6, -1])
    np.testing.assert_allclose(weights, [0.3, 0.7, 0.7, 0.0], rtol=1e-6)


def test_mixup_rounds_integer_images():
    images = tf.constant([np.full((2, 2, 3), 100), np.full((2, 2, 3), 201)],
                         tf.uint8)
    image, *_ = mixing.mixup_with_ratio(
        images, tf.zeros([2, 1, 4]), tf.constant([[-1], [-1]]), 0.25)
    assert image.dtype == tf.uint8
    np.testing.assert_array_equal(image, 176)  # 25 + 150.75


def test_mixup_seeded_ratio_is_near_half_and_repeats():
    images, boxes, classes = make_group([[(0, 0, 10, 10)], [(5, 5, 20, 30)]])
    for seed in range(5):
        image, out_boxes, out_classes, weights = mixing.mixup(
            images, boxes, classes, tf.constant([seed, 1]))
        assert_valid_output(image, out_boxes, out_classes, H, W)
        ratio = float(weights[0])
        assert 0.25 < ratio < 0.75
        np.testing.assert_allclose(weights[:2], [ratio, 1.0 - ratio],
                                   rtol=1e-6)
        # Background pixel: 10 * ratio + 20 * (1 - ratio).
        np.testing.assert_allclose(image[63, 95, 0], 20 - 10 * ratio,
                                   rtol=1e-5)
        np.testing.assert_array_equal(out_boxes[:2], [[0, 0, 10, 10],
                                                      [5, 5, 20, 30]])
        np.testing.assert_array_equal(out_classes, [1, 1, -1, -1, -1, -1])
    first = mixing.mixup(images, boxes, classes, tf.constant([9, 9]))
    again = mixing.mixup(images, boxes, classes, tf.constant([9, 9]))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="alpha"):
        mixing.mixup(images, boxes, classes, tf.constant([0, 0]), alpha=0.0)


# ---------------------------------------------------------------- cutmix

PATCH = (10, 20, 40, 60)  # rows 10..39, columns 20..59


def test_cutmix_pastes_patch_and_fixes_boxes():
    images, boxes, classes = make_group(
        [[(15, 25, 30, 50),    # A: under the patch entirely -> dropped
          (20, 10, 30, 40),    # A: right part covered -> trimmed to x < 20
          (0, 30, 50, 50)],    # A: middle band covered -> unchanged
         [(0, 0, 20, 30),      # B: corner inside the patch -> clipped
          (50, 70, 60, 90),    # B: outside the patch -> dropped
          (12, 22, 20, 30)]])  # B: inside the patch -> unchanged
    image, out_boxes, out_classes = mixing.cutmix_at(
        images, boxes, classes, PATCH)
    image = image.numpy()
    inside = np.zeros((H, W), bool)
    inside[10:40, 20:60] = True
    np.testing.assert_array_equal(image[inside], images[1].numpy()[inside])
    np.testing.assert_array_equal(image[~inside], images[0].numpy()[~inside])
    np.testing.assert_array_equal(out_boxes[:4], [
        [20, 10, 30, 20], [0, 30, 50, 50], [10, 20, 20, 30], [12, 22, 20, 30]])
    np.testing.assert_array_equal(out_classes, [2, 3, 1, 3, -1, -1])
    assert_valid_output(image, out_boxes, out_classes, H, W)


def test_cutmix_trims_the_covered_top_or_left():
    images, boxes, classes = make_group(
        [[(30, 30, 50, 50),    # patch covers its top 10 rows
          (15, 50, 35, 80)],   # patch covers its left 10 columns
         []])
    _, out_boxes, out_classes = mixing.cutmix_at(images, boxes, classes, PATCH)
    assert kept(out_boxes, out_classes) == {1: (40, 30, 50, 50),
                                            2: (15, 60, 35, 80)}


def test_cutmix_drops_boxes_mostly_hidden():
    # A's box keeps 6 of its 50 rows (12%): kept at 0.1, dropped at 0.2.
    images, boxes, classes = make_group([[(5, 30, 55, 50)], []])
    patch = (11, 0, 64, W)
    for fraction, expected in [(0.1, {1: (5, 30, 11, 50)}), (0.2, {})]:
        _, out_boxes, out_classes = mixing.cutmix_at(
            images, boxes, classes, patch, min_visible_fraction=fraction)
        assert kept(out_boxes, out_classes) == expected


def test_cutmix_seeded_patch_is_valid_and_repeats():
    images, boxes, classes = make_group(
        [[(0, 0, 30, 40), (30, 40, 64, 96)], [(10, 10, 50, 80)]])
    outputs = []
    for seed in range(6):
        image, out_boxes, out_classes = mixing.cutmix(
            images, boxes, classes, tf.constant([seed, 3]), max_boxes=4)
        assert out_boxes.shape == (4, 4)
        assert_valid_output(image, out_boxes, out_classes, H, W)
        # Pixels come from A (10 or 100/101) or B (20 or 110) only.
        assert set(np.unique(image)) <= {10, 100, 101, 20, 110}
        outputs.append(image.numpy())
    assert any(not np.array_equal(outputs[0], o) for o in outputs[1:])
    again = mixing.cutmix(images, boxes, classes, tf.constant([0, 3]),
                          max_boxes=4)
    np.testing.assert_array_equal(again[0], outputs[0])


# ---------------------------------------------------------------- tf.data

def test_ops_run_in_dataset_map_after_batching():
    box_lists = [[(4 * i, 8, 4 * i + 30, 50)] for i in range(8)]
    images, boxes, classes = make_group(box_lists)
    singles = tf.data.Dataset.from_tensor_slices((images, boxes, classes))
    seeds = tf.data.Dataset.random(seed=5).batch(2)

    mosaics = tf.data.Dataset.zip(
        (singles.batch(4, drop_remainder=True), seeds)).map(
        lambda group, seed: mixing.mosaic(*group, seed))
    assert mosaics.element_spec[0].shape == (H, W, 3)
    assert mosaics.element_spec[1].shape == (4 * M, 4)
    mixups = tf.data.Dataset.zip(
        (singles.batch(2, drop_remainder=True), seeds)).map(
        lambda group, seed: mixing.mixup(*group, seed, max_boxes=M))
    assert mixups.element_spec[3].shape == (M,)
    cutmixes = tf.data.Dataset.zip(
        (singles.batch(2, drop_remainder=True), seeds)).map(
        lambda group, seed: mixing.cutmix(*group, seed))

    seed_list = list(seeds.take(4))
    for dataset, fn, k in [(mosaics, mixing.mosaic, 4),
                           (mixups, mixing.mixup, 2),
                           (cutmixes, mixing.cutmix, 2)]:
        produced = list(dataset)
        assert len(produced) == 8 // k
        for n, element in enumerate(produced):
            group = (images[n * k:(n + 1) * k], boxes[n * k:(n + 1) * k],
                     classes[n * k:(n + 1) * k])
            kwargs = {"max_boxes": M} if fn is mixing.mixup else {}
            eager = fn(*group, seed_list[n], **kwargs)
            for graph_value, eager_value in zip(element, eager):
                np.testing.assert_allclose(graph_value, eager_value)
