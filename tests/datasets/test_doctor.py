"""The dataset doctor on small hand-made COCO JSON, VOC XML and TFRecords,
and on the generated demo dataset in all three forms.

The hand-made boxes sit where the anchors can be counted: D0 at 512 has a
32 x 32 anchor centred at (84, 84) on level 3 and a 203 x 203 one centred
at (240, 240) on level 5, and the images are 768 wide and 1024 tall, so the
resize to the network input halves every box.
"""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from efficientdet_tf.config import get_config
from efficientdet_tf.data.tfrecord import Example
from efficientdet_tf.datasets import doctor, doctor_checks, doctor_plots
from efficientdet_tf.datasets.coco import convert_coco
from efficientdet_tf.datasets.demo import make_demo_dataset
from efficientdet_tf.datasets.doctor_sources import (read_coco_json,
                                                     read_records, read_voc_dir)
from efficientdet_tf.datasets.validation import ConversionError
from efficientdet_tf.ops.anchor_coverage import best_anchor_iou
from tests.data.test_pipeline import (image_with_boxes, make_example,
                                      write_records)
from tests.datasets.test_data_converters import coco_json, write_xml

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
IMAGES = [{"id": 1, "file_name": "a.jpg", "width": 768, "height": 1024},
          {"id": 2, "file_name": "b.jpg", "width": 768, "height": 1024},
          {"id": 3, "file_name": "empty.jpg", "width": 768, "height": 1024}]
# Network-input yxyx of the boxes below: one equal to a level-3 anchor, one
# close to a level-5 anchor, one 2 x 2 click that no anchor matches.
INPUT_BOXES = np.array([[68, 68, 100, 100], [140, 140, 340, 340],
                        [200, 200, 202, 202]], np.float64)


def annotation(ann_id: int, image_id: int, category: int,
               yxyx: np.ndarray) -> dict:
    """A COCO annotation of the original-image box twice ``yxyx``."""
    ymin, xmin, ymax, xmax = (2 * float(v) for v in yxyx)
    return {"id": ann_id, "image_id": image_id, "category_id": category,
            "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
            "area": (xmax - xmin) * (ymax - ymin), "iscrowd": 0}


def d0(**overrides):
    return get_config("efficientdet-d0", {"num_classes": 2, **overrides})


@pytest.fixture
def hand_made(tmp_path) -> str:
    """Covered 'cat' boxes in a.jpg, the tiny 'dog' in b.jpg, no box in
    empty.jpg."""
    path = tmp_path / "instances.json"
    coco_json(path, IMAGES, [annotation(1, 1, 1, INPUT_BOXES[0]),
                             annotation(2, 1, 1, INPUT_BOXES[1]),
                             annotation(3, 2, 2, INPUT_BOXES[2])], CATEGORIES)
    return str(path)


def test_coverage_is_best_anchor_iou_at_input_scale(hand_made):
    config = d0()
    report = doctor.analyze(read_coco_json(hand_made), config)
    expected = best_anchor_iou(INPUT_BOXES, config).iou
    np.testing.assert_allclose(report.best_iou, expected, atol=1e-9)
    assert expected[0] == pytest.approx(1.0) and expected[1] > 0.9
    assert expected[2] < doctor_checks.MATCH_THRESHOLD
    assert report.coverage == pytest.approx(2 / 3)
    [tiny] = report.uncovered
    assert (tiny["file"], tiny["class"], tiny["name"]) == ("b.jpg", 2, "dog")
    assert (tiny["width"], tiny["height"]) == (2.0, 2.0)
    assert tiny["best_iou"] == pytest.approx(expected[2], abs=1e-3)
    assert "b.jpg: 'dog' 2x2 px" in report.summary()


def test_size_buckets_and_per_class_percentiles(hand_made):
    report = doctor.analyze(read_coco_json(hand_made), d0())
    assert report.buckets == {"small": (1, 0), "medium": (1, 1),
                              "large": (1, 1)}
    cat, dog = report.classes
    assert (cat.id, cat.boxes, cat.images, cat.matched) == (1, 2, 1, 2)
    assert cat.size[1] == pytest.approx((32 + 200) / 2)  # the median
    assert cat.aspect == [1.0, 1.0, 1.0]
    assert (dog.measured, dog.matched, dog.coverage) == (1, 0, 0.0)


