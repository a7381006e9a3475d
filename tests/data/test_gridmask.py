"""GridMask: the grid pattern by hand, automl's draws, determinism, tf.data."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import ConfigError
from efficientdet_tf.data import gridmask


def stripes(coordinates, period, length, phase):
    """1-D: is each coordinate on a kept stripe."""
    return np.mod(np.asarray(coordinates) - phase, period) < length


def test_unrotated_grid_keeps_rows_and_columns_stripes():
    # Period 4, stripes 2 wide: rows/columns 1, 2, 5, 6, 9 with phase 1;
    # the hidden cells are where neither the row nor the column is kept.
    mask = gridmask.grid_keep_mask(6, 10, period=4, length=2, phase=(1, 1),
                                   angle=0.0).numpy()
    rows = stripes(range(6), 4, 2, 1)
    cols = stripes(range(10), 4, 2, 1)
    np.testing.assert_array_equal(mask, rows[:, None] | cols[None, :])
    assert mask.shape == (6, 10)
    assert not mask[0, 0] and not mask[3, 4] and mask[1, 0] and mask[0, 5]


def test_quarter_turn_swaps_rows_and_columns_about_the_centre():
    # Rotating by 90 degrees about the centre (3.5, 3.5) makes pixel (y, x)
    # read grid point (x, 7 - y). Half-pixel phases keep every pixel centre
    # off a stripe edge, so rounding in sin/cos cannot flip one.
    mask = gridmask.grid_keep_mask(8, 8, period=4, length=2,
                                   phase=(0.5, 1.5), angle=math.pi / 2)
    y, x = np.mgrid[0:8, 0:8]
    expected = stripes(x, 4, 2, 0.5) | stripes(7 - y, 4, 2, 1.5)
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("ratio", [0.6, 0.3])
def test_hidden_fraction_follows_the_ratio(ratio):
    # Hidden cells are (d - l)^2 of each d^2: (1 - ratio)^2 of the image,
    # up to rounding of l and the cells cut by the border.
    fractions = []
    for seed in range(8):
        image = gridmask.gridmask(tf.ones([96, 128, 3]), tf.constant([seed, 1]),
                                  prob=1.0, ratio=ratio)
        fractions.append(1.0 - float(tf.reduce_mean(image)))
    expected = (1.0 - ratio) ** 2
    assert all(abs(f - expected) < 0.06 for f in fractions)
    assert abs(np.mean(fractions) - expected) < 0.03


def test_masked_pixels_take_the_fill_and_others_are_untouched():
    image = tf.random.stateless_uniform([40, 72, 3], [1, 2], 1, 250,
                                        dtype=tf.int32)
    image = tf.cast(image, tf.uint8)
    out = gridmask.gridmask(image, tf.constant([4, 4]), prob=1.0,
                            fill_value=0).numpy()
    draw = gridmask.sample_grid(tf.constant([4, 4]), 40, 72, prob=1.0)
    keep = gridmask.grid_keep_mask(40, 72, draw.period, draw.length,
                                   draw.phase, draw.angle).numpy()
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[keep], image.numpy()[keep])
    np.testing.assert_array_equal(out[~keep], 0)
    assert 0 < np.sum(~keep) < keep.size


def test_draws_follow_automl():
    height, width = 96, 128  # period in [int(0.3 * 128), int(0.5 * 96)]
    draws = [gridmask.sample_grid(tf.constant([seed, 9]), height, width)
             for seed in range(200)]
    periods = np.array([int(d.period) for d in draws])
    assert periods.min() >= 38 and periods.max() <= 48
    assert len(set(periods)) > 5
    for d in draws[:20]:
        assert int(d.length) == int(int(d.period) * 0.6 + 0.5)
        assert np.all((d.phase.numpy() >= 0) & (d.phase.numpy() < int(d.period)))
    # Rotation rotate * (z - 1) degrees: mean -10, spread 10.
    degrees = np.array([float(d.angle) for d in draws]) * 180 / math.pi
    assert -13 < degrees.mean() < -7 and 7 < degrees.std() < 13
    # automl masks when a standard normal draw is below 0.5.
    assert gridmask.AUTOML_PROB == pytest.approx(0.6915, abs=1e-4)
    rate = np.mean([bool(d.apply) for d in draws])
    assert 0.6 < rate < 0.78


def test_probability_zero_returns_the_image():
    image = tf.random.stateless_uniform([16, 24, 3], [0, 1])
    out = gridmask.gridmask(image, tf.constant([0, 0]), prob=0.0)
    np.testing.assert_array_equal(out, image)


def test_same_seed_same_mask():
    image = tf.ones([50, 30, 3])
    first = gridmask.gridmask(image, tf.constant([7, 1]), prob=1.0)
    again = gridmask.gridmask(image, tf.constant([7, 1]), prob=1.0)
    other = gridmask.gridmask(image, tf.constant([8, 1]), prob=1.0)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_tiny_image_is_not_hidden_entirely():
    out = gridmask.gridmask(tf.ones([3, 3, 1]), tf.constant([0, 0]), prob=1.0)
    assert float(tf.reduce_sum(out)) > 0


def test_bad_ratio_is_a_config_error():
    with pytest.raises(ConfigError, match="ratio"):
        gridmask.gridmask(tf.ones([8, 8, 3]), tf.constant([0, 0]), ratio=1.0)


def test_runs_in_dataset_map_and_leaves_boxes_alone():
    images = tf.ones([4, 48, 80, 3])
    boxes = tf.constant([[[1.0, 2.0, 30.0, 40.0]]] * 4)
    seeds = tf.data.Dataset.random(seed=3).batch(2)
    dataset = tf.data.Dataset.zip(
        (tf.data.Dataset.from_tensor_slices((images, boxes)), seeds)).map(
        lambda pair, seed: (gridmask.gridmask(pair[0], seed, prob=1.0),
                            pair[1]))
    assert dataset.element_spec[0].shape == (48, 80, 3)
    for (image, out_boxes), seed in zip(dataset, seeds):
        np.testing.assert_array_equal(
            image, gridmask.gridmask(images[0], seed, prob=1.0))
        np.testing.assert_array_equal(out_boxes, boxes[0])
