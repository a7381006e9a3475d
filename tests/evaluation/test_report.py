"""The evaluation report: its files, the confusion CSV, the error gallery
(images read back from records by source id) and the fallback without
matplotlib."""
from __future__ import annotations

import csv
import io
import os

import numpy as np
import pytest
from PIL import Image

from efficientdet_tf.evaluation import coco_metrics as cm
from efficientdet_tf.evaluation import gallery, plots, report
from efficientdet_tf.evaluation.matching import ErrorCase
from efficientdet_tf.utils.plotting import PlotsUnavailable
from tests.data.test_pipeline import (image_with_boxes, make_example,
                                      tiny_config, write_records)
from tests.evaluation.test_analysis import NAMES, TRUTH, dataset, detection, perfect

# Perfect detections, plus: a dog taken for a cat (image 3's dog box, as
# class 1), and a dog on empty image 4; all at score 1, so the best-F1
# threshold keeps them.
RESULTS = [d for d in perfect() if d["image_id"] != 3] + [
    detection(3, 1, (50, 50, 80, 80)), detection(4, 2, (10, 10, 30, 30))]


def images_for(ids):
    return {i: np.full((200, 200, 3), 40 * i, np.uint8) for i in ids}


def evaluation():
    ground_truth = dataset(TRUTH)
    scored = cm.coco_evaluation(ground_truth, RESULTS)
    return ground_truth, scored


def test_report_writes_tables_plots_and_gallery(tmp_path):
    ground_truth, scored = evaluation()
    out = str(tmp_path)
    written = report.write_report(out, scored.evaluator, ground_truth, RESULTS,
                                  scored.names, read_images=images_for)
    for name in (report.PER_CLASS_MARKDOWN, report.PER_CLASS_CSV,
                 report.CONFUSION_CSV, report.PR_CURVES_PNG, report.F1_PNG,
                 report.CONFUSION_PNG):
        assert os.path.getsize(tmp_path / name) > 0, name
    assert sorted(os.path.basename(p) for p in written.plots) == sorted(
        [report.PR_CURVES_PNG, report.F1_PNG, report.CONFUSION_PNG])
    rows = list(csv.reader(io.StringIO(
        (tmp_path / report.CONFUSION_CSV).read_text())))
    assert rows[0] == ["true \\ predicted", *NAMES, "background"]
    # true dog predicted cat: 1; dogs found: 1 (image 1); the false dog.
    assert rows[2] == ["dog", "1", "1", "0", "0"]
    assert rows[4] == ["background", "0", "1", "0", "0"]
    assert sorted(os.listdir(tmp_path / gallery.GALLERY_DIR)) == [
        "false_positive_dog_1_image4.jpg", "wrong_class_dog_1_image3.jpg"]
    picture = Image.open(tmp_path / gallery.GALLERY_DIR /
                         "wrong_class_dog_1_image3.jpg")
    assert picture.size == (gallery.MIN_SIDE, gallery.MIN_SIDE)  # enlarged
    assert written.summary(out).endswith(f"2 error images in {out}")
    assert written._replace(gallery=written.gallery[:1]).summary(out).endswith(
        f"1 error image in {out}")


def test_a_new_report_replaces_the_old_gallery(tmp_path):
    ground_truth, scored = evaluation()
    stale = tmp_path / gallery.GALLERY_DIR / "missed_cat_1_image9.jpg"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    report.write_report(str(tmp_path), scored.evaluator, ground_truth, RESULTS,
                        scored.names, read_images=images_for)
    assert not stale.exists()
    assert not (tmp_path / (gallery.GALLERY_DIR + ".tmp")).exists()


def test_without_matplotlib_tables_are_still_written(tmp_path, monkeypatch):
    def unavailable(*args, **kwargs):
        raise PlotsUnavailable("plots need matplotlib")
    monkeypatch.setattr(plots, "plot_pr_curves", unavailable)
    ground_truth, scored = evaluation()
    written = report.write_report(str(tmp_path), scored.evaluator, ground_truth,
                                  RESULTS, scored.names)
    assert written.plots == [] and "plots need matplotlib" in written.note
    assert (tmp_path / report.PER_CLASS_CSV).exists()
    assert not (tmp_path / gallery.GALLERY_DIR).exists()  # no reader given


@pytest.mark.parametrize("case, caption", [
    (ErrorCase("missed", 1, 1, (0, 0, 1, 1), None, None), "missed cat"),
    (ErrorCase("false_positive", 1, 2, (0, 0, 1, 1), 0.875, None),
     "false positive dog 88%"),
    (ErrorCase("wrong_class", 1, 1, (0, 0, 1, 1), 0.62, 3),
     "cat taken for bird 62%"),
])
def test_case_captions(case, caption):
    assert gallery.case_caption(case, dict(zip([1, 2, 3], NAMES))) == caption


@pytest.mark.parametrize("regenerate", [False, True])
def test_record_images_decodes_only_the_wanted_ones(tmp_path, regenerate):
    path = write_records(tmp_path / "r.tfrecord", [
        make_example(image_with_boxes(32 + i, 40, [(1, 1, 9, 9)]),
                     [(1, 1, 9, 9)], source_id=i) for i in range(4)])
    config = tiny_config(regenerate_source_id=regenerate)
    if regenerate:
        from efficientdet_tf.data.pipeline import build_dataset
        [(_, labels)] = build_dataset(path, config, training=False,
                                      batch_size=4, deterministic=True)
        ids = [s.decode() for s in labels["source_id"].numpy()]
    else:
        ids = ["0", "1", "2", "3"]
    found = gallery.record_images(path, config, {ids[1], ids[3]})
    assert sorted(found) == sorted([ids[1], ids[3]])
    assert found[ids[3]].shape == (35, 40, 3)
    assert gallery.record_images(path, config, set()) == {}
