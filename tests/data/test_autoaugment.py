"""AutoAugment detection policies: each op on hand-computed cases, the
policy tables, box dropping, determinism and tf.data tracing.

Geometry cases use images whose sides differ (64 x 96) wherever the op
allows, so a swapped height and width shows up.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import ConfigError
from efficientdet_tf.data import autoaugment as aa
from efficientdet_tf.data import box_aware_ops, image_ops
from efficientdet_tf.data.image_ops import FILL_VALUE

HEIGHT, WIDTH = 64, 96
SEED = tf.constant([3, 5], tf.int64)


def noise(height=HEIGHT, width=WIDTH, seed=0):
    return np.random.RandomState(seed).randint(
        0, 256, (height, width, 3)).astype(np.uint8)


def bright_box_image(height, width, box):
    """Black image, 255 on the pixel rectangle (top, left, bottom, right)."""
    image = np.zeros((height, width, 3), np.uint8)
    top, left, bottom, right = box
    image[top:bottom, left:right] = 255
    return image


def bright_extent(image):
    """Normalised yxyx box around the pixels brighter than the fill grey."""
    rows, columns = np.nonzero(np.asarray(image)[..., 0] > FILL_VALUE)
    height, width = np.asarray(image).shape[:2]
    return np.array([rows.min() / height, columns.min() / width,
                     (rows.max() + 1) / height, (columns.max() + 1) / width])


def as_channels(values):
    """A ``[h, w]`` list -> uint8 ``[h, w, 3]`` with equal channels."""
    return tf.constant(np.repeat(np.array(values, np.uint8)[..., None], 3, -1))


def apply_op(name, image, boxes, level, prob=1.0, min_visible=0.0,
             seed=SEED):
    """One op through the policy machinery (level -> argument, keep)."""
    boxes = tf.constant(boxes, tf.float32)
    state = (tf.constant(image), boxes, tf.ones([boxes.shape[0]], tf.bool))
    return aa._apply(state, name, prob, level, seed, min_visible)


# --- policy tables --------------------------------------------------------

def test_every_op_in_every_table_exists_and_tables_have_automl_shape():
    assert aa.POLICIES == ("v0", "v1", "v2", "v3", "randaug")
    assert set(aa.POLICY_TABLES) | {"randaug"} == set(aa.POLICIES)
    sizes = {name: (len(table), {len(sub) for sub in table})
             for name, table in aa.POLICY_TABLES.items()}
    assert sizes == {"v0": (5, {2}), "v1": (20, {2}), "v2": (15, {2, 3}),
                     "v3": (15, {2})}
    for table in aa.POLICY_TABLES.values():
        for sub_policy in table:
            for name, prob, level in sub_policy:
                assert name in aa._OPS, name
                assert 0.0 <= prob <= 1.0 and 0 <= level <= aa.MAX_LEVEL
    assert set(aa.RANDAUG_OPS) <= set(aa._OPS)
    used = {op for table in aa.POLICY_TABLES.values() for sub in table
            for op, _, _ in sub} | set(aa.RANDAUG_OPS)
    assert used == set(aa._OPS), "an op nobody selects"


@pytest.mark.parametrize("name, level, expected", [
    ("TranslateX_BBox", 4, 100.0), ("TranslateY_Only_BBoxes", 6, 72.0),
    ("Rotate_BBox", 10, 30.0), ("Rotate_BBox", 15, 45.0),
    ("ShearX_BBox", 2, 0.06), ("Cutout", 8, 80), ("Cutout", 15, 150),
    ("Cutout_Only_BBoxes", 6, 30), ("BBox_Cutout", 4, 0.3),
    ("Solarize", 8, 204), ("Solarize", 15, 384), ("SolarizeAdd", 4, 44),
    ("Color", 6, 1.18), ("Sharpness", 10, 1.9), ("Posterize", 2, 1),
    ("Posterize", 10, 4),
])
def test_level_to_argument_follows_automl(name, level, expected):
    assert aa._OPS[name].to_argument(level) == pytest.approx(expected)


def test_unknown_policy_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match="v0, v1, v2, v3, randaug"):
        aa.autoaugment(noise(), tf.zeros([0, 4]), "v9", SEED)
    with pytest.raises(ConfigError, match="'V0'"):
        aa.check_policy("V0")
    for policy in aa.POLICIES:
        aa.check_policy(policy)


# --- colour ops on hand arrays ----------------------------------------------

def test_solarize_inverts_from_the_threshold_and_not_above_255():
    image = as_channels([[100, 127, 128, 200]])
    assert image_ops.solarize(image, 128).numpy()[0, :, 0].tolist() == [
        100, 127, 127, 55]
    assert np.array_equal(image_ops.solarize(image, 384), image)


def test_solarize_add_brightens_only_below_128_and_saturates():
    image = as_channels([[100, 120, 128, 250]])
    assert image_ops.solarize_add(image, 50).numpy()[0, :, 0].tolist() == [
        150, 170, 128, 250]
    assert image_ops.solarize_add(image, 200).numpy()[0, 0, 0] == 255


def test_posterize_keeps_the_top_bits():
    image = as_channels([[0b10110111, 0b01111111]])
    assert image_ops.posterize(image, 3).numpy()[0, :, 0].tolist() == [
        0b10100000, 0b01100000]
    assert np.array_equal(image_ops.posterize(image, 8), image)


def test_autocontrast_stretches_each_channel_and_keeps_flat_ones():
    image = np.zeros((1, 3, 3), np.uint8)
    image[0, :, 0] = [5, 15, 56]   # low 5, high 56: scale 255 / 51 = 5
    image[0, :, 1] = 7             # flat: unchanged
    image[0, :, 2] = [0, 51, 255]
    result = image_ops.autocontrast(tf.constant(image)).numpy()[0]
    assert result[:, 0].tolist() == [0, 50, 255]
    assert result[:, 1].tolist() == [7, 7, 7]
    assert result[:, 2].tolist() == [0, 51, 255]


def test_equalize_maps_values_by_the_cumulative_histogram():
    # 1024 pixels: 512 at 10, 256 at 20, 256 at 30 -> step (1024-256)//255 = 3;
    # v -> (pixels darker than v + 1) // 3: 10 -> 0, 20 -> 171, 30 -> 255.
    values = np.array([10] * 512 + [20] * 256 + [30] * 256).reshape(32, 32)
    result = image_ops.equalize(as_channels(values)).numpy()
    expected = np.select([values == 10, values == 20], [0, 171], 255)
    assert np.array_equal(result[..., 1], expected)
    few = as_channels([[10, 20, 30]])        # step 0: unchanged
    assert np.array_equal(image_ops.equalize(few), few)


def test_blend_factors_of_brightness_color_contrast():
    image = tf.constant([[[101, 50, 0], [255, 255, 255]]], tf.uint8)
    assert image_ops.brightness(image, 0.5).numpy().tolist() == [
        [[50, 25, 0], [127, 127, 127]]]
    assert np.array_equal(image_ops.brightness(image, 1.0), image)
    grey = image_ops.color(image, 0.0).numpy()
    assert (grey == grey[..., :1]).all()
    flat = image_ops.contrast(image, 0.0).numpy()
    assert (flat == flat[0, 0, 0]).all()


def test_sharpness_blends_with_the_smoothed_interior_only():
    values = np.zeros((5, 5), np.uint8)
    values[2, 2] = 130
    image = as_channels(values)
    smoothed = image_ops.sharpness(image, 0.0).numpy()[..., 0]
    expected = np.zeros((5, 5), np.uint8)
    expected[1:4, 1:4] = 10          # 130 / 13 next to the peak
    expected[2, 2] = 50              # 130 * 5 / 13 on it
    assert np.array_equal(smoothed, expected)
    assert np.array_equal(image_ops.sharpness(image, 1.0), image)


def test_cutout_greys_one_square_of_twice_the_pad():
    image = tf.zeros([HEIGHT, WIDTH, 3], tf.uint8)
    result = image_ops.cutout(image, 5, SEED).numpy()[..., 0]
    rows, columns = np.nonzero(result)
    assert (result[rows, columns] == FILL_VALUE).all()
    assert rows.max() - rows.min() + 1 <= 10
    assert columns.max() - columns.min() + 1 <= 10
    assert len(rows) == (rows.max() - rows.min() + 1) * (
        columns.max() - columns.min() + 1)


@pytest.mark.parametrize("name, level", [
    ("Equalize", 10), ("AutoContrast", 5), ("Posterize", 2), ("Solarize", 5),
    ("SolarizeAdd", 5), ("Color", 6), ("Contrast", 3), ("Brightness", 8),
    ("Sharpness", 4), ("Cutout", 8)])
def test_colour_ops_leave_boxes_alone(name, level):
    boxes = np.float32([[0.1, 0.2, 0.6, 0.7], [0.0, 0.0, 1.0, 1.0]])
    image, moved, keep = apply_op(name, noise(), boxes, level)
    assert image.dtype == tf.uint8 and image.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(moved, boxes)
    assert keep.numpy().all()


# --- whole-image geometry -------------------------------------------------

@pytest.mark.parametrize("pixels", [12.0, -24.0])
def test_translate_x_moves_boxes_by_pixels_over_width(pixels):
    image = noise()
    boxes = tf.constant([[0.25, 0.25, 0.5, 0.5]])
    moved_image, moved = box_aware_ops.translate_x(image, boxes, pixels)
    shift = pixels / WIDTH
    np.testing.assert_allclose(moved, [[0.25, 0.25 + shift, 0.5, 0.5 + shift]],
                               atol=1e-6)
    k = int(pixels)
    moved_image = moved_image.numpy()
    if k > 0:
        assert np.array_equal(moved_image[:, k:], image[:, :-k])
        assert (moved_image[:, :k] == FILL_VALUE).all()
    else:
        assert np.array_equal(moved_image[:, :k], image[:, -k:])
        assert (moved_image[:, k:] == FILL_VALUE).all()


def test_translate_y_moves_boxes_by_pixels_over_height():
    _, moved = box_aware_ops.translate_y(noise(), tf.constant(
        [[0.25, 0.25, 0.5, 0.5]]), 16.0)
    np.testing.assert_allclose(moved, [[0.5, 0.25, 0.75, 0.5]], atol=1e-6)


def test_rotate_by_90_degrees_maps_a_known_box():
    image = noise(64, 64)
    rotated, moved = box_aware_ops.rotate(
        image, tf.constant([[0.0, 0.0, 0.25, 0.5]]), 90.0)
    # Counter-clockwise: the top strip's left half becomes the left strip's
    # bottom half.
    np.testing.assert_allclose(moved, [[0.5, 0.0, 1.0, 0.25]], atol=1e-5)
    assert np.array_equal(rotated, np.rot90(image))


@pytest.mark.parametrize("level, expected_x", [(0.25, (28, 56)),
                                               (-0.25, (16, 44))])
def test_shear_x_moves_box_corners_by_level_times_y(level, expected_x):
    # Box rows 16..32, columns 24..48; x -> x + level * y.
    boxes = tf.constant([[16 / HEIGHT, 24 / WIDTH, 32 / HEIGHT, 48 / WIDTH]])
    _, moved = box_aware_ops.shear_x(noise(), boxes, level)
    np.testing.assert_allclose(
        moved, [[0.25, expected_x[0] / WIDTH, 0.5, expected_x[1] / WIDTH]],
        atol=1e-6)


def test_shear_x_shifts_each_row_by_level_times_its_centre():
    image = noise()
    sheared = box_aware_ops.shear_x(image, tf.zeros([0, 4]), 0.4)[0].numpy()
    for row, shift in ((2, 1), (7, 3)):          # 0.4 * (row + 0.5)
        assert np.array_equal(sheared[row, shift:], image[row, :-shift])
        assert (sheared[row, :shift] == FILL_VALUE).all()


def test_shear_y_moves_box_corners_by_level_times_x():
    boxes = tf.constant([[16 / HEIGHT, 24 / WIDTH, 32 / HEIGHT, 48 / WIDTH]])
    _, moved = box_aware_ops.shear_y(noise(), boxes, 0.25)   # y + 0.25 x
    np.testing.assert_allclose(moved, [[22 / HEIGHT, 0.25, 44 / HEIGHT, 0.5]],
                               atol=1e-6)


@pytest.mark.parametrize("op, argument", [
    (box_aware_ops.rotate, 30.0), (box_aware_ops.rotate, -45.0),
    (box_aware_ops.shear_x, 0.3), (box_aware_ops.shear_y, -0.3),
    (box_aware_ops.translate_x, -20.0)])
def test_boxes_move_with_the_image(op, argument):
    pixels = (20, 30, 44, 60)                       # rows 20..44, cols 30..60
    image = bright_box_image(HEIGHT, WIDTH, pixels)
    box = [[pixels[0] / HEIGHT, pixels[1] / WIDTH, pixels[2] / HEIGHT,
            pixels[3] / WIDTH]]
    moved_image, moved = op(image, tf.constant(box), argument)
    np.testing.assert_allclose(bright_extent(moved_image), moved[0],
                               atol=1.5 / HEIGHT)


def test_boxes_are_clipped_and_a_box_moved_out_is_dropped():
    boxes = [[0.3, 0.4, 0.6, 0.6], [0.0, 0.0, 1.0, 1.0]]
    # Level 10: 250 pixels either way, more than the 96-pixel width.
    _, moved, keep = apply_op("TranslateX_BBox", noise(), boxes, 10)
    assert keep.numpy().tolist() == [False, False]
    assert (moved.numpy() >= 0).all() and (moved.numpy() <= 1).all()
    # Level 1: 25 pixels; the full-width box keeps 71/96 of its area.
    for min_visible, kept in ((0.7, True), (0.8, False)):
        _, _, keep = apply_op("TranslateX_BBox", noise(), boxes, 1,
                              min_visible=min_visible)
        assert keep.numpy().tolist() == [True, kept]


# --- ops inside boxes ----------------------------------------------------

BOX_PIXELS = (8, 16, 40, 48)                          # rows 8..40, cols 16..48
BOX = np.float32([[8 / HEIGHT, 16 / WIDTH, 40 / HEIGHT, 48 / WIDTH]])


def split_at_box(image):
    image = np.asarray(image)
    top, left, bottom, right = BOX_PIXELS
    inside = np.zeros(image.shape[:2], bool)
    inside[top:bottom, left:right] = True
    return image[top:bottom, left:right], image[~inside]


def test_flip_only_bboxes_mirrors_only_the_pixels_inside():
    image = noise()
    flipped, boxes = box_aware_ops.flip_only_bboxes(image, tf.constant(BOX),
                                                    1.0, SEED)
    inside, outside = split_at_box(flipped)
    original_inside, original_outside = split_at_box(image)
    assert np.array_equal(inside, original_inside[:, ::-1])
    assert np.array_equal(outside, original_outside)
    np.testing.assert_array_equal(boxes, BOX)


@pytest.mark.parametrize("op, args", [
    (box_aware_ops.translate_y_only_bboxes, (10.0,)),
    (box_aware_ops.shear_x_only_bboxes, (0.3,)),
    (box_aware_ops.shear_y_only_bboxes, (-0.3,)),
    (box_aware_ops.equalize_only_bboxes, ()),
    (box_aware_ops.cutout_only_bboxes, (6,))])
def test_in_box_ops_change_only_pixels_inside_and_keep_boxes(op, args):
    image = noise()
    result, boxes = op(image, tf.constant(BOX), *args, 1.0, SEED)
    inside, outside = split_at_box(result)
    assert np.array_equal(outside, split_at_box(image)[1])
    assert not np.array_equal(inside, split_at_box(image)[0])
    np.testing.assert_array_equal(boxes, BOX)


def test_translate_y_only_bboxes_moves_content_down_inside_the_box():
    image = noise()
    result, _ = box_aware_ops.translate_y_only_bboxes(
        image, tf.constant(BOX), 10.0, 1.0, SEED)
    inside, _ = split_at_box(result)
    original, _ = split_at_box(image)
    assert np.array_equal(inside[10:], original[:-10])
    assert (inside[:10] == FILL_VALUE).all()


def test_in_box_ops_with_probability_zero_change_nothing():
    image = noise()
    result, _ = box_aware_ops.flip_only_bboxes(image, tf.constant(BOX), 0.0,
                                               SEED)
    assert np.array_equal(result, image)


def test_box_cutout_greys_a_patch_around_a_pixel_of_the_box():
    image = tf.zeros([HEIGHT, WIDTH, 3], tf.uint8)
    result, boxes = box_aware_ops.box_cutout(image, tf.constant(BOX), 0.5,
                                             SEED)
    rows, columns = np.nonzero(result.numpy()[..., 0])
    # pad = int(0.5 * 32 / 2) = 8 on each axis: a 16 x 16 square at most,
    # centred inside the box.
    assert 0 < len(rows) <= 16 * 16
    centre_row = (rows.min() + rows.max() + 1) / 2
    centre_column = (columns.min() + columns.max() + 1) / 2
    top, left, bottom, right = BOX_PIXELS
    assert top - 8 <= centre_row <= bottom + 8
    assert left - 8 <= centre_column <= right + 8
    np.testing.assert_array_equal(boxes, BOX)
    untouched, _ = box_aware_ops.box_cutout(image, tf.zeros([0, 4]), 0.5,
                                            SEED)
    assert np.array_equal(untouched, image)


# --- whole policies --------------------------------------------------------

EDGE_BOXES = [[0.0, 0.0, 0.2, 0.3], [0.4, 0.5, 0.9, 1.0], [0.9, 0.9, 1.0, 1.0]]


@pytest.mark.parametrize("policy", aa.POLICIES)
def test_every_policy_on_a_non_square_image(policy):
    image = noise()
    for step in range(6):
        result, boxes, keep = aa.autoaugment(
            image, tf.constant(EDGE_BOXES), policy,
            tf.constant([step, 11], tf.int64))
        assert result.dtype == tf.uint8 and result.shape == image.shape
        boxes, keep = boxes.numpy(), keep.numpy()
        assert boxes.shape == (3, 4) and keep.shape == (3,)
        assert (boxes >= 0).all() and (boxes <= 1).all()
        kept = boxes[keep]
        assert ((kept[:, 2] > kept[:, 0]) & (kept[:, 3] > kept[:, 1])).all()
    empty = aa.autoaugment(image, tf.zeros([0, 4]), policy, SEED)
    assert empty[1].shape == (0, 4) and empty[2].shape == (0,)


@pytest.mark.parametrize("policy", ["v1", "randaug"])
def test_same_seed_same_result_other_seeds_differ(policy):
    image, boxes = noise(), tf.constant(EDGE_BOXES)
    runs = [aa.autoaugment(image, boxes, policy, tf.constant([s, 1]))
            for s in (0, 0, 1, 2, 3, 4)]
    first, again = runs[0], runs[1]
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert any(not np.array_equal(first[0], other[0]) for other in runs[2:])


def test_autoaugment_traces_inside_dataset_map_and_matches_eager():
    images = np.stack([noise(seed=i) for i in range(3)])
    seeds = np.array([[i, 7] for i in range(3)], np.int64)
    boxes = tf.constant(EDGE_BOXES)
    for policy in ("v1", "randaug"):
        dataset = tf.data.Dataset.from_tensor_slices((images, seeds)).map(
            lambda image, seed, p=policy: aa.autoaugment(image, boxes, p,
                                                         seed))
        for (image, seed), (mapped, moved, keep) in zip(zip(images, seeds),
                                                        dataset):
            eager = aa.autoaugment(image, boxes, policy, seed)
            assert np.array_equal(mapped, eager[0])
            np.testing.assert_allclose(moved, eager[1], atol=1e-6)
            assert np.array_equal(keep, eager[2])