def test_verdict_names_the_worst_class(hand_made, tmp_path):
    report = doctor.analyze(read_coco_json(hand_made), d0(
        label_map={1: "cat", 2: "dog"}))
    assert report.verdict().startswith(
        "100.0 % of 'dog' boxes match no anchor: run analyze_dataset.py "
        "--fit_anchors")
    assert not report.errors
    report.raise_for_errors()
    covered = tmp_path / "covered.json"
    coco_json(covered, IMAGES[:1], [annotation(1, 1, 1, INPUT_BOXES[0])],
              CATEGORIES)
    verdict = doctor.analyze(read_coco_json(str(covered)), d0()).verdict()
    assert verdict.startswith("ok: 1 objects in 1 images, 100.0 % of the "
                              "boxes match an anchor")


def test_image_size_advice_when_boxes_are_too_small(tmp_path):
    """Boxes of 20 px at D0's 512 (IoU 0.39 with the 32 px anchor centred
    on them): the next size, 768, makes them 30 px, which it matches."""
    path = tmp_path / "small.json"
    boxes = [np.array([74, 74, 94, 94]) + 64 * k for k in range(4)]
    coco_json(path, IMAGES[:1], [annotation(i + 1, 1, 1, b)
                                 for i, b in enumerate(boxes)], CATEGORIES)
    report = doctor.analyze(read_coco_json(str(path)), d0())
    assert report.coverage == 0
    assert "or use image_size 768 (100.0 % match there)" in report.verdict()


def test_level_2_advice_when_boxes_are_narrower_than_the_finest_stride(tmp_path):
    """4 x 40 px bars at D0's 512: narrower than level 3's 8 px stride, so
    the advice adds a P2 level; 12 px wide ones do not get it."""
    path = tmp_path / "thin.json"
    boxes = [np.array([74, 74, 78, 114]) + 64 * k for k in range(4)]
    coco_json(path, IMAGES[:1], [annotation(i + 1, 1, 1, b)
                                 for i, b in enumerate(boxes)], CATEGORIES)
    verdict = doctor.analyze(read_coco_json(str(path)), d0()).verdict()
    assert "--fit_anchors with min_level: 2 (most boxes are narrower than " \
        "the level-3 stride, 8 px)" in verdict, verdict
    wider = tmp_path / "wider.json"
    coco_json(wider, IMAGES[:1], [annotation(i + 1, 1, 1, b + [0, 0, 8, 0])
                                  for i, b in enumerate(boxes)], CATEGORIES)
    verdict = doctor.analyze(read_coco_json(str(wider)), d0()).verdict()
    assert "match no anchor: run analyze_dataset.py --fit_anchors" in verdict
    assert "min_level" not in verdict, verdict


def test_class_ids_outside_the_config_are_errors_naming_files(hand_made):
    report = doctor.analyze(read_coco_json(hand_made), d0(num_classes=1))
    [error] = report.errors
    assert error.startswith("class id 2 (1 boxes, 'dog') is outside "
                            "1..num_classes=1")
    assert "b.jpg" in error and "a.jpg" not in error
    assert report.verdict() == f"error: {error}"
    with pytest.raises(doctor.DatasetError, match="class id 2"):
        report.raise_for_errors()


def test_label_map_gaps_and_empty_names(hand_made):
    config = d0(num_classes=4, label_map={1: "cat", 3: "", 4: "bird"})
    report = doctor.analyze(read_coco_json(hand_made), config)
    assert report.errors == [
        "class id 2 (1 boxes, 'dog') is not in label_map (ids 1 'cat', 3 '', "
        "4 'bird'): b.jpg; add it to label_map in --hparams or re-convert "
        "with the config's label map",
        "label_map id 3 has an empty name: name it in --hparams' label_map "
        "(evaluation and drawings show classes by name)"]
    assert ("label_map classes with no boxes here: 3 '', 4 'bird'"
            in report.warnings)
    few = f"classes with fewer than {doctor_checks.MIN_EXAMPLES} boxes"
    assert any(w.startswith(few) for w in report.warnings)
    assert report.verdict().endswith("(and 1 more errors)")


def test_names_disagreeing_with_label_map_are_a_warning(hand_made):
    report = doctor.analyze(read_coco_json(hand_made),
                            d0(label_map={1: "cat", 2: "bird"}))
    assert ("class id 2 is 'dog' in the data but 'bird' in label_map: was the "
            "data converted with another label map?") in report.warnings
    assert report.classes[1].name == "bird"


