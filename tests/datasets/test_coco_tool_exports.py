"""The COCO converter on files shaped exactly like common tools export them.

Each tool has its own trap: labelme2coco and Roboflow list a category 0 no
object uses, Label Studio numbers used categories from 0 and prefixes
``file_name`` with folders, CVAT stores a rotated box as the upright box plus
an ``attributes.rotation``. The JSON below keeps each tool's real key set and
quirks (nulls, empty strings, extra keys) so a change that trips on any of
them shows up here.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from tests.datasets.test_data_converters import REPO, read_records, save_image

from efficientdet_tf.cli import create_coco_tfrecord
from efficientdet_tf.datasets import coco, image_io
from efficientdet_tf.datasets.coco import convert_coco
from efficientdet_tf.datasets.validation import ConversionError


def write_json(path: pathlib.Path, data: dict, escape_slashes: bool = False) -> None:
    """``escape_slashes`` writes ``\\/`` for ``/``, as PHP-style encoders
    (Label Studio's exports) do; it decodes to the same strings."""
    text = json.dumps(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("/", "\\/") if escape_slashes else text)


# ---------------------------------------------------------------- labelme

def labelme2coco(root: pathlib.Path, background_used: bool = False) -> pathlib.Path:
    """labelme's examples/instance_segmentation/labelme2coco.py output:
    ``annotations.json`` next to ``JPEGImages/``, ids from 0, category 0
    ``_background_`` (the second line of labels.txt), nulls everywhere."""
    save_image(root / "JPEGImages" / "0001.jpg", size=(64, 48))
    data = {
        "info": {"description": None, "url": None, "version": None,
                 "year": 2024, "contributor": None,
                 "date_created": "2024-05-01 10:00:00.000000"},
        "licenses": [{"url": None, "id": 0, "name": None}],
        "type": "instances",
        "images": [{"license": 0, "url": None, "file_name": "JPEGImages/0001.jpg",
                    "height": 48, "width": 64, "date_captured": None, "id": 0}],
        "categories": [{"supercategory": None, "id": 0, "name": "_background_"},
                       {"supercategory": None, "id": 1, "name": "cat"},
                       {"supercategory": None, "id": 2, "name": "dog"}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 1,
             "segmentation": [[2.0, 3.0, 21.0, 3.0, 21.0, 12.0, 2.0, 12.0]],
             "area": 200.0, "bbox": [2.0, 3.0, 20.0, 10.0], "iscrowd": 0},
            {"id": 1, "image_id": 0, "category_id": 0 if background_used else 2,
             "segmentation": [[30.0, 20.0, 49.0, 20.0, 49.0, 39.0, 30.0, 39.0]],
             "area": 400.0, "bbox": [30.0, 20.0, 20.0, 20.0], "iscrowd": 0}]}
    write_json(root / "annotations.json", data)
    return root / "annotations.json"


def test_labelme_unused_background_category_is_dropped_and_reported(tmp_path):
    annotations = labelme2coco(tmp_path / "out")
    result = convert_coco(str(tmp_path / "out"), str(annotations),
                          str(tmp_path / "rec"), include_masks=True, num_threads=1)
    assert result.report.images == 1
    assert result.report.boxes == {(1, "cat"): 1, (2, "dog"): 1}
    assert "dropped unused category 0 '_background_'" in result.summary()
    record = read_records(str(tmp_path / "rec-*"))["0"]
    assert record["classes"].tolist() == [1, 2]
    assert record["filename"] == b"JPEGImages/0001.jpg"


def test_labelme_images_found_when_image_dir_is_the_image_folder(tmp_path):
    annotations = labelme2coco(tmp_path / "out")
    result = convert_coco(str(tmp_path / "out" / "JPEGImages"), str(annotations),
                          str(tmp_path / "rec"), num_threads=1)
    assert result.report.images == 1
    assert not result.report.skipped_images


