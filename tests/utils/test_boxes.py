"""Corners <-> COCO ``[x, y, width, height]`` on boxes counted by hand."""
from __future__ import annotations

import numpy as np
import pytest

from efficientdet_tf.utils.boxes import coco_bbox, coco_corners


def test_corners_to_coco_and_back():
    # x from 10 to 40, y from 20 to 60: 30 wide, 40 high.
    assert coco_bbox(xmin=10, ymin=20, xmax=40, ymax=60) == [10, 20, 30, 40]
    assert coco_corners([10, 20, 30, 40]) == (10, 20, 40, 60)
    assert coco_corners(coco_bbox(1.5, 2.25, 3.0, 4.0)) == (1.5, 2.25, 3.0, 4.0)


def test_ints_stay_ints_for_integral_json():
    assert all(type(v) is int for v in coco_bbox(0, 0, 5, 7))


def test_numpy_columns_convert_elementwise():
    yxyx = np.array([[20., 10., 60., 40.], [0., 0., 2., 1.]])
    ymin, xmin, ymax, xmax = yxyx.T
    bbox = np.stack(coco_bbox(xmin, ymin, xmax, ymax), axis=-1)
    np.testing.assert_array_equal(bbox, [[10, 20, 30, 40], [0, 0, 1, 2]])


@pytest.mark.parametrize("bad", [[1, 2, 3], [1, 2, 3, 4, 5]])
def test_a_bbox_of_other_than_four_values_is_a_value_error(bad):
    with pytest.raises(ValueError):
        coco_corners(bad)