def test_counts_empty_images_and_max_instances(hand_made):
    report = doctor.analyze(read_coco_json(hand_made),
                            d0(max_instances_per_image=1))
    assert (report.images, report.objects, report.empty_images) == (3, 3, 1)
    assert report.most_per_image == 2
    assert report.over_limit == ["a.jpg"]
    crowded = ("1 images hold more than max_instances_per_image=1 objects "
               "(up to 2): a.jpg")
    assert any(w.startswith(crowded) for w in report.warnings)
    assert "1 images above max_instances_per_image=1" in report.summary()


def test_boxes_past_the_edge_are_clipped_as_converted_with_a_hint(tmp_path):
    """Corners written as [x, y, width, height] stick out of the image."""
    path = tmp_path / "corners.json"
    coco_json(path, IMAGES[:1], [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [500, 600, 700, 900],
         "area": 1.0, "iscrowd": 0}], CATEGORIES)
    table = read_coco_json(str(path))
    np.testing.assert_allclose(table.boxes, [[600 / 1024, 500 / 768, 1, 1]])
    [note] = table.notes
    assert note.startswith("boxes clipped to the image: 1 (that many suggests "
                           "boxes in another format")


def test_json_report_is_written_and_loads(hand_made, tmp_path):
    report = doctor.analyze(read_coco_json(hand_made), d0())
    path = doctor.write_report(report, str(tmp_path / "out"))
    data = json.loads(pathlib.Path(path).read_text())
    assert path.endswith("report.json")
    assert data["verdict"] == report.verdict()
    assert (data["images"], data["objects"], data["empty_images"]) == (3, 3, 1)
    assert data["coverage"]["overall"] == pytest.approx(2 / 3)
    assert data["coverage"]["buckets"]["small"] == {"boxes": 1, "matched": 0}
    assert [u["file"] for u in data["uncovered"]] == ["b.jpg"]
    assert [c["name"] for c in data["classes"]] == ["cat", "dog"]
    assert data["config"]["image_size"] == [512, 512]


def test_plots_are_pngs_of_sane_size(hand_made, tmp_path):
    pytest.importorskip("matplotlib", reason="the plots need matplotlib "
                        "(pip install 'efficientdet_tf[plots]')")
    report = doctor.analyze(read_coco_json(hand_made), d0())
    paths = doctor_plots.write_plots(report, str(tmp_path), d0(anchor_scale=2))
    assert sorted(pathlib.Path(p).name for p in paths) == sorted([
        doctor_plots.SIZES_PLOT, doctor_plots.ASPECTS_PLOT,
        doctor_plots.SHAPES_PLOT])
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (700, 450)
        assert pathlib.Path(path).stat().st_size > 10_000  # something drawn