def test_category_zero_used_by_objects_is_an_error_naming_them(tmp_path):
    annotations = labelme2coco(tmp_path / "out", background_used=True)
    with pytest.raises(ConversionError) as error:
        convert_coco(str(tmp_path / "out"), str(annotations), str(tmp_path / "rec"))
    message = str(error.value)
    assert message.startswith(f"{annotations}: category 0 '_background_' is "
                              "used by 1 object (first: image "
                              "'JPEGImages/0001.jpg' (id 0), annotation id 1)")
    assert "--category_id_offset=1" in message
    assert not list(tmp_path.glob("rec*"))


# ---------------------------------------------------------------- Label Studio

def label_studio(root: pathlib.Path) -> pathlib.Path:
    """Label Studio's COCO export: categories 0..N-1 in label order (all
    used), ids from 0, ``file_name`` either ``images/<hash>-name`` (export
    with images) or the server's upload path, slashes escaped."""
    save_image(root / "images" / "4f2a9c1e-cat.jpg", size=(64, 48))
    save_image(root / "7b3d0e55-dog.jpg", size=(40, 30))  # copied by hand
    data = {
        "images": [
            {"width": 64, "height": 48, "id": 0,
             "file_name": "images/4f2a9c1e-cat.jpg"},
            {"width": 40, "height": 30, "id": 1,
             "file_name": "/data/upload/1/7b3d0e55-dog.jpg"}],
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 0, "segmentation": [],
             "bbox": [4.0, 5.0, 30.0, 20.0], "ignore": 0, "iscrowd": 0,
             "area": 600.0},
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [],
             "bbox": [1.0, 2.0, 10.0, 8.0], "ignore": 0, "iscrowd": 0,
             "area": 80.0}],
        "info": {"year": 2024, "version": "1.0", "description": "",
                 "contributor": "Label Studio", "url": "",
                 "date_created": "2024-05-01 10:00:00.000000"}}
    write_json(root / "result.json", data, escape_slashes=True)
    return root / "result.json"


def test_label_studio_zero_based_ids_are_an_error_that_names_the_fix(tmp_path):
    annotations = label_studio(tmp_path / "export")
    with pytest.raises(ConversionError) as error:
        convert_coco(str(tmp_path / "export"), str(annotations),
                     str(tmp_path / "rec"))
    message = str(error.value)
    assert message.startswith(
        f"{annotations}: category 0 'cat' is used by 1 object (first: image "
        "'images/4f2a9c1e-cat.jpg' (id 0), annotation id 0)")
    assert "--category_id_offset=1" in message


def test_label_studio_with_category_id_offset_and_folder_prefixes(tmp_path):
    annotations = label_studio(tmp_path / "export")
    result = convert_coco(str(tmp_path / "export"), str(annotations),
                          str(tmp_path / "rec"), category_id_offset=1,
                          num_threads=1)
    assert result.report.images == 2
    assert result.report.boxes == {(1, "cat"): 1, (2, "dog"): 1}
    assert any("--category_id_offset" in note for note in result.notes)
    records = read_records(str(tmp_path / "rec-*"))
    assert records["0"]["classes"].tolist() == [1]
    assert records["0"]["texts"].tolist() == [b"cat"]
    assert records["1"]["classes"].tolist() == [2]
    np.testing.assert_allclose(records["1"]["boxes"],
                               [[2 / 30, 1 / 40, 10 / 30, 11 / 40]], atol=1e-6)


def test_missing_image_names_every_path_tried(tmp_path):
    annotations = label_studio(tmp_path / "export")
    (tmp_path / "export" / "7b3d0e55-dog.jpg").unlink()
    result = convert_coco(str(tmp_path / "export"), str(annotations),
                          str(tmp_path / "rec"), category_id_offset=1,
                          num_threads=1)
    assert result.report.skipped_images == {image_io.MISSING: 1}
    [(_, message)] = result.report.warnings
    export = tmp_path / "export"
    assert str(export / "data" / "upload" / "1" / "7b3d0e55-dog.jpg") in message
    assert str(export / "7b3d0e55-dog.jpg") in message


