"""Test-time views: flips map back exactly, scales are the size the
network sees, --tta parses or says what is wrong."""
from __future__ import annotations

import numpy as np
import pytest

from efficientdet_tf.fusion.fused import FusedPredictor, FusionOptions, run_view
from efficientdet_tf.fusion.merge import Detections
from efficientdet_tf.fusion.views import TtaError, TtaSpec, View, parse_tta
from tests.fusion.oracle import Box, as_boxes, oracle_model, scene

OBJECTS = [Box(10, 12, 40, 52, 1), Box(60, 70, 90, 95, 2)]


def test_a_flipped_views_boxes_map_back_exactly():
    # A 100 px wide image; in the flipped view a box spans x 10..30, so in
    # the original it spans 100-30..100-10.
    found = Detections(np.array([[5, 10, 25, 30]], np.float32),
                       np.array([0.8], np.float32), np.array([2], np.int32))
    back = View(1.0, True).unmap(found, (50, 100, 3), (50, 100, 3))
    np.testing.assert_array_equal(back.boxes, [[5, 70, 25, 90]])
    assert back.scores.tolist() == [pytest.approx(0.8)]
    assert back.classes.tolist() == [2]


def test_flip_tta_with_a_perfect_detector_returns_the_objects():
    pixels = scene(100, 120, OBJECTS)
    model = oracle_model()
    flipped = run_view(model, pixels, View(1.0, True), None)
    assert as_boxes(flipped) == sorted(OBJECTS)
    fused = FusedPredictor([model], FusionOptions(parse_tta("flip")))(pixels)
    assert as_boxes(fused) == sorted(OBJECTS)
    # Both views agree: WBF keeps the mean score, min(2, 2) / 2 = 1.
    np.testing.assert_allclose(fused.scores, 0.9, rtol=1e-6)


def test_a_smaller_scale_is_padded_back_to_the_plain_size():
    pixels = scene(100, 120, OBJECTS)
    calls: list = []
    found = run_view(oracle_model(calls=calls), pixels, View(0.5, False), None)
    assert calls == [(100, 120, 3)]  # the window of the plain run
    for got, want in zip(as_boxes(found), sorted(OBJECTS)):
        # A resize blends one edge pixel; x2 on the way back.
        assert np.abs(np.subtract(got[:4], want[:4])).max() <= 2
        assert got.label == want.label


def test_a_larger_scale_runs_in_windows_of_the_plain_size():
    pixels = scene(100, 120, OBJECTS)
    calls: list = []
    found = run_view(oracle_model(calls=calls), pixels, View(2.0, True), None)
    assert len(calls) > 1 and set(calls) == {(100, 120, 3)}
    got = as_boxes(found)
    assert [b.label for b in got] == [b.label for b in sorted(OBJECTS)]
    for g, want in zip(got, sorted(OBJECTS)):
        assert np.abs(np.subtract(g[:4], want[:4])).max() <= 1


@pytest.mark.parametrize("text, spec", [
    ("", TtaSpec()), ("none", TtaSpec()), ("flip", TtaSpec(True, (1.0,))),
    ("flip,scales=0.8:1.0:1.2", TtaSpec(True, (0.8, 1.0, 1.2))),
    ("scales=1.5", TtaSpec(False, (1.5,)))])
def test_tta_values(text, spec):
    assert parse_tta(text) == spec


def test_views_of_a_spec():
    assert TtaSpec(True, (0.5, 1.0)).views() == [
        View(0.5, False), View(0.5, True), View(1.0, False), View(1.0, True)]
    assert not TtaSpec().enabled and TtaSpec(False, (1.5,)).enabled


@pytest.mark.parametrize("text, message", [
    ("mirror", "unknown item 'mirror'"), ("scales=a:1", "must be numbers"),
    ("scales=0:1", r"in \(0, 4.0\]"), ("scales=1:1", "given once"),
    ("scales=", "unknown item")])
def test_bad_tta_values_say_what_to_write(text, message):
    with pytest.raises(TtaError, match=message):
        parse_tta(text)