def test_plots_report_missing_matplotlib(hand_made, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure",
                 "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    report = doctor.analyze(read_coco_json(hand_made), d0())
    assert doctor_plots.write_plots(report, str(tmp_path)) is None
    assert not list(tmp_path.glob("*.png"))


def test_voc_folder_reads_sizes_from_the_xml(tmp_path):
    """No image files: the sizes come from <size>."""
    folder = tmp_path / "xml"
    write_xml(folder / "a.xml", "a.jpg", (768, 1024),
              [("cat", (136, 136, 200, 200), 0, 0)])
    write_xml(folder / "b.xml", "b.jpg", (768, 1024),
              [("dog", (400, 400, 404, 404), 0, 0)])
    (tmp_path / "map.yaml").write_text("{1: dog, 2: cat}\n")
    table = read_voc_dir(str(folder), str(tmp_path / "map.yaml"))
    assert table.where == ["a.jpg", "b.jpg"]
    assert table.classes.tolist() == [2, 1]
    report = doctor.analyze(table, d0())
    assert [(c.id, c.name) for c in report.classes] == [(1, "dog"), (2, "cat")]
    np.testing.assert_allclose(report.best_iou, best_anchor_iou(
        INPUT_BOXES[[0, 2]], d0()).iou, atol=1e-9)


def test_records_are_decoded_as_training_and_bad_boxes_named(tmp_path):
    good = make_example(image_with_boxes(32, 48, [(4, 4, 20, 30)]),
                        [(4, 4, 20, 30)], "good", classes=[2])
    pixels = Example(encoded=good.encoded, height=32, width=48,
                     filename="pixels.jpg", source_id="pixels",
                     boxes=[(4.0, 4.0, 20.0, 30.0)], labels=[1],
                     texts=["cat"], is_crowd=[0], areas=[1.0])
    pattern = write_records(tmp_path / "train.tfrecord", [good, pixels])
    report = doctor.diagnose_records(pattern, d0())
    assert (report.images, report.objects) == (2, 1)
    assert report.classes[0].data_name == "obj"
    np.testing.assert_allclose(report.boxes_px[0], np.array([4, 4, 20, 30])
                               * 512 / 48, rtol=1e-6)
    [error] = report.errors
    assert error.startswith("1 boxes in 1 records are not normalised yxyx "
                            "boxes inside [0, 1]")
    assert f"{pattern} record 1 (pixels.jpg)" in error
    assert doctor.diagnose_records(pattern, d0(), max_images=1).images == 1


def test_unreadable_inputs_are_conversion_errors(tmp_path):
    (tmp_path / "bad.tfrecord").write_bytes(b"not a record file at all")
    with pytest.raises(ConversionError, match="bad.tfrecord: unreadable"):
        read_records(str(tmp_path / "bad.tfrecord"))
    with pytest.raises(ConversionError, match="missing.json: file not found"):
        read_coco_json(str(tmp_path / "missing.json"))
    coco_json(tmp_path / "nosize.json", [{"id": 1, "file_name": "a.jpg"}], [])
    with pytest.raises(ConversionError, match="'a.jpg' .*no width and height"):
        read_coco_json(str(tmp_path / "nosize.json"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> pathlib.Path:
    """The generated parts dataset (small, elongated objects) and records
    converted from its COCO JSON."""
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(str(root), num_train=12, num_val=0, image_size=128,
                      scene="parts")
    convert_coco(str(root / "train" / "images"),
                 str(root / "train" / "annotations.json"),
                 str(root / "records" / "train"))
    return root


def test_demo_in_three_forms_gives_one_report(demo):
    config = get_config("efficientdet-d0", {
        "num_classes": 3, "image_size": 128, "max_level": 5})
    reports = [doctor.analyze(table, config) for table in (
        read_coco_json(str(demo / "train" / "annotations.json")),
        read_voc_dir(str(demo / "train" / "xml")),
        read_records(str(demo / "records" / "train-*.tfrecord")))]
    coco = reports[0]
    assert {c.data_name for c in coco.classes} == {"bar", "pin", "dot"}
    for other in reports[1:]:
        assert (other.images, other.objects) == (coco.images, coco.objects)
        # By name: VOC's derived label map numbers the sorted names.
        assert ({c.data_name: (c.boxes, c.matched) for c in other.classes}
                == {c.data_name: (c.boxes, c.matched) for c in coco.classes})
        np.testing.assert_allclose(other.best_iou, coco.best_iou, atol=1e-4)


def test_fit_anchors_raises_coverage_through_the_hparams_path(demo, tmp_path):
    from efficientdet_tf.datasets.doctor_fit import (fit_report_anchors,
                                                     write_anchors)
    config = get_config("efficientdet-d0", {
        "num_classes": 3, "image_size": 128, "max_level": 5,
        "anchor_scale": 2.0})
    report = doctor.analyze(
        read_coco_json(str(demo / "train" / "annotations.json")), config)
    fitted = fit_report_anchors(report, num_ratios=4)
    assert fitted.before == report.coverage
    assert fitted.after > fitted.before
    assert fitted.after == pytest.approx(np.mean(best_anchor_iou(
        report.boxes_px, fitted.config).iou >= doctor_checks.MATCH_THRESHOLD))
    assert [c.id for c in fitted.per_class] == [1, 2, 3]
    path = write_anchors(fitted, str(tmp_path))
    loaded = config.override(path)  # how --hparams applies a YAML file
    assert loaded.aspect_ratios == fitted.config.aspect_ratios
    assert len(loaded.aspect_ratios) == 4
    assert loaded.anchor_scale == fitted.config.anchor_scale
    summary = fitted.summary(path)
    assert f"--hparams=<your hparams.yaml>,{path}" in summary
    assert "re-initialises the heads' last layers" in summary
    assert yaml.safe_load(pathlib.Path(path).read_text()) == (
        fitted.fit.overrides())
    data = report.to_json(fitted.to_json())
    assert data["anchor_fit"]["coverage_after"] == fitted.after


def test_records_file_pattern_matching_nothing_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-"):
        read_records(str(tmp_path / "nothing-*.tfrecord"))
