"""Models x views x tiles: the composition's bookkeeping (weights, class
agreement, the arrays run_inference reads)."""
from __future__ import annotations

import numpy as np
import pytest

from efficientdet_tf.fusion.fused import (FusedDetector, FusedPredictor,
                                          FusionError, FusionOptions)
from efficientdet_tf.fusion.views import parse_tta
from efficientdet_tf.serving.inference import DecodedImage
from tests.fusion.oracle import Box, as_boxes, oracle_model, scene

OBJECTS = [Box(10, 10, 40, 50, 1), Box(50, 60, 90, 110, 3)]


def test_one_plain_model_is_the_model_alone():
    pixels = scene(100, 120, OBJECTS)
    calls: list = []
    found = FusedPredictor([oracle_model(calls=calls)])(pixels)
    assert calls == [(100, 120, 3)]
    assert as_boxes(found) == sorted(OBJECTS)


def test_an_ensemble_weighs_each_model():
    pixels = scene(100, 120, OBJECTS)
    models = [oracle_model("a", 0.9), oracle_model("b", 0.3)]
    found = FusedPredictor(models, FusionOptions(weights=(3.0, 1.0)))(pixels)
    assert as_boxes(found) == sorted(OBJECTS)
    # WBF: (3 * 0.9 + 1 * 0.3) / 2 boxes * min(2, 2) / (3 + 1).
    np.testing.assert_allclose(found.scores, (2.7 + 0.3) / 2 * 2 / 4,
                               rtol=1e-6)


def test_each_view_of_each_model_is_one_part():
    pixels = scene(100, 120, OBJECTS)
    calls: list = []
    models = [oracle_model("a", calls=calls), oracle_model("b", calls=calls)]
    FusedPredictor(models, FusionOptions(parse_tta("flip")))(pixels)
    assert len(calls) == 4


def test_weights_must_match_the_models():
    with pytest.raises(FusionError, match="1 value.*2 model"):
        FusedPredictor([oracle_model(), oracle_model()],
                       FusionOptions(weights=(1.0,)))


def test_models_of_different_classes_are_refused():
    other = oracle_model("other")
    other = other.__class__(other.path, other.run,
                            other.config.override({"num_classes": 5}), {})
    with pytest.raises(FusionError, match="different classes"):
        FusedPredictor([oracle_model(), other])


def test_an_unknown_method_is_named():
    with pytest.raises(FusionError, match="wbf, nms, soft_nms"):
        FusionOptions(method="vote")


def test_an_iou_threshold_goes_to_the_merge_that_has_one():
    pixels = scene(100, 120, OBJECTS)
    models = [oracle_model("a"), oracle_model("b")]
    for method in ("wbf", "nms"):
        found = FusedPredictor(models, FusionOptions(
            method=method, iou_threshold=0.9))(pixels)
        assert as_boxes(found) == sorted(OBJECTS)
    with pytest.raises(FusionError, match="does not apply to soft_nms"):
        FusionOptions(method="soft_nms", iou_threshold=0.5)


def test_the_detector_pads_images_to_the_longest_list():
    with_two = scene(100, 120, OBJECTS)
    with_none = scene(80, 80, [])
    detector = FusedDetector(FusedPredictor([oracle_model()]))
    outputs = detector.detect([DecodedImage(b"", with_two),
                               DecodedImage(b"", with_none)])
    assert outputs["num_detections"].tolist() == [2, 0]
    assert outputs["detection_boxes"].shape == (2, 2, 4)
    assert outputs["detection_classes"].dtype == np.int32
    assert sorted(outputs["detection_classes"][0].tolist()) == [1, 3]
