"""Merging detections of one image: hand-computed WBF, NMS, soft-NMS and IoU
cases.

Most boxes span y in [0, 10], so an IoU is the ratio of x overlap to x
union. Expected numbers are worked out by hand in the tests, except in two
that compare runs instead: one with the parts in every order, and one with
WBF read literally from the paper.
"""
from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.fusion.merge import (METHODS, Detections, MergeError,
                                          box_iou, merge, nms, pairwise_iou,
                                          soft_nms, weighted_boxes_fusion)


def part(*rows: tuple[float, float, float, int]) -> Detections:
    """Detections of boxes ``[0, xmin, 10, xmax]``: rows of (xmin, xmax,
    score, class)."""
    return Detections(np.array([[0.0, x0, 10.0, x1] for x0, x1, _, _ in rows
                                ]).reshape(-1, 4),
                      np.array([s for _, _, s, _ in rows]),
                      np.array([c for _, _, _, c in rows], np.int64))


def assert_detections(found: Detections, boxes: list, scores: list,
                      classes: list) -> None:
    np.testing.assert_allclose(found.boxes, np.reshape(boxes, (-1, 4)),
                               atol=1e-5)
    np.testing.assert_allclose(found.scores, scores, atol=1e-6)
    np.testing.assert_array_equal(found.classes, classes)


# IoU

def test_iou_of_unit_offset_boxes_is_a_third():
    # [0, 0, 2, 2] and [0, 1, 2, 3]: intersection 2, union 4 + 4 - 2 = 6
    assert box_iou(np.array([0, 0, 2, 2]), np.array([[0, 1, 2, 3]]))[0] == (
        pytest.approx(1 / 3))


def test_pairwise_iou_hand_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]])
    b = np.array([[0, 0, 10, 10], [0, 5, 10, 15], [20, 20, 30, 30]])
    # [0,0,10,10] vs [0,5,10,15]: 50 / 150; [0,0,2,2] inside [0,0,10,10]: 4/100
    np.testing.assert_allclose(pairwise_iou(a, b), [[1, 1 / 3, 0],
                                                    [0.04, 0, 0]])
    assert pairwise_iou(a, np.zeros((0, 4))).shape == (2, 0)


def test_zero_area_boxes_have_iou_zero_without_warnings():
    with np.errstate(all="raise"):
        iou = box_iou(np.array([5, 5, 5, 5]),
                      np.array([[5, 5, 5, 5], [0, 0, 10, 10], [5, 0, 5, 10]]))
    np.testing.assert_array_equal(iou, [0, 0, 0])
    # a zero-width box crossing a zero-height one: both areas and their
    # intersection are 0, so each stays its own cluster
    lines = [Detections([[0, 5, 10, 5]], [0.9], [1]),
             Detections([[5, 0, 5, 10]], [0.8], [1])]
    assert_detections(weighted_boxes_fusion(lines),
                      [[0, 5, 10, 5], [5, 0, 5, 10]], [0.45, 0.4], [1, 1])


# Weighted boxes fusion

def test_two_overlapping_boxes_fuse_to_their_score_weighted_average():
    # IoU of x [0, 10] and [2, 12]: 8 / 12 > 0.55
    found = weighted_boxes_fusion([part((0, 10, 0.9, 1)),
                                   part((2, 12, 0.6, 1))])
    x0 = (0.9 * 0 + 0.6 * 2) / 1.5   # 0.8
    x1 = (0.9 * 10 + 0.6 * 12) / 1.5  # 10.8
    assert_detections(found, [0, x0, 10, x1], [(0.9 + 0.6) / 2 * 2 / 2], [1])


def test_a_box_found_by_one_of_two_models_has_its_score_halved():
    found = weighted_boxes_fusion([part((0, 10, 0.8, 1)), part()])
    assert_detections(found, [0, 0, 10, 10], [0.8 * 1 / 2], [1])


