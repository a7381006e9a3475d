"""The augmented-samples contact sheet: tiling, and boxes drawn where the
training labels put them."""
from __future__ import annotations

import numpy as np
import pytest

from efficientdet_tf.datasets import augment_preview
from efficientdet_tf.utils.visualize import class_color
from tests.data.test_pipeline import (image_with_boxes, make_example,
                                      tiny_config, write_records)


def test_contact_sheet_tiles_row_by_row_with_gutters():
    tiles = [np.full((10, 20, 3), value, np.uint8) for value in (1, 2, 3)]
    sheet = augment_preview.contact_sheet(tiles)
    gutter = augment_preview.GUTTER
    assert sheet.shape == (2 * 10 + gutter, 2 * 20 + gutter, 3)
    assert (sheet[:10, :20] == 1).all()
    assert (sheet[:10, 20 + gutter:] == 2).all()
    assert (sheet[10 + gutter:, :20] == 3).all()
    assert (sheet[10 + gutter:, 20 + gutter:] == 255).all()  # no 4th sample
    with pytest.raises(ValueError):
        augment_preview.contact_sheet([])


def test_samples_have_their_training_boxes_drawn(tmp_path):
    box = (20, 30, 60, 90)
    path = write_records(tmp_path / "r.tfrecord", [
        make_example(image_with_boxes(128, 128, [box]), [box], source_id=0,
                     classes=[2])])
    # No jitter, no flip: the box lands where it is in the record.
    config = tiny_config(jitter_min=1.0, jitter_max=1.0, input_rand_hflip=False)
    [sample] = augment_preview.augmented_samples(path, config, 1, seed=0)
    assert sample.shape == (128, 128, 3)
    color = np.asarray(class_color(2))
    ymin, xmin, ymax, xmax = box
    left_edge = sample[ymin + 12:ymax - 1, xmin]
    assert (np.abs(left_edge.astype(int) - color).max(axis=-1) <= 2).all()


def test_description_names_what_is_switched_on():
    assert augment_preview.describe_augmentation(tiny_config()) == \
        "flip, scale jitter 0.1-2"
    config = tiny_config(input_rand_hflip=False, autoaugment_policy="randaug",
                         cutmix_prob=0.25)
    assert augment_preview.describe_augmentation(config) == \
        "scale jitter 0.1-2, AutoAugment randaug, CutMix 25%"
