"""Anchor fitting: k-means recovers planted ratios, the fit raises coverage
where the defaults fail, and what it returns loads through ``--hparams``."""
from __future__ import annotations

import numpy as np
import pytest

from efficientdet_tf.config import ConfigError, get_config, parse_overrides
from efficientdet_tf.ops import anchor_fit
from efficientdet_tf.ops.anchor_coverage import best_anchor_iou
from efficientdet_tf.ops.anchors import anchor_boxes, aspect_ratio_pairs
from efficientdet_tf.ops.anchor_fit import fit_anchors
from tests.conftest import tiny_config
from tests.ops.test_anchor_coverage import box


def demo_config():
    """hparams/demo.yaml's anchors: 128 px, levels 3-5, anchor_scale 2."""
    return get_config("efficientdet-d0", {"image_size": 128, "max_level": 5,
                                          "anchor_scale": 2.0})


def elongated_boxes(count=2000, seed=0):
    """Small thin boxes, 3-6 px by 20-40 px, half standing, half lying,
    inside a 128 px image."""
    rng = np.random.default_rng(seed)
    thin, long = rng.uniform(3, 6, count), rng.uniform(20, 40, count)
    standing = rng.random(count) < 0.5
    height, width = np.where(standing, long, thin), np.where(standing, thin, long)
    return box(rng.uniform(height / 2, 128 - height / 2),
               rng.uniform(width / 2, 128 - width / 2), height, width)


def coverage(boxes, config):
    return float(np.mean(best_anchor_iou(boxes, config).iou >= 0.5))


def test_kmeans_recovers_planted_ratios():
    # 1:4, 1:1 and 4:1 in shares 60/30/10 %: a start from quantiles alone
    # puts two centroids into the big cluster and none into the small one.
    rng = np.random.default_rng(0)
    planted = np.array([0.25, 1.0, 4.0])
    ratio = planted[rng.choice(3, 3000, p=[0.6, 0.3, 0.1])] * np.exp(
        rng.normal(0, 0.1, 3000))
    size = rng.uniform(20, 200, 3000)
    boxes = box(np.full(3000, 256.0), np.full(3000, 256.0),
                size / np.sqrt(ratio), size * np.sqrt(ratio))
    widths, heights = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    centroids = anchor_fit._kmeans_log_ratios(
        np.log2(widths / heights), 3, np.random.default_rng(0))
    np.testing.assert_allclose(2.0 ** centroids, planted, rtol=0.1)


def test_fit_covers_small_elongated_boxes():
    boxes = elongated_boxes()
    fit = fit_anchors(boxes, demo_config())
    print(f"elongated boxes: coverage {fit.coverage_before:.3f} with the "
          f"defaults, {fit.coverage_after:.3f} fitted")
    assert fit.coverage_before < 0.05
    assert fit.coverage_after > fit.coverage_before + 0.3
    # Fitted anchors are elongated too, and small: at level 3 (stride 8) a
    # 3-6 px wide box needs an anchor_scale near 1, not 2.
    ratios = [w / h for w, h in fit.aspect_ratios]
    assert max(ratios) > 3 and min(ratios) < 1 / 3
    assert 0.5 < fit.anchor_scale < 1.5


def test_counts_kept_by_default_and_ratios_in_the_config_order():
    fit = fit_anchors(elongated_boxes(), demo_config())
    assert (len(fit.aspect_ratios), fit.num_scales) == (3, 3)
    assert not fit.anchors_per_location_changed
    assert not fit.yaml().startswith("#")
    # The config's ratios are [1, 2, 0.5]: slot 1 the widest, slot 2 the
    # tallest, so each head output keeps the kind of shape it was trained on.
    ratios = [w / h for w, h in fit.aspect_ratios]
    assert ratios[1] == max(ratios) and ratios[2] == min(ratios)
    for w, h in fit.aspect_ratios:  # fitted ratios have area 1 (to rounding)
        assert w * h == pytest.approx(1.0, abs=3e-3)
        assert (w, h) == (round(w, 3), round(h, 3))


def test_yaml_loads_through_hparams_to_the_reported_coverage(tmp_path):
    boxes, config = elongated_boxes(), demo_config()
    fit = fit_anchors(boxes, config)
    path = tmp_path / "anchors.yaml"
    path.write_text(fit.yaml())
    assert parse_overrides(str(path)) == fit.overrides()
    from_file = config.override(str(path))  # what --hparams=FILE does
    from_flags = config.override(",".join(  # what --hparams=k=v,... does
        f"{key}={value}" for key, value in fit.overrides().items()))
    for loaded in (from_file, from_flags):
        assert aspect_ratio_pairs(loaded.aspect_ratios) == fit.aspect_ratios
        assert (loaded.anchor_scale, loaded.num_scales) == (
            fit.anchor_scale, fit.num_scales)
        assert coverage(boxes, loaded) == fit.coverage_after
    assert coverage(boxes, config) == fit.coverage_before