def test_a_models_duplicate_box_counts_once_at_its_best_score():
    # Model a gives the object twice (a soft-NMS duplicate at 0.3), model b
    # once: (0.9 + 0.6) / 2 models; the paper's mean would give
    # (0.9 + 0.3 + 0.6) / 3 * min(3, 2) / 2 = 0.6.
    a = Detections(np.array([[0, 0, 10, 10], [0, 0, 10, 11]], np.float32),
                   np.array([0.9, 0.3], np.float32), np.array([1, 1]))
    b = Detections(np.array([[0, 0, 11, 10]], np.float32),
                   np.array([0.6], np.float32), np.array([1]))
    found = weighted_boxes_fusion([a, b])
    assert len(found.scores) == 1
    assert found.scores[0] == pytest.approx(0.75)
    # Coordinates still weigh every box by its score.
    np.testing.assert_allclose(found.boxes[0], [0, 0, (9 + 3 + 6.6) / 1.8,
                                                (9 + 3.3 + 6) / 1.8], rtol=1e-6)


def test_non_overlapping_boxes_stay_apart():
    # IoU of x [0, 10] and [6, 16]: 4 / 16 < 0.55
    found = weighted_boxes_fusion([part((0, 10, 0.9, 1)),
                                   part((6, 16, 0.6, 1))])
    assert_detections(found, [[0, 0, 10, 10], [0, 6, 10, 16]],
                      [0.9 / 2, 0.6 / 2], [1, 1])


def test_classes_never_mix():
    for method in METHODS:
        found = merge([part((0, 10, 0.9, 1)), part((0, 10, 0.6, 2))], method)
        np.testing.assert_array_equal(found.classes, [1, 2], err_msg=method)
        np.testing.assert_allclose(found.boxes, [[0, 0, 10, 10]] * 2)


def test_weights_move_the_fused_box_and_scale_the_score():
    # weighted scores 3 * 0.8 = 2.4 and 1 * 0.6 = 0.6; IoU 8 / 12
    found = weighted_boxes_fusion([part((0, 10, 0.8, 1)),
                                   part((2, 12, 0.6, 1))], weights=(3, 1))
    x0 = (2.4 * 0 + 0.6 * 2) / 3.0    # 0.4 (equal weights: 1.2 / 1.4)
    x1 = (2.4 * 10 + 0.6 * 12) / 3.0  # 10.4
    score = (2.4 + 0.6) / 2 * min(2, 2) / (3 + 1)
    assert_detections(found, [0, x0, 10, x1], [score], [1])


def test_a_box_joins_a_cluster_it_overlaps_only_through_the_fused_box():
    # A [0, 10] 0.9 and B [2, 12] 0.8 fuse to [1.6 / 1.7, 18.6 / 1.7] =
    # [0.941, 10.941]; C [3.5, 13.5]: IoU with A 6.5 / 13.5 = 0.48, with the
    # fused box 7.441 / 12.559 = 0.59 > 0.55, so it joins.
    found = weighted_boxes_fusion([part((0, 10, 0.9, 1)),
                                   part((2, 12, 0.8, 1)),
                                   part((3.5, 13.5, 0.7, 1))])
    x0 = (0.8 * 2 + 0.7 * 3.5) / 2.4
    x1 = (0.9 * 10 + 0.8 * 12 + 0.7 * 13.5) / 2.4
    assert_detections(found, [0, x0, 10, x1], [2.4 / 3 * 3 / 3], [1])


def test_a_box_overlapping_only_the_first_box_starts_its_own_cluster():
    # C [-2.5, 7.5]: IoU with A [0, 10] 7.5 / 12.5 = 0.6, with the fused box
    # [0.941, 10.941] 6.559 / 13.441 = 0.49 < 0.55, so it stays apart.
    found = weighted_boxes_fusion([part((0, 10, 0.9, 1)),
                                   part((2, 12, 0.8, 1)),
                                   part((-2.5, 7.5, 0.7, 1))])
    assert_detections(found, [[0, 1.6 / 1.7, 10, 18.6 / 1.7],
                              [0, -2.5, 10, 7.5]],
                      [(0.9 + 0.8) / 2 * 2 / 3, 0.7 * 1 / 3], [1, 1])


def test_a_box_joins_the_fused_box_it_overlaps_most():
    # [0, 10] and [3, 13] stay apart (IoU 7 / 13 = 0.54); [2, 12] overlaps
    # them with IoU 8 / 12 = 0.67 and 9 / 11 = 0.82, and joins the second.
    found = weighted_boxes_fusion([part((0, 10, 0.9, 1), (3, 13, 0.8, 1)),
                                   part((2, 12, 0.7, 1))])
    assert_detections(found, [[0, (0.8 * 3 + 0.7 * 2) / 1.5, 10,
                               (0.8 * 13 + 0.7 * 12) / 1.5],
                              [0, 0, 10, 10]],
                      [(0.8 + 0.7) / 2 * 2 / 2, 0.9 * 1 / 2], [1, 1])


