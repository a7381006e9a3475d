"""Error analysis on hand-made COCO data: curves agree with pycocotools'
numbers, the confusion matrix and error cases find what was planted, and
the F1 curves equal values worked out by hand."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from efficientdet_tf.evaluation import analysis, matching
from efficientdet_tf.evaluation import coco_metrics as cm

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"},
              {"id": 3, "name": "bird"}]
NAMES = ["cat", "dog", "bird"]
CATEGORY_IDS = [1, 2, 3]


def dataset(annotations, images=6, categories=CATEGORIES):
    """A COCO ground truth from ``(image_id, category_id, bbox[, crowd])``."""
    return cm.coco_from_dict({
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 200,
                    "width": 200} for i in range(1, images + 1)],
        "categories": categories,
        "annotations": [
            {"id": n, "image_id": a[0], "category_id": a[1],
             "bbox": list(a[2]), "area": a[2][2] * a[2][3],
             "iscrowd": a[3] if len(a) > 3 else 0}
            for n, a in enumerate(annotations, 1)]})


def detection(image_id, category_id, bbox, score=1.0):
    return {"image_id": image_id, "category_id": category_id,
            "bbox": list(bbox), "score": score}


# Image 4 is empty; image 5 holds only a crowd region.
TRUTH = [(1, 1, (10, 10, 50, 50)), (1, 2, (100, 100, 60, 40)),
         (2, 1, (20, 30, 40, 60)), (2, 3, (120, 20, 30, 30)),
         (3, 2, (50, 50, 80, 80)), (5, 1, (0, 0, 100, 100), 1)]


def perfect(truth=TRUTH):
    return [detection(a[0], a[1], a[2]) for a in truth
            if len(a) < 4 or not a[3]]


def matrix_of(results, **kwargs):
    return matching.confusion_matrix(dataset(TRUTH), results, None,
                                     CATEGORY_IDS, score_threshold=0.5,
                                     **kwargs)


def test_perfect_predictions_ap_one_and_diagonal_matrix():
    metrics = cm.coco_metrics(dataset(TRUTH), perfect())
    assert metrics["AP"] == pytest.approx(1.0)
    matrix = matrix_of(perfect())
    assert matrix.dtype == np.int64 and matrix.shape == (4, 4)
    np.testing.assert_array_equal(matrix, np.diag([2, 2, 1, 0]))


def test_swapped_class_fills_one_cell():
    results = [dict(r, category_id=2) if r["category_id"] == 1 else r
               for r in perfect()]
    expected = np.diag([0, 2, 1, 0])
    expected[0, 1] = 2
    np.testing.assert_array_equal(matrix_of(results), expected)


def test_false_positive_and_missed_go_to_background():
    results = [r for r in perfect() if r["category_id"] != 3]
    results.append(detection(4, 3, (10, 10, 30, 30), 0.9))
    results.append(detection(4, 1, (10, 10, 30, 30), 0.4))  # below 0.5
    expected = np.diag([2, 2, 0, 0])
    expected[3, 2] = 1  # the bird on empty background
    expected[2, 3] = 1  # the bird missed
    np.testing.assert_array_equal(matrix_of(results), expected)


def test_a_detection_shifted_off_its_object_is_both_errors():
    results = perfect()
    results[0] = dict(results[0], bbox=[40, 40, 50, 50])  # IoU ~0.22
    matrix = matrix_of(results)
    assert matrix[0, 0] == 1 and matrix[0, 3] == 1 and matrix[3, 0] == 1


def test_crowd_box_and_its_detection_count_nowhere():
    results = perfect() + [detection(5, 1, (10, 10, 30, 30), 0.9),
                           detection(5, 2, (40, 40, 50, 50), 0.8)]
    np.testing.assert_array_equal(matrix_of(results), np.diag([2, 2, 1, 0]))


def test_match_image_prefers_higher_iou_and_real_objects_over_crowd():
    truths = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [0, 0, 40, 40]], float)
    crowd = np.array([False, False, True])
    # Detection 0 overlaps truth 1 (IoU 0.82) more than truth 0 (0.43);
    # detection 1 equals truth 0; detection 2 lies inside the crowd only.
    detections = np.array([[4, 0, 10, 10], [0, 0, 10, 10], [20, 20, 10, 10]],
                          float)
    match = matching.match_image(truths, crowd, detections, 0.5)
    assert sorted(match.pairs) == [(0, 1), (1, 0)]
    assert match.missed == [] and match.unmatched == []
    assert matching.normalise_rows(np.array([[1, 3], [0, 0]])).tolist() == [
        [0.25, 0.75], [0.0, 0.0]]


def noisy_evaluation():
    """A seeded, imperfect evaluation over 3 classes with ground truth and
    a fourth ("fish") without: jittered boxes, random scores, false
    positives, misses."""
    rng = np.random.default_rng(0)
    truth, results = [], []
    for image_id in range(1, 11):
        for _ in range(rng.integers(2, 6)):
            size = rng.uniform(8, 120, 2)
            xy = rng.uniform(0, 200 - size)
            category = int(rng.integers(1, 4))
            truth.append((image_id, category, tuple(np.r_[xy, size])))
            if rng.random() < 0.85:
                jitter = np.r_[xy + rng.normal(0, 0.08, 2) * size, size]
                label = category if rng.random() < 0.9 else 1 + category % 3
                results.append(detection(image_id, label, jitter,
                                         float(rng.random())))
        for _ in range(2):
            box = np.r_[rng.uniform(0, 150, 2), rng.uniform(10, 50, 2)]
            results.append(detection(image_id, int(rng.integers(1, 5)), box,
                                     float(rng.random() * 0.6)))
    categories = CATEGORIES + [{"id": 4, "name": "fish"}]
    return dataset(truth, images=10, categories=categories), results


def test_pr_curve_areas_are_the_reported_aps():
    ground_truth, results = noisy_evaluation()
    metrics = cm.coco_metrics(ground_truth, results)
    evaluator = cm.run_cocoeval(ground_truth, results)
    names = NAMES + ["fish"]
    curves = analysis.pr_curves(evaluator, names)
    assert curves.recall.shape == (101,)
    assert curves.precision_50.shape == curves.precision_mean.shape == (4, 101)
    for k, name in enumerate(names[:3]):
        assert not np.isnan(curves.precision_mean[k]).any()
        assert curves.precision_mean[k].mean() == pytest.approx(
            metrics[f"AP_/{name}"], abs=1e-9)
        assert curves.ap[k] == pytest.approx(metrics[f"AP_/{name}"], abs=1e-9)
        assert curves.precision_50[k].mean() == pytest.approx(
            curves.ap_50[k], abs=1e-12)
    assert 0 < curves.ap[0] < curves.ap_50[0] < 1
    assert metrics["AP_/fish"] == -1.0  # no ground truth: NaN here
    assert np.isnan(curves.ap[3]) and np.isnan(curves.precision_50[3]).all()
    assert np.nanmean(curves.ap) == pytest.approx(metrics["AP"], abs=1e-9)
    assert np.nanmean(curves.ap_50) == pytest.approx(metrics["AP50"],
                                                     abs=1e-9)
    rows = analysis.per_class_table(evaluator, names)
    for column in ("APs", "APm"):
        assert np.nanmean([r[column] for r in rows]) == pytest.approx(
            metrics[column], abs=1e-9)
    with pytest.raises(ValueError, match="2 class names for 4"):
        analysis.pr_curves(evaluator, names[:2])


def test_run_cocoeval_empty_results_and_unknown_images():
    ground_truth = dataset(TRUTH)
    curves = analysis.pr_curves(cm.run_cocoeval(ground_truth, []), NAMES)
    assert curves.ap.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="not in the ground truth"):
        cm.run_cocoeval(ground_truth, [detection(99, 1, (0, 0, 5, 5))])


def test_f1_curves_by_hand():
    # cat: 4 objects (a crowd region besides), 5 counted detections;
    # dog: 1 object found; bird: nothing at all.
    truth = [(1, 1, (0, 0, 20, 20)), (1, 1, (50, 0, 20, 20)),
             (2, 1, (0, 0, 20, 20)), (2, 1, (50, 0, 20, 20)),
             (1, 2, (100, 100, 30, 30)), (2, 1, (100, 100, 50, 50), 1)]
    results = [detection(1, 1, (0, 0, 20, 20), 0.9),       # hit
               detection(1, 1, (150, 150, 20, 20), 0.8),   # false positive
               detection(2, 1, (110, 110, 20, 20), 0.85),  # on the crowd
               detection(2, 1, (0, 0, 20, 20), 0.7),       # hit
               detection(2, 1, (50, 0, 20, 20), 0.6),      # hit
               detection(2, 1, (0, 150, 20, 20), 0.5),     # false positive
               detection(1, 2, (100, 100, 30, 30), 0.95)]  # hit
    evaluator = cm.run_cocoeval(dataset(truth, images=2), results)
    f1 = analysis.f1_curves(evaluator, NAMES)
    cat = f1.classes[0]
    np.testing.assert_allclose(cat.thresholds, [0.9, 0.8, 0.7, 0.6, 0.5])
    np.testing.assert_allclose(cat.precision, [1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(cat.recall, [1 / 4, 1 / 4, 1 / 2, 3 / 4, 3 / 4])
    np.testing.assert_allclose(cat.f1, [0.4, 1 / 3, 4 / 7, 0.75, 2 / 3])
    assert (cat.best_threshold, cat.best_f1) == (0.6, pytest.approx(0.75))
    assert (f1.best_threshold[1], f1.best_f1[1]) == (0.95, 1.0)
    assert np.isnan(f1.best_threshold[2]) and np.isnan(f1.best_f1[2])
    np.testing.assert_allclose(f1.overall.thresholds,
                               [0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    np.testing.assert_allclose(f1.overall.f1,
                               [1 / 3, 4 / 7, 1 / 2, 2 / 3, 0.8, 8 / 11])
    assert f1.overall_best_threshold == 0.6
    assert f1.overall_best_f1 == pytest.approx(0.8)


def test_f1_ties_share_one_threshold_and_no_detection_is_zero():
    truth = [(1, 1, (0, 0, 20, 20)), (1, 2, (50, 50, 20, 20))]
    results = [detection(1, 1, (100, 100, 20, 20), 0.9),
               detection(1, 1, (0, 0, 20, 20), 0.9)]
    f1 = analysis.f1_curves(
        cm.run_cocoeval(dataset(truth, images=1), results), NAMES)
    cat = f1.classes[0]
    assert cat.thresholds.tolist() == [0.9]
    assert cat.precision.tolist() == [0.5] and cat.recall.tolist() == [1.0]
    assert cat.best_f1 == pytest.approx(2 / 3)
    dog = f1.classes[1]  # ground truth, no detection
    assert dog.thresholds.size == 0 and dog.best_f1 == 0.0
    assert math.isnan(dog.best_threshold)


def test_find_errors_returns_the_planted_cases_ranked():
    truth = [(1, 1, (0, 0, 40, 40)), (1, 2, (100, 100, 40, 40)),
             (2, 1, (0, 0, 10, 10)), (2, 1, (50, 50, 60, 60)),
             (2, 1, (120, 0, 30, 30)), (2, 1, (0, 120, 20, 20))]
    results = [detection(1, 1, (0, 0, 40, 40), 0.95),
               detection(1, 1, (100, 100, 40, 40), 0.7),  # a dog called cat
               detection(3, 1, (0, 0, 20, 20), 0.9),
               detection(3, 1, (30, 0, 20, 20), 0.6),
               detection(3, 1, (60, 0, 20, 20), 0.8),
               detection(3, 1, (90, 0, 20, 20), 0.4),
               detection(3, 2, (0, 90, 20, 20), 0.5),
               detection(3, 2, (0, 150, 20, 20), 0.1)]  # below threshold
    errors = matching.find_errors(dataset(truth, images=3), results, None,
                                  CATEGORY_IDS, score_threshold=0.3)
    summary = [(e.kind, e.image_id, e.category_id, e.score,
                e.other_category_id) for e in errors]
    assert summary == [
        ("false_positive", 3, 1, 0.9, None),
        ("false_positive", 3, 1, 0.8, None),
        ("false_positive", 3, 1, 0.6, None),
        ("false_positive", 3, 2, 0.5, None),
        ("wrong_class", 1, 2, 0.7, 1),
        ("missed", 2, 1, None, None),
        ("missed", 2, 1, None, None),
        ("missed", 2, 1, None, None)]
    assert [e.box_xywh for e in errors[-3:]] == [
        (50, 50, 60, 60), (120, 0, 30, 30), (0, 120, 20, 20)]
    assert errors[4].box_xywh == (100, 100, 40, 40)
    one = matching.find_errors(dataset(truth, images=3), results, [2],
                               CATEGORY_IDS, score_threshold=0.3,
                               per_class=1)
    assert [(e.kind, e.box_xywh) for e in one] == [("missed",
                                                    (50, 50, 60, 60))]


def test_per_class_table_markdown_and_csv():
    results = perfect() + [detection(2, 2, (150, 150, 20, 20), 0.3)]
    evaluator = cm.run_cocoeval(dataset(TRUTH), results,
                                      image_ids=[1, 2, 3, 4, 5])
    rows = analysis.per_class_table(evaluator, NAMES,
                                    analysis.f1_curves(evaluator, NAMES))
    assert [tuple(r) for r in rows] == [analysis.TABLE_COLUMNS] * 3
    cat, dog, bird = rows
    assert (cat["class"], cat["category_id"]) == ("cat", 1)
    assert cat["AP"] == pytest.approx(1.0) and cat["AP50"] == 1.0
    assert cat["gt_boxes"] == 2 and cat["detections"] == 2  # crowd left out
    assert dog["detections"] == 3
    assert math.isnan(bird["APl"]) and math.isnan(bird["APm"])
    assert bird["APs"] == pytest.approx(1.0)  # 30 x 30 is small

    markdown = analysis.table_markdown(rows).splitlines()
    assert markdown[0] == ("| class | category_id | AP | AP50 | AP75 | APs | "
                           "APm | APl | gt_boxes | detections | best_f1 | "
                           "f1_threshold |")
    assert markdown[1].startswith("|---|---:|")
    assert markdown[4] == ("| bird | 3 | 1.0000 | 1.0000 | 1.0000 | 1.0000 | "
                           "n/a | n/a | 1 | 1 | 1.0000 | 1.0000 |")
    # dog: 2 perfect detections and a 0.3 one on background; F1 is best
    # (1.0) keeping only the perfect ones, whose score is 1.
    assert rows[1]["best_f1"] == 1.0 and rows[1]["f1_threshold"] == 1.0

    parsed = list(csv.DictReader(io.StringIO(analysis.table_csv(rows))))
    assert [r["class"] for r in parsed] == NAMES
    assert parsed[2]["APl"] == "" and float(parsed[2]["AP"]) == 1.0
    assert parsed[1]["detections"] == "3"

    only_first = analysis.per_class_table(
        cm.run_cocoeval(dataset(TRUTH), results, image_ids=[1]), NAMES)
    assert [r["gt_boxes"] for r in only_first] == [1, 1, 0]
    assert math.isnan(only_first[2]["AP"])
    assert math.isnan(only_first[0]["best_f1"])  # no curves given