def test_other_ratio_count_changes_the_anchors_per_location(tmp_path):
    boxes, config = elongated_boxes(), demo_config()
    fit = fit_anchors(boxes, config, num_ratios=5)
    assert len(fit.aspect_ratios) == 5 and fit.num_scales == 3
    assert fit.anchors_per_location_changed
    comment = fit.yaml().splitlines()[0]
    assert comment.startswith("# 15 anchors per location")
    assert "re-initialised" in comment
    path = tmp_path / "anchors.yaml"
    path.write_text(fit.yaml())
    assert coverage(boxes, config.override(str(path))) == fit.coverage_after
    # Same count, other split (5 ratios x 3 scales = 15 = 3 x 5) is no change
    # to the heads, only to the anchors.
    same_count = fit_anchors(boxes, config, num_ratios=1, num_scales=9)
    assert not same_count.anchors_per_location_changed


@pytest.mark.parametrize("jitter", [0.05, 0.3])
def test_never_worse_on_boxes_the_defaults_already_cover(jitter):
    # D0 anchors at 256 px, moved and resized by up to +-jitter.
    config = get_config("efficientdet-d0", {"image_size": 256})
    rng = np.random.default_rng(0)
    anchors = anchor_boxes(config)[rng.choice(len(anchor_boxes(config)), 3000)]
    height, width = (anchors[:, 2:] - anchors[:, :2]).T * rng.uniform(
        1 - jitter, 1 + jitter, (2, 3000))
    center_y, center_x = ((anchors[:, 2:] + anchors[:, :2]) / 2).T
    boxes = box(center_y + rng.uniform(-jitter, jitter, 3000) * height,
                center_x + rng.uniform(-jitter, jitter, 3000) * width,
                height, width)
    fit = fit_anchors(boxes, config)
    assert fit.coverage_before > 0.99
    assert fit.coverage_after >= fit.coverage_before
    if jitter == 0.05:  # all covered: nothing to gain, so no change
        assert fit.coverage_before == fit.coverage_after == 1.0
        assert fit.aspect_ratios == ((1.0, 1.0), (1.414, 0.707), (0.707, 1.414))
        assert fit.anchor_scale == 4.0


def test_keeps_the_config_exactly_when_rounding_it_would_lose_a_box():
    # A box equal to the anchor of ratio 2 (sqrt 2 wide, 1/sqrt 2 tall) has
    # IoU exactly 1 with it; rounded to 1.414 x 0.707 the IoU falls below 1.
    config = tiny_config(aspect_ratios=[1.0, 2.0])
    boxes = anchor_boxes(config)[1:2].astype(np.float64)
    fit = fit_anchors(boxes, config, match_threshold=1.0)
    assert fit.coverage_before == fit.coverage_after == 1.0
    assert fit.aspect_ratios == aspect_ratio_pairs([1.0, 2.0])
    assert fit.anchor_scale == 2.0


def test_same_seed_same_fit_and_coverage_over_all_boxes(monkeypatch):
    monkeypatch.setattr(anchor_fit, "MAX_SEARCH_BOXES", 500)  # subsample
    boxes, config = elongated_boxes(), demo_config()
    first = fit_anchors(boxes, config, seed=3)
    assert fit_anchors(boxes, config, seed=3) == first
    fitted = config.override(first.overrides())
    assert coverage(boxes, fitted) == first.coverage_after


def test_boxes_without_a_finite_area_are_ignored():
    boxes, config = elongated_boxes(500), demo_config()
    unusable = np.array([[10, 10, 10, 30], [10, 10, 30, 10], [5, 5, 1, 1],
                         [np.nan, 0, 4, 4], [0, 0, np.inf, 4]])
    assert (fit_anchors(np.concatenate([boxes, unusable]), config)
            == fit_anchors(boxes, config))


@pytest.mark.parametrize("boxes, options, message", [
    (np.zeros((3, 4)), {}, "no boxes with an area"),
    (np.zeros((3, 3)), {}, r"\[N, 4\]"),
    (elongated_boxes(10), {"num_ratios": 0}, "num_ratios"),
    (elongated_boxes(10), {"num_scales": 1.5}, "num_scales"),
    (elongated_boxes(10), {"match_threshold": 0.0}, "match_threshold"),
])
def test_bad_input_raises_config_error(boxes, options, message):
    with pytest.raises(ConfigError, match=message):
        fit_anchors(boxes, demo_config(), **options)