def test_shared_file_name_is_not_found_by_its_name_alone(tmp_path):
    """CVAT tasks made from several videos repeat frame names in different
    folders; one flat image can stand in for none of them."""
    save_image(tmp_path / "frame_000001.jpg")
    save_image(tmp_path / "other.jpg")
    write_json(tmp_path / "in.json", {
        "images": [{"id": 1, "file_name": "video1/frame_000001.jpg"},
                   {"id": 2, "file_name": "video2/frame_000001.jpg"},
                   {"id": 3, "file_name": "video2/other.jpg"}],
        "categories": [{"id": 1, "name": "car", "supercategory": ""}],
        "annotations": []})
    result = convert_coco(str(tmp_path), str(tmp_path / "in.json"),
                          str(tmp_path / "rec"), num_threads=1)
    assert result.report.images == 1  # other.jpg, by its name
    assert result.report.skipped_images == {image_io.MISSING: 2}
    assert str(tmp_path / "frame_000001.jpg") not in str(result.report.warnings)


def test_cli_help_documents_the_offset_and_main_passes_it(tmp_path, capsys):
    script = REPO / "dataset" / "create_coco_tfrecord.py"
    help_text = subprocess.run([sys.executable, str(script), "--help"],
                               capture_output=True, text=True, timeout=120,
                               check=True).stdout
    assert "--category_id_offset" in help_text
    annotations = label_studio(tmp_path / "export")
    assert create_coco_tfrecord.main([
        f"--image_dir={tmp_path / 'export'}",
        f"--object_annotations_file={annotations}",
        f"--output_file_prefix={tmp_path / 'rec'}",
        "--category_id_offset=1", "--num_threads=1"]) == 0
    summary = capsys.readouterr().out
    assert "images written: 2" in summary


# ---------------------------------------------------------------- Roboflow

def test_roboflow_project_category_zero_is_dropped(tmp_path):
    """Roboflow's "COCO" export: ``_annotations.coco.json`` among the images,
    category 0 named after the project (supercategory "none") that no object
    uses, the real classes 1..N under it."""
    folder = tmp_path / "train"
    save_image(folder / "img1_jpg.rf.0a1b2c3d4e5f.jpg", size=(64, 48))
    data = {
        "info": {"year": "2024", "version": "3",
                 "description": "Exported from roboflow.com", "contributor": "",
                 "url": "https://public.roboflow.com/object-detection/cells",
                 "date_created": "2024-05-01T10:00:00+00:00"},
        "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/",
                      "name": "CC BY 4.0"}],
        "categories": [{"id": 0, "name": "cells-abc", "supercategory": "none"},
                       {"id": 1, "name": "platelets", "supercategory": "cells-abc"},
                       {"id": 2, "name": "rbc", "supercategory": "cells-abc"}],
        "images": [{"id": 0, "license": 1,
                    "file_name": "img1_jpg.rf.0a1b2c3d4e5f.jpg", "height": 48,
                    "width": 64, "date_captured": "2024-05-01T10:00:00+00:00"}],
        "annotations": [{"id": 0, "image_id": 0, "category_id": 2,
                         "bbox": [10, 12, 20, 15], "area": 300,
                         "segmentation": [], "iscrowd": 0}]}
    write_json(folder / "_annotations.coco.json", data)
    result = convert_coco(str(folder), str(folder / "_annotations.coco.json"),
                          str(tmp_path / "rec"), include_masks=True, num_threads=1)
    assert result.report.boxes == {(2, "rbc"): 1}
    assert result.report.fixes[coco.NO_SEGMENTATION] == 1
    assert "dropped unused category 0 'cells-abc'" in result.summary()


# ---------------------------------------------------------------- CVAT