def test_the_order_of_parts_does_not_change_the_result():
    rng = np.random.default_rng(0)
    parts = []
    for _ in range(3):  # jittered copies of 4 objects; distinct scores
        corners = np.array([[0, 0, 50, 50], [0, 30, 50, 80], [60, 60, 90, 90],
                            [10, 10, 40, 40]], float)
        parts.append(Detections(corners + rng.normal(0, 3, corners.shape),
                                rng.uniform(0.3, 1, 4), np.array([1, 1, 2, 1])))
    for method in METHODS:
        expected = merge(parts, method)
        assert len(expected.scores) >= 3
        for order in itertools.permutations(parts):
            found = merge(list(order), method)
            np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-4)
            np.testing.assert_allclose(found.scores, expected.scores,
                                       atol=1e-6)
            np.testing.assert_array_equal(found.classes, expected.classes)


def paper_wbf(parts: list[Detections], weights: list[float],
              threshold: float) -> list[tuple]:
    """WBF read literally from the paper, slowly: lists of boxes, each fused
    box recomputed from its whole cluster; (class, score, box) rows. The
    score counts each part's best box in the cluster (the paper's mean
    times min(T, N) / N when a part gives one box per object)."""
    def iou(a, b):
        h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
                 - h * w)
        return h * w / union if union > 0 else 0.0
    rows = []
    for cls in sorted({int(c) for p in parts for c in p.classes}):
        boxes = sorted(((s * w, list(b), m) for m, (p, w) in
                        enumerate(zip(parts, weights))
                        for b, s, c in zip(p.boxes, p.scores, p.classes)
                        if c == cls), key=lambda r: -r[0])
        clusters, fused = [], []
        for score, box, part in boxes:
            overlaps = [iou(box, f) for f in fused]
            if overlaps and max(overlaps) > threshold:
                k = overlaps.index(max(overlaps))
                clusters[k].append((score, box, part))
            else:
                k = len(clusters)
                clusters.append([(score, box, part)])
                fused.append(None)
            total = sum(s for s, _, _ in clusters[k])
            fused[k] = [sum(s * b[i] for s, b, _ in clusters[k]) / total
                        for i in range(4)]
        for cluster, box in zip(clusters, fused):
            best = {}
            for s, _, part in cluster:
                best[part] = max(best.get(part, 0.0), s)
            rows.append((cls, sum(best.values()) / sum(weights), box))
    return sorted(rows, key=lambda r: -r[1])


def test_wbf_matches_a_literal_reading_of_the_paper():
    rng = np.random.default_rng(1)
    objects = rng.uniform(0, 100, (12, 2))
    parts = []
    for _ in range(4):  # jittered objects of 3 classes, plus random boxes
        corners = np.concatenate([objects, objects + 20], axis=1)
        noise = np.sort(rng.uniform(0, 120, (8, 2, 2)), axis=1).reshape(-1, 4)
        parts.append(Detections(
            np.concatenate([corners + rng.normal(0, 2, corners.shape), noise]),
            rng.uniform(0.05, 1, 20), rng.integers(1, 4, 20)))
    weights = [2.0, 1.0, 0.5, 1.5]
    expected = paper_wbf(parts, weights, 0.55)
    found = weighted_boxes_fusion(parts, weights)
    assert len(expected) < 4 * 20  # some boxes were fused
    np.testing.assert_array_equal(found.classes, [r[0] for r in expected])
    np.testing.assert_allclose(found.scores, [r[1] for r in expected],
                               rtol=1e-6)
    np.testing.assert_allclose(found.boxes, [r[2] for r in expected],
                               atol=1e-4)


def test_skip_score_drops_boxes_by_their_raw_score():
    # 0.2 < 0.3 is dropped although its weighted score 2 * 0.2 is not
    found = weighted_boxes_fusion([part((0, 10, 0.9, 1)),
                                   part((2, 12, 0.2, 1), (30, 40, 0.5, 1))],
                                  weights=(1, 2), skip_score=0.3)
    assert_detections(found, [[0, 30, 10, 40], [0, 0, 10, 10]],
                      [2 * 0.5 / 3, 0.9 / 3], [1, 1])


