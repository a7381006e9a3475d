"""Tiled inference: windows cover the image, an object cut by a window's
edge comes back as one box, whether it is smaller than the overlap (seen
whole next door) or larger (joined from its pieces)."""
from __future__ import annotations

import numpy as np
import pytest

from efficientdet_tf.fusion.fused import run_view
from efficientdet_tf.fusion.merge import Detections
from efficientdet_tf.fusion.tiles import (TileError, TileSpec, Window,
                                          join_tiles, place, positions, windows)
from efficientdet_tf.fusion.views import View
from tests.fusion.oracle import Box, as_boxes, oracle_model, scene

PLAIN = View(1.0, False)


def test_window_positions_cover_the_length_with_the_overlap():
    assert positions(100, 128, 0.2) == [0]
    assert positions(300, 128, 0.25) == [0, 86, 172]  # stride <= 96
    starts = positions(2048, 512, 0.2)
    assert starts[0] == 0 and starts[-1] == 2048 - 512
    assert all(b - a <= 512 * 0.8 for a, b in zip(starts, starts[1:]))
    assert windows((300, 100, 3), (128, 128), 0.25) == [
        Window(top, 0, 128, 100) for top in (0, 86, 172)]


def test_place_offsets_clips_to_the_window_and_flags_inner_edges():
    found = Detections(np.array([[10, 100, 30, 128], [10, 10, 30, 40],
                                 [0, 0, 20, 20]], np.float32),
                       np.array([0.9, 0.8, 0.7], np.float32),
                       np.array([1, 1, 2], np.int32))
    # A window at (86, 0) of a 300 x 300 image: its top, bottom and right
    # edges are inside the image, its left edge is the image's.
    placed, cut, _ = place(found, Window(86, 0, 128, 128), (300, 300, 3))
    np.testing.assert_array_equal(placed.boxes[0], [96, 100, 116, 128])
    assert cut.tolist() == [True, False, True]  # right edge, -, top edge


OBJECTS = [
    Box(20, 100, 40, 120, 1),   # inside the overlap of windows 0 and 1
    Box(50, 115, 70, 140, 2),   # across window 0's right edge
    Box(150, 60, 180, 200, 3),  # 140 px wide: cut by every window
    Box(110, 110, 150, 150, 1),  # on the corner of four windows
    Box(250, 250, 280, 290, 2),  # far from any edge
]


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.4])
def test_objects_cut_by_tile_edges_come_back_as_one_box_each(overlap):
    pixels = scene(300, 300, OBJECTS)
    calls: list = []
    found = run_view(oracle_model(calls=calls), pixels, PLAIN,
                     TileSpec(128, overlap))
    assert len(calls) == len(windows((300, 300), (128, 128), overlap))
    assert set(calls) == {(128, 128, 3)}
    assert as_boxes(found) == sorted(OBJECTS)


def test_the_whole_image_pass_adds_an_object_larger_than_every_tile():
    big = Box(20, 20, 280, 280, 1)
    pixels = scene(300, 300, [big])
    tiled = run_view(oracle_model(), pixels, PLAIN, TileSpec(128, 0.25))
    assert as_boxes(tiled) == [big]  # joined from its nine pieces
    both = run_view(oracle_model(), pixels, PLAIN,
                    TileSpec(128, 0.25, full_image=True))
    assert as_boxes(both) == [big]


def test_an_image_smaller_than_a_tile_is_padded_not_enlarged():
    pixels = scene(60, 90, [Box(10, 10, 30, 50, 2)])
    calls: list = []
    found = run_view(oracle_model(calls=calls), pixels, PLAIN,
                     TileSpec(128))
    assert calls == [(128, 128, 3)]
    assert as_boxes(found) == [Box(10, 10, 30, 50, 2)]


def one(box: list[float], score: float = 0.9) -> Detections:
    return Detections(np.array([box], np.float32), np.array([score], np.float32),
                      np.array([1], np.int32))


def test_pieces_join_only_where_their_windows_overlap_and_agree():
    # Windows A (rows 0-128) and C (rows 102-230) of a 300 x 300 image share
    # rows 102-128. An object's two pieces agree there and join; a box in A
    # ending at row 104 only touches C's piece: it is another object.
    shape = (300, 300, 3)
    a, c = Window(0, 0, 128, 128), Window(102, 0, 128, 128)
    object_in_a = place(one([90, 10, 128, 40]), a, shape)
    object_in_c = place(one([0, 10, 40, 40], 0.7), c, shape)  # rows 102-142
    assert object_in_a.cut.all() and object_in_c.cut.all()
    joined = join_tiles([object_in_a, object_in_c])
    assert as_boxes(joined) == [Box(90, 10, 142, 40, 1)]
    assert joined.scores.tolist() == [pytest.approx(0.9)]
    touching = place(one([60, 90, 104, 128]), a, shape)  # cut by A's right edge
    below = place(one([2, 90, 48, 127], 0.8), c, shape)  # rows 104-150
    assert touching.cut.all() and below.cut.all()
    assert len(join_tiles([touching, below]).scores) == 2


def test_distinct_objects_side_by_side_are_not_joined():
    # Two objects of one class touching a window edge from either side.
    shape = (300, 300, 3)
    left = place(one([10, 100, 40, 128]), Window(0, 0, 128, 128), shape)
    right = place(one([60, 0, 90, 22], 0.8), Window(0, 128, 128, 128), shape)
    assert left.cut.all() and right.cut.all()
    assert len(join_tiles([left, right]).scores) == 2


@pytest.mark.parametrize("size, overlap, message", [
    (8, 0.2, "at least 16"), (128, 0.95, r"\[0, 0.9\)"), (128, -0.1, "share")])
def test_bad_tile_settings_are_refused(size, overlap, message):
    with pytest.raises(TileError, match=message):
        TileSpec(size, overlap)