def test_cvat_coco_export_with_rotated_box(tmp_path):
    """CVAT's "COCO 1.0": ``annotations/instances_default.json`` beside
    ``images/``, empty-string metadata, ``attributes`` on every annotation,
    a crowd mask as uncompressed RLE, and a rotated rectangle exported as its
    upright box plus ``attributes.rotation`` (degrees about the centre)."""
    save_image(tmp_path / "images" / "frame_000000.jpg", size=(64, 48))
    crowd = np.zeros((48, 64), np.uint8)
    crowd[30:40, 5:15] = 1
    flat = crowd.flatten(order="F")  # COCO RLE runs go down the columns
    changes = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    data = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "",
                 "url": "", "version": "", "year": ""},
        "categories": [{"id": 1, "name": "car", "supercategory": ""},
                       {"id": 2, "name": "person", "supercategory": ""}],
        "images": [{"id": 1, "width": 64, "height": 48,
                    "file_name": "frame_000000.jpg", "license": 0,
                    "flickr_url": "", "coco_url": "", "date_captured": 0}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [],
             "area": 200.0, "bbox": [2.0, 3.0, 20.0, 10.0], "iscrowd": 0,
             "attributes": {"occluded": False, "rotation": 0.0}},
            {"id": 2, "image_id": 1, "category_id": 2,
             "segmentation": [[40.0, 2.0, 50.0, 2.0, 50.0, 12.0, 40.0, 12.0]],
             "area": 100.0, "bbox": [40.0, 2.0, 10.0, 10.0], "iscrowd": 0,
             "attributes": {"occluded": True}},
            {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [],
             "area": 200.0, "bbox": [20.0, 20.0, 20.0, 10.0], "iscrowd": 0,
             "attributes": {"occluded": False, "rotation": 90.0}},
            {"id": 4, "image_id": 1, "category_id": 2,
             "segmentation": {"counts": counts, "size": [48, 64]},
             "area": 100.0, "bbox": [5.0, 30.0, 10.0, 10.0], "iscrowd": 1,
             "attributes": {"occluded": False}}]}
    write_json(tmp_path / "annotations" / "instances_default.json", data)
    result = convert_coco(str(tmp_path / "images"),
                          str(tmp_path / "annotations" / "instances_default.json"),
                          str(tmp_path / "rec"), include_masks=True, num_threads=1)
    record = read_records(str(tmp_path / "rec-*"))["1"]
    # The 20x10 box centred on (30, 25), turned 90 degrees: 10x20.
    np.testing.assert_allclose(record["boxes"], [
        [3 / 48, 2 / 64, 13 / 48, 22 / 64], [2 / 48, 40 / 64, 12 / 48, 50 / 64],
        [15 / 48, 25 / 64, 35 / 48, 35 / 64], [30 / 48, 5 / 64, 40 / 48, 15 / 64]],
        atol=1e-6)
    assert record["is_crowd"].tolist() == [0, 0, 0, 1]
    assert result.report.images == 1
    assert result.report.fixes[coco.ROTATED] == 1
    assert not result.report.skipped_boxes


@pytest.mark.parametrize("degrees,expected", [
    (0.0, (10.0, 20.0, 30.0, 30.0)), (180.0, (10.0, 20.0, 30.0, 30.0)),
    (90.0, (15.0, 15.0, 25.0, 35.0)), (-90.0, (15.0, 15.0, 25.0, 35.0)),
    (45.0, (20 - 7.5 * 2 ** 0.5, 25 - 7.5 * 2 ** 0.5,
            20 + 7.5 * 2 ** 0.5, 25 + 7.5 * 2 ** 0.5))])
def test_upright_box_encloses_the_rotated_rectangle(degrees, expected):
    # A 20x10 box centred on (20, 25); at 45 degrees each half-extent is
    # (10 + 5) / sqrt(2).
    box = coco.upright_box((10.0, 20.0, 30.0, 30.0), degrees)
    np.testing.assert_allclose(box, expected, atol=1e-9)


def test_non_numeric_rotation_is_an_error_naming_the_object(tmp_path):
    save_image(tmp_path / "a.jpg")
    write_json(tmp_path / "in.json", {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "car", "supercategory": ""}],
        "annotations": [{"id": 9, "image_id": 1, "category_id": 1,
                         "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0,
                         "attributes": {"rotation": "left"}}]})
    with pytest.raises(ConversionError, match=(
            r"image 'a.jpg' \(id 1\): object 1 \(annotation id 9\) has "
            r"attributes.rotation 'left', not a number of degrees")):
        convert_coco(str(tmp_path), str(tmp_path / "in.json"), str(tmp_path / "r"))