@pytest.mark.parametrize("method", METHODS)
def test_empty_inputs_give_empty_detections(method):
    for parts in ([], [Detections.empty()],
                  [Detections([], [], []), part()]):
        found = merge(parts, method)
        assert found.boxes.shape == (0, 4) and found.boxes.dtype == np.float32
        assert found.scores.shape == (0,) and found.scores.dtype == np.float32
        assert found.classes.shape == (0,) and found.classes.dtype == np.int32


@pytest.mark.parametrize("weights, given", [
    ((1,), "(1,)"), ((1, -1), "(1, -1)"), ((0, 0), "(0, 0)"),
    ((1, float("nan")), "nan")])
def test_bad_weights_are_refused_with_what_was_given(weights, given):
    for method in METHODS:
        with pytest.raises(MergeError, match=re.escape(given)):
            merge([part((0, 10, 0.9, 1)), part()], method, weights)


def test_bad_detections_and_names_are_refused():
    with pytest.raises(MergeError, match=r"part 1 row 0: box \[0.0, 10.0"):
        nms([part(), part((10, 5, 0.9, 1))])
    with pytest.raises(MergeError, match=r"part 0: expected boxes \[N, 4\]"):
        nms([Detections(np.zeros((2, 4)), np.ones(3), np.ones(3, int))])
    with pytest.raises(MergeError, match="known: wbf, nms, soft_nms"):
        merge([], "average")
    assert issubclass(MergeError, EfficientDetError)


# NMS and soft-NMS

def test_nms_keeps_the_best_box_of_each_overlapping_group_per_class():
    # [1, 11] overlaps [0, 10] with IoU 9 / 11 > 0.5 and is dropped; the
    # same box of class 2 is kept; [20, 30] overlaps nothing.
    found = nms([part((0, 10, 0.9, 1), (20, 30, 0.7, 1)),
                 part((1, 11, 0.8, 1), (1, 11, 0.85, 2))])
    assert_detections(found, [[0, 0, 10, 10], [0, 1, 10, 11],
                              [0, 20, 10, 30]], [0.9, 0.85, 0.7], [1, 2, 1])


def test_nms_compares_weighted_scores():
    found = nms([part((0, 10, 0.9, 1)), part((1, 11, 0.5, 1))],
                weights=(1, 2))
    assert_detections(found, [0, 1, 10, 11], [2 * 0.5], [1])


def test_soft_nms_decays_overlapping_scores_by_a_gaussian():
    # [5, 15] overlaps [0, 10] with IoU 5 / 15 = 1/3
    parts = [part((0, 10, 0.9, 1), (0, 10, 0.5, 2)), part((5, 15, 0.8, 1))]
    decayed = 0.8 * math.exp(-(1 / 3) ** 2 / 0.5)  # 0.641
    assert_detections(soft_nms(parts, sigma=0.5),
                      [[0, 0, 10, 10], [0, 5, 10, 15], [0, 0, 10, 10]],
                      [0.9, decayed, 0.5], [1, 1, 2])
    # sigma 0.01: 0.8 * exp(-11.1) = 1.2e-5 < min_score 0.001, dropped
    assert_detections(soft_nms(parts, sigma=0.01),
                      [[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.5], [1, 2])


def test_soft_nms_picks_by_decayed_score():
    # After [0, 10] is kept, [10, 20] (0.8, IoU 0 with it) keeps its score
    # and [5, 15] (0.85, IoU 1/3) drops to 0.85 * exp(-(1/3)^2 / 0.5) =
    # 0.681 < 0.8, so [10, 20] is kept next; then [5, 15] is decayed again
    # by its IoU 1/3 with [10, 20].
    found = soft_nms([part((0, 10, 0.9, 1), (5, 15, 0.85, 1),
                           (10, 20, 0.8, 1))])
    factor = math.exp(-(1 / 3) ** 2 / 0.5)
    assert_detections(found, [[0, 0, 10, 10], [0, 10, 10, 20],
                              [0, 5, 10, 15]],
                      [0.9, 0.8, 0.85 * factor * factor], [1, 1, 1])
