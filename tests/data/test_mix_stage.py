"""Mosaic / MixUp / CutMix inside the training pipeline (``mix_stage``).

The ops themselves are tested on hand cases in ``test_mixing.py``; here the
records carry a bright rectangle exactly where their one box is, so the
tests can check that the stage keeps boxes on their pixels, labels the mixed
images from their boxes, picks each op with its share, repeats itself with a
seed and rejects bad settings with a clear error.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import ConfigError
from efficientdet_tf.data.pipeline import build_dataset
from efficientdet_tf.ops.anchors import label_anchors
from tests.data.test_pipeline import (batches, denormalize, image_with_boxes,
                                      make_example, tiny_config, write_records)

# Non-square on purpose: 128 high, 256 wide ("WxH", automl's order).
WIDE = "256x128"
BOXES = [(8, 8, 40, 56), (50, 70, 90, 120), (10, 60, 30, 100), (60, 10, 88, 50)]


@pytest.fixture(scope="module")
def box_records(tmp_path_factory) -> str:
    """Eight 96x128 images, each one bright rectangle (of four layouts)."""
    folder = tmp_path_factory.mktemp("mix")
    return write_records(folder / "mix.tfrecord", [
        make_example(image_with_boxes(96, 128, [box]), [box], source_id=i)
        for i, box in enumerate(BOXES * 2)])


def mixed_config(**overrides):
    # No scale jitter: every image is letterboxed whole, so a plain image
    # always keeps its one box and a count of boxes tells the op apart.
    return tiny_config(image_size=WIDE, jitter_min=1.0, jitter_max=1.0,
                       **overrides)


def real_boxes(labels, index):
    return labels["boxes"][index][labels["classes"][index] > 0]


def test_mosaic_boxes_stay_on_their_pixels_in_a_non_square_input(box_records):
    config = mixed_config(mosaic_prob=1.0)
    [(images, labels)] = batches(build_dataset(
        box_records, config, training=True, batch_size=8, seed=3,
        deterministic=True), 1)
    assert images.shape == (8, 128, 256, 3)
    counts = []
    for image, index in zip(images, range(8)):
        boxes = real_boxes(labels, index)
        counts.append(len(boxes))
        assert np.all(boxes >= 0)
        assert np.all(boxes[:, [0, 2]] <= 128) and np.all(boxes[:, [1, 3]] <= 256)
        bright = denormalize(image, config).mean(axis=-1) > 128
        covered = np.zeros_like(bright)
        for ymin, xmin, ymax, xmax in boxes:
            inside = bright[int(np.ceil(ymin)):int(ymax), int(np.ceil(xmin)):int(xmax)]
            assert inside.mean() > 0.9, (index, (ymin, xmin, ymax, xmax))
            covered[int(ymin):int(np.ceil(ymax)) + 1,
                    int(xmin):int(np.ceil(xmax)) + 1] = True
        # Every bright pixel belongs to a kept box (slivers below the
        # visible-area threshold aside: at most a few rows of pixels).
        assert (bright & ~covered).sum() <= 3 * 256, index
    # A mosaic shows parts of four images: most carry boxes of several.
    assert max(counts) >= 3 and np.mean(counts) > 1.5


def test_mixed_images_are_labelled_from_their_boxes(box_records):
    config = mixed_config(mosaic_prob=0.5, cutmix_prob=0.5)
    [(_, labels)] = batches(build_dataset(
        box_records, config, training=True, batch_size=6, seed=0,
        deterministic=True), 1)
    for index in range(6):
        boxes = real_boxes(labels, index)
        classes = labels["classes"][index][labels["classes"][index] > 0]
        targets = label_anchors(tf.constant(boxes), tf.constant(classes), config)
        assert labels["num_positives"][index] == targets.num_positives.numpy()
        level = config.min_level
        np.testing.assert_array_equal(labels[f"cls_targets_{level}"][index],
                                      targets.cls_targets[0].numpy())


def test_each_op_makes_its_share_of_the_images(box_records):
    # MixUp keeps both images' boxes where they were: 2 boxes, a plain
    # image 1, so the count says which stream an image came from.
    config = mixed_config(mixup_prob=0.25)
    [(_, labels)] = batches(build_dataset(
        box_records, config, training=True, batch_size=128, seed=1,
        deterministic=True), 1)
    counts = (labels["classes"] > 0).sum(axis=1)
    assert set(counts) == {1, 2}
    # Binomial(128, 0.25): mean 32, sd 4.9.
    assert 17 <= (counts == 2).sum() <= 47


def test_seeded_mixing_repeats_itself(box_records):
    config = mixed_config(mosaic_prob=0.3, mixup_prob=0.3, cutmix_prob=0.3,
                          autoaugment_policy="v0")

    def first_batch(seed):
        return batches(build_dataset(box_records, config, training=True,
                                     batch_size=4, seed=seed,
                                     deterministic=True), 1)[0]

    (images, labels), (again, labels_again) = first_batch(7), first_batch(7)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels["boxes"], labels_again["boxes"])
    assert not np.array_equal(images, first_batch(8)[0])


@pytest.mark.parametrize("setting, message", [
    ({"mosaic_prob": 0.7, "mixup_prob": 0.5},
     r"mosaic_prob \+ mixup_prob = 1.2 > 1"),
    ({"cutmix_prob": -0.1}, "cutmix_prob must be a probability"),
    ({"mixup_prob": "often"}, "mixup_prob must be a probability"),
    ({"mosaic_prob": 0.5, "skip_crowd_during_training": False},
     "mosaic_prob need skip_crowd_during_training: true"),
])
def test_bad_settings_fail_when_the_pipeline_is_built(box_records, setting,
                                                      message):
    with pytest.raises(ConfigError, match=message):
        build_dataset(box_records, mixed_config(**setting), training=True,
                      batch_size=2, seed=0)


def test_eval_ignores_the_mixing_keys(box_records):
    config = mixed_config(mosaic_prob=1.0)
    [(_, labels)] = batches(build_dataset(box_records, config, training=False,
                                          batch_size=8))
    np.testing.assert_array_equal((labels["classes"] > 0).sum(axis=1), 1)

