"""The generated shapes dataset: deterministic, within its stated ranges, and
valid input for both converters (and the record inspector)."""
from __future__ import annotations

import filecmp
import json
import os
import pathlib
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import yaml

from efficientdet_tf.datasets.coco import convert_coco
from efficientdet_tf.datasets.demo import make_demo_dataset
from efficientdet_tf.datasets.validation import ConversionError
from efficientdet_tf.datasets.voc import VocSource, convert_pascal
from tests.datasets.test_data_converters import read_records, run_cli

ARGS = {"num_train": 6, "num_val": 3, "seed": 3, "image_size": 128}


def tree(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(str(root), **ARGS)
    return root


@pytest.mark.slow  # runs the CLI in a subprocess
def test_cli_gives_byte_identical_files_for_a_seed(demo, tmp_path):
    result = run_cli("make_demo_dataset.py", f"--output_dir={tmp_path / 'a'}",
                     *(f"--{k}={v}" for k, v in ARGS.items()))
    assert result.returncode == 0, result.stderr
    assert "train: 6 images" in result.stdout
    files = tree(demo)
    assert files == tree(tmp_path / "a")
    match, mismatch, errors = filecmp.cmpfiles(demo, tmp_path / "a", files,
                                               shallow=False)
    assert not mismatch and not errors and len(match) == 1 + 2 + 2 * 9  # map, 2 JSON, jpg+xml each
    make_demo_dataset(str(tmp_path / "b"), **{**ARGS, "seed": 4})
    _, other, _ = filecmp.cmpfiles(demo, tmp_path / "b", files, shallow=False)
    assert any(name.endswith(".jpg") for name in other)


def test_layout_label_map_and_objects(demo):
    assert yaml.safe_load((demo / "label_map.yaml").read_text()) == {
        1: "circle", 2: "square", 3: "triangle"}
    for split, count in (("train", 6), ("val", 3)):
        data = json.loads((demo / split / "annotations.json").read_text())
        assert len(data["images"]) == count
        assert len(os.listdir(demo / split / "images")) == count
        per_image: dict[int, list] = {i["id"]: [] for i in data["images"]}
        for ann in data["annotations"]:
            per_image[ann["image_id"]].append(ann)
        scale = 128 / 256
        for image in data["images"]:
            anns = per_image[image["id"]]
            assert 1 <= len(anns) <= 4
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert 0 <= x and x + w <= 128 and 0 <= y and y + h <= 128
                assert 30 * scale - 1 <= w <= 110 * scale + 1
                assert ann["category_id"] in (1, 2, 3)
            xml = ElementTree.parse(demo / split / "xml" /
                                    image["file_name"].replace(".jpg", ".xml"))
            xml_boxes = [[int(o.findtext(f"bndbox/{k}")) for k in
                          ("xmin", "ymin", "xmax", "ymax")]
                         for o in xml.getroot().findall("object")]
            assert xml_boxes == [[x, y, x + w, y + h] for x, y, w, h in
                                 (a["bbox"] for a in anns)]


@pytest.mark.slow  # runs the CLI in a subprocess
def test_both_converters_agree_and_inspect_draws(demo, tmp_path):
    train = demo / "train"
    convert_coco(str(train / "images"), str(train / "annotations.json"),
                 str(tmp_path / "coco"), num_shards=2, num_threads=2)
    convert_pascal(VocSource(annotations_dir=str(train / "xml"),
                             image_dir=str(train / "images")),
                   str(tmp_path / "voc"), num_shards=2,
                   label_map_path=str(demo / "label_map.yaml"), num_threads=2)
    by_name = lambda records: {r["filename"]: r for r in records.values()}  # noqa: E731
    coco = by_name(read_records(str(tmp_path / "coco-*")))
    voc = by_name(read_records(str(tmp_path / "voc-*")))
    assert sorted(coco) == sorted(voc) and len(coco) == 6
    for name, record in coco.items():
        np.testing.assert_allclose(record["boxes"], voc[name]["boxes"], atol=1e-6)
        assert record["classes"].tolist() == voc[name]["classes"].tolist()
        assert record["texts"].tolist() == voc[name]["texts"].tolist()
        np.testing.assert_allclose(record["areas"], voc[name]["areas"])
        np.testing.assert_array_equal(record["image"], voc[name]["image"])
    result = run_cli("inspect_tfrecord.py",
                     f"--file_pattern={tmp_path / 'coco-*.tfrecord'}",
                     f"--output_dir={tmp_path / 'samples'}", "--num_samples=2")
    assert result.returncode == 0, result.stderr
    total = sum(len(r["boxes"]) for r in coco.values())
    assert "images: 6 (0 without boxes)" in result.stdout
    assert f"boxes: {total} " in result.stdout
    assert "128x128: 6" in result.stdout
    assert "INVALID" not in result.stdout
    assert len(os.listdir(tmp_path / "samples")) == 2


def test_parts_scene_is_small_elongated_objects(tmp_path):
    """The second scene, to fine-tune on: other classes, and boxes that are
    thin (bars lying, pins standing, 1:4 to 1:8) or a few pixels wide."""
    make_demo_dataset(str(tmp_path), num_train=30, num_val=0, seed=1,
                      image_size=128, scene="parts")
    assert yaml.safe_load((tmp_path / "label_map.yaml").read_text()) == {
        1: "bar", 2: "pin", 3: "dot"}
    data = json.loads((tmp_path / "train" / "annotations.json").read_text())
    shapes: dict[int, list] = {1: [], 2: [], 3: []}
    for ann in data["annotations"]:
        shapes[ann["category_id"]].append(ann["bbox"][2:])
    assert all(len(v) >= 10 for v in shapes.values())
    bars, pins, dots = (np.asarray(shapes[k], float) for k in (1, 2, 3))
    assert np.all(bars[:, 0] >= 3.5 * bars[:, 1]) and np.all(bars[:, 0] >= 12)
    assert np.all(pins[:, 1] >= 3.5 * pins[:, 0]) and np.all(pins[:, 1] >= 12)
    assert np.all(dots[:, 0] == dots[:, 1]) and np.all(dots <= 8)


def test_unknown_scene_is_a_conversion_error(tmp_path):
    with pytest.raises(ConversionError, match="known scenes are shapes, parts"):
        make_demo_dataset(str(tmp_path), num_train=1, num_val=0, scene="cars")
