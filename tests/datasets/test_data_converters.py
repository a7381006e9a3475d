"""COCO / Pascal VOC converters: round trips, the automl schema, and every
bad-input case the converters promise to handle (on tiny generated data)."""
from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from efficientdet_tf.datasets import validation
from efficientdet_tf.datasets.coco import convert_coco
from efficientdet_tf.datasets.annotations import Options
from efficientdet_tf.datasets.validation import ConversionError, LabelMap, Report
from efficientdet_tf.datasets.voc import VocSource, convert_pascal, voc_to_coco

REPO = pathlib.Path(__file__).resolve().parents[2]

# The official automl keys (docs/contracts.md), parsed with plain TF, not our decoder.
AUTOML_KEYS = {
    "image/height": "int", "image/width": "int", "image/filename": "bytes",
    "image/source_id": "bytes", "image/key/sha256": "bytes",
    "image/encoded": "bytes", "image/format": "bytes",
    "image/object/bbox/xmin": "float", "image/object/bbox/xmax": "float",
    "image/object/bbox/ymin": "float", "image/object/bbox/ymax": "float",
    "image/object/class/text": "bytes", "image/object/class/label": "int",
    "image/object/is_crowd": "int", "image/object/area": "float"}
PASCAL_KEYS = {"image/object/difficult": "int",
               "image/object/truncated": "int", "image/object/view": "bytes"}
MASK_KEY = "image/object/mask"


def run_cli(script: str, *args: str, cwd: pathlib.Path | None = None
            ) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "dataset" / script), *args],
                          capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def save_image(path: pathlib.Path, size=(64, 48), mode="RGB", fmt="JPEG",
               colour=(90, 120, 150), **save_args) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format=fmt, **save_args)


def write_xml(path: pathlib.Path, filename: str, size, objects) -> None:
    """objects: (name, (xmin, ymin, xmax, ymax), difficult, truncated)."""
    body = "".join(
        f"<object><name>{n}</name><pose>Left</pose><truncated>{t}</truncated>"
        f"<difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}"
        f"</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d, t in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><folder>x</folder><filename>{filename}"
                    f"</filename><size><width>{size[0]}</width><height>"
                    f"{size[1]}</height><depth>3</depth></size>{body}"
                    "</annotation>")


def coco_json(path: pathlib.Path, images, annotations, categories=None) -> None:
    categories = categories or [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))


def automl_spec(keys: dict[str, str]) -> dict:
    """A parse spec of automl's keys and types: image-level keys are scalars,
    per-object keys variable-length lists."""
    import tensorflow as tf
    dtypes = {"int": tf.int64, "float": tf.float32, "bytes": tf.string}
    return {k: tf.io.VarLenFeature(dtypes[kind]) if k.startswith("image/object/")
            else tf.io.FixedLenFeature((), dtypes[kind]) for k, kind in keys.items()}


def read_records(pattern: str) -> dict[str, dict]:
    """source_id -> our decoder's output, plus ``raw``: the automl keys (and
    the Pascal ones / masks when present) parsed with plain TF."""
    import tensorflow as tf

    from efficientdet_tf.data.tfrecord import decode_example
    out = {}
    for path in sorted(tf.io.gfile.glob(pattern)):
        for raw in tf.data.TFRecordDataset(path):
            example = {k: v.numpy() for k, v in decode_example(raw).items()}
            present = tf.train.Example.FromString(raw.numpy()).features.feature
            optional = {k: v for k, v in {**PASCAL_KEYS, MASK_KEY: "bytes"}.items()
                        if k in present}
            parsed = tf.io.parse_single_example(
                raw, automl_spec({**AUTOML_KEYS, **optional}))
            example["raw"] = {k: (tf.sparse.to_dense(v) if isinstance(
                v, tf.SparseTensor) else v).numpy() for k, v in parsed.items()}
            example["shard"] = os.path.basename(path)
            out[example["source_id"].decode()] = example
    return out


# ---------------------------------------------------------------- COCO

@pytest.mark.slow  # runs the CLI in a subprocess
def test_coco_cli_round_trip_with_official_keys(tmp_path):
    images = tmp_path / "images"
    for name in ("a.jpg", "b.jpg", "neg.jpg"):
        save_image(images / name, size=(64, 48))
    coco_json(tmp_path / "instances.json",
              [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
               {"id": 8, "file_name": "b.jpg", "width": 64, "height": 48},
               {"id": 9, "file_name": "neg.jpg", "width": 64, "height": 48}],
              [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [3.5, 4, 20, 10],
                "area": 150.0, "iscrowd": 0},
               {"id": 2, "image_id": 7, "category_id": 3, "bbox": [10, 20, 30, 25],
                "area": 700.0, "iscrowd": 1},
               {"id": 3, "image_id": 8, "category_id": 3, "bbox": [0, 0, 64, 48],
                "area": 3072.0, "iscrowd": 0}])
    prefix = tmp_path / "out" / "coco"
    result = run_cli("create_coco_tfrecord.py", f"--image_dir={images}",
                     f"--object_annotations_file={tmp_path / 'instances.json'}",
                     f"--output_file_prefix={prefix}", "--num_shards=2",
                     "--num_threads=2")
    assert result.returncode == 0, result.stderr
    assert "images written: 3" in result.stdout
    assert "\r" not in result.stdout and "3/3 images (100%)" in result.stdout
    assert sorted(os.listdir(prefix.parent)) == [
        "coco-00000-of-00002.tfrecord", "coco-00001-of-00002.tfrecord"]
    records = read_records(f"{prefix}-*.tfrecord")
    assert sorted(records) == ["7", "8", "9"]
    a = records["7"]
    np.testing.assert_allclose(a["boxes"], [[4 / 48, 3.5 / 64, 14 / 48, 23.5 / 64],
                                            [20 / 48, 10 / 64, 45 / 48, 40 / 64]],
                               atol=1e-6)
    assert a["classes"].tolist() == [1, 3]  # category ids kept, gaps and all
    assert a["texts"].tolist() == [b"cat", b"dog"]
    assert a["is_crowd"].tolist() == [0, 1]
    np.testing.assert_allclose(a["areas"], [150, 700])
    assert a["filename"] == b"a.jpg" and a["image"].shape == (48, 64, 3)
    assert set(AUTOML_KEYS) <= set(a["raw"])
    assert a["raw"]["image/format"] == b"jpeg"
    assert list(a["raw"]["image/object/class/label"]) == [1, 3]
    assert len(records["9"]["boxes"]) == 0  # a negative, kept
    assert {r["shard"] for r in records.values()} == {
        "coco-00000-of-00002.tfrecord", "coco-00001-of-00002.tfrecord"}


def test_coco_masks_from_polygon_and_rle(tmp_path):
    from pycocotools import mask as mask_util
    save_image(tmp_path / "a.jpg", size=(40, 30))
    square = np.zeros((30, 40), np.uint8, order="F")
    square[5:15, 20:30] = 1
    rle = mask_util.encode(square)
    rle["counts"] = rle["counts"].decode()
    coco_json(tmp_path / "in.json",
              [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
              [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10],
                "area": 100, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
               {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 5, 10, 10],
                "area": 100, "iscrowd": 1, "segmentation": rle}])
    convert_coco(str(tmp_path), str(tmp_path / "in.json"),
                 str(tmp_path / "rec"), include_masks=True, num_threads=1)
    record = read_records(str(tmp_path / "rec-*"))["1"]
    decoded = [np.asarray(Image.open(io.BytesIO(m)))
               for m in record["raw"][MASK_KEY]]
    assert [m.shape for m in decoded] == [(30, 40), (30, 40)]
    assert set(np.unique(decoded[0])) == {0, 1}
    assert decoded[0][3:12, 3:12].all() and not decoded[0][20:, 20:].any()
    np.testing.assert_array_equal(decoded[1], square)
    assert record["is_crowd"].tolist() == [0, 1]


def test_coco_skip_empty_and_unknown_category(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        save_image(tmp_path / name)
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]
    anns = [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 6, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]}]
    coco_json(tmp_path / "in.json", images, anns)
    with pytest.raises(ConversionError) as error:
        convert_coco(str(tmp_path), str(tmp_path / "in.json"), str(tmp_path / "r"))
    assert str(error.value).startswith(
        f"{tmp_path / 'in.json'}: image 'a.jpg' (id 1): object 2 (annotation "
        "id 6) has category_id 99, not in categories (known: 1 cat, 3 dog)")
    result = convert_coco(str(tmp_path), str(tmp_path / "in.json"),
                          str(tmp_path / "r"), options=Options(
                              skip_empty=True, skip_unknown_classes=True))
    assert result.report.images == 1
    assert result.report.skipped_images[validation.EMPTY] == 1
    assert result.report.skipped_boxes[validation.UNKNOWN_CLASS] == 1


# ---------------------------------------------------------------- VOC

def make_labelimg_folder(root: pathlib.Path) -> None:
    save_image(root / "img1.jpg", size=(100, 80))
    save_image(root / "img2.jpg", size=(50, 40))
    write_xml(root / "img1.xml", "img1.jpg", (100, 80),
              [("zebra", (10, 20, 60, 70), 0, 1), ("apple", (0, 0, 100, 80), 1, 0)])
    write_xml(root / "img2.xml", "img2.jpg", (50, 40),
              [("apple", (5.5, 6, 25, 30), 0, 0)])


@pytest.mark.slow  # runs the CLI in a subprocess
def test_pascal_cli_labelimg_folder_round_trip_and_coco_json(tmp_path):
    from pycocotools.coco import COCO
    make_labelimg_folder(tmp_path / "labels")
    out = tmp_path / "out" / "train"
    result = run_cli("create_pascal_tfrecord.py",
                     f"--annotations_dir={tmp_path / 'labels'}",
                     f"--output_path={out}", "--num_shards=2")
    assert result.returncode == 0, result.stderr
    # Derived map: sorted names, ids 1..K, written next to the records.
    assert yaml.safe_load((tmp_path / "out" / "train.label_map.yaml").read_text()) \
        == {1: "apple", 2: "zebra"}
    records = read_records(f"{out}-*.tfrecord")
    one = records["1"]
    np.testing.assert_allclose(one["boxes"], [[20 / 80, 10 / 100, 70 / 80, 60 / 100],
                                              [0, 0, 1, 1]], atol=1e-6)
    assert one["classes"].tolist() == [2, 1]
    assert one["texts"].tolist() == [b"zebra", b"apple"]
    assert set(AUTOML_KEYS) | set(PASCAL_KEYS) <= set(one["raw"])
    assert list(one["raw"]["image/object/difficult"]) == [0, 1]
    assert list(one["raw"]["image/object/truncated"]) == [1, 0]
    assert list(one["raw"]["image/object/view"]) == [b"Left", b"Left"]
    np.testing.assert_allclose(records["2"]["boxes"],
                               [[6 / 40, 5.5 / 50, 30 / 40, 25 / 50]], atol=1e-6)
    # The COCO ground truth: ids = source_id / label ids, pixel xywh.
    coco = COCO(str(tmp_path / "out" / "train.json"))
    assert sorted(coco.getImgIds()) == [1, 2]
    assert {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())} == {
        1: "apple", 2: "zebra"}
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[2]))
    assert [(a["category_id"], a["bbox"], a["iscrowd"]) for a in anns] == [
        (1, [5.5, 6.0, 19.5, 24.0], 0)]
    assert anns[0]["area"] == pytest.approx(19.5 * 24)
    assert coco.loadImgs([1])[0]["file_name"] == "img1.jpg"
    # voc_to_coco (no image decoding) gives the same JSON.
    result = run_cli("voc_to_coco.py", f"--annotations_dir={tmp_path / 'labels'}",
                     f"--output_json_path={tmp_path / 'only.json'}")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "only.json").read_text()) == json.loads(
        (tmp_path / "out" / "train.json").read_text())


def test_pascal_devkit_layout_with_label_map_and_difficult(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("000005\n000007\n")
    for stem in ("000005", "000007", "000009"):
        save_image(root / "JPEGImages" / f"{stem}.jpg", size=(60, 40))
        write_xml(root / "Annotations" / f"{stem}.xml", f"{stem}.jpg", (60, 40),
                  [("car", (1, 2, 30, 20), 1, 0), ("person", (5, 5, 20, 35), 0, 0)])
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"background": 0, "person": 1, "car": 7}))
    result = convert_pascal(
        VocSource(data_dir=str(tmp_path / "VOCdevkit"), year="2007", split="train"),
        str(tmp_path / "voc"), label_map_path=str(label_map),
        options=Options(ignore_difficult=True), num_threads=1)
    assert result.report.images == 2  # 000009 is not in train.txt
    assert result.report.skipped_boxes[validation.DIFFICULT] == 2
    assert not (tmp_path / "voc.label_map.yaml").exists()  # given, not derived
    records = read_records(str(tmp_path / "voc-*"))
    assert sorted(records) == ["1", "2"]
    assert records["1"]["filename"] == b"000005.jpg"
    assert records["1"]["classes"].tolist() == [1]


def test_label_map_file_forms(tmp_path):
    forms = {"a.yaml": "1: person\n2: car\n", "b.json": '{"person": 1, "car": 2}',
             "c.yaml": "num_classes: 3\nlabel_map: {1: person, 2: car}\n",
             "d.json": '{"1": "person", "2": "car"}'}
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        assert LabelMap.load(str(tmp_path / name)).id_to_name == {1: "person", 2: "car"}
    (tmp_path / "bad.yaml").write_text("[person, car]\n")
    with pytest.raises(ConversionError, match="bad.yaml: a label map must be"):
        LabelMap.load(str(tmp_path / "bad.yaml"))
    (tmp_path / "broken.json").write_text('{"person": 1,,}')
    with pytest.raises(ConversionError, match=r"broken.json: malformed JSON \(line 1"):
        LabelMap.load(str(tmp_path / "broken.json"))


# ---------------------------------------------------------------- bad input

def convert_folder(root: pathlib.Path, options: Options = Options(), **kwargs):
    return convert_pascal(VocSource(annotations_dir=str(root)),
                          str(root / "out" / "rec"), options=options,
                          num_threads=2, **kwargs)


def test_corrupt_and_missing_images_are_skipped_and_counted(tmp_path):
    save_image(tmp_path / "good.jpg")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (48, 64, 3), np.uint8)).save(buffer, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[:600])  # truncated
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    for stem in ("good", "cut", "junk", "gone"):
        write_xml(tmp_path / f"{stem}.xml", f"{stem}.jpg", (64, 48),
                  [("a", (1, 1, 10, 10), 0, 0)])
    report = convert_folder(tmp_path).report
    assert report.images == 1
    assert report.skipped_images == {"corrupt or unreadable image": 2,
                                     "missing image": 1}
    messages = [m for _, m in report.warnings]
    assert any(m.startswith(str(tmp_path / "cut.jpg")) for m in messages)
    assert "corrupt or unreadable image: 2" in report.summary()


@pytest.mark.parametrize("mode,fmt,colour", [
    ("L", "JPEG", 128), ("RGB", "PNG", (10, 200, 30)),
    ("CMYK", "JPEG", (0, 255, 255, 0)), ("RGBA", "PNG", (255, 0, 0, 0)),
    ("P", "PNG", 3)])
def test_other_formats_are_reencoded_as_rgb_jpeg(tmp_path, mode, fmt, colour):
    save_image(tmp_path / "x.img", mode=mode, fmt=fmt, colour=colour)
    write_xml(tmp_path / "x.xml", "x.img", (64, 48), [("a", (1, 1, 10, 10), 0, 0)])
    report = convert_folder(tmp_path).report
    assert report.fixes and all("RGB" in k or "JPEG" in k for k in report.fixes)
    record = read_records(str(tmp_path / "out" / "rec-*"))["1"]
    assert record["raw"]["image/encoded"][:2] == b"\xff\xd8"  # JPEG
    assert record["raw"]["image/format"] == b"jpeg"
    assert record["image"].shape == (48, 64, 3)
    if mode == "RGBA":  # fully transparent -> white, not the hidden red
        assert record["image"].min() > 240


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40x20 with a red top-left corner; orientation 6 displays it
    # rotated 90 degrees clockwise (20x40), the red corner at the top right,
    # where LabelImg users draw the box.
    stored = np.full((20, 40, 3), 255, np.uint8)
    stored[:10, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif.tobytes())
    write_xml(tmp_path / "r.xml", "r.jpg", (20, 40), [("a", (10, 0, 20, 10), 0, 0)])
    report = convert_folder(tmp_path).report
    assert report.fixes["applied EXIF orientation"] == 1
    assert report.fixes[validation.SIZE_MISMATCH] == 0
    record = read_records(str(tmp_path / "out" / "rec-*"))["1"]
    assert record["image"].shape == (40, 20, 3)
    patch = record["image"][1:9, 11:19].astype(int)
    assert (patch[..., 0] > 200).all() and (patch[..., 1] < 60).all()
    np.testing.assert_allclose(record["boxes"], [[0, 0.5, 0.25, 1]], atol=1e-6)


def test_boxes_clipped_zero_area_inverted_skipped(tmp_path):
    save_image(tmp_path / "a.jpg", size=(64, 48))
    write_xml(tmp_path / "a.xml", "a.jpg", (64, 48), [
        ("a", (-5, 10, 70, 40), 0, 0),  # clipped to (0, 10, 64, 40)
        ("a", (10, 10, 10, 30), 0, 0),  # zero width
        ("a", (30, 10, 20, 30), 0, 0),  # xmin > xmax
        ("a", (80, 10, 90, 30), 0, 0),  # right of the image
        ("a", (1, 2, 3, 4), 0, 0)])
    report = convert_folder(tmp_path).report
    assert report.fixes[validation.CLIPPED] == 1
    assert report.skipped_boxes == {validation.ZERO_AREA: 1,
                                    validation.INVERTED: 1, validation.OUTSIDE: 1}
    record = read_records(str(tmp_path / "out" / "rec-*"))["1"]
    np.testing.assert_allclose(record["boxes"], [[10 / 48, 0, 40 / 48, 1],
                                                 [2 / 48, 1 / 64, 4 / 48, 3 / 64]],
                               atol=1e-6)
    np.testing.assert_allclose(record["areas"], [64 * 30, 4])


def test_size_mismatch_uses_the_image_and_warns(tmp_path):
    save_image(tmp_path / "a.jpg", size=(64, 48))
    write_xml(tmp_path / "a.xml", "a.jpg", (128, 96), [("a", (8, 8, 32, 24), 0, 0)])
    report = convert_folder(tmp_path).report
    assert report.fixes[validation.SIZE_MISMATCH] == 1
    assert report.warnings[0][1].startswith(
        f"{tmp_path / 'a.xml'}: annotation says 128x96 but the image is 64x48")
    record = read_records(str(tmp_path / "out" / "rec-*"))["1"]
    np.testing.assert_allclose(record["boxes"], [[8 / 48, 8 / 64, 24 / 48, 32 / 64]],
                               atol=1e-6)


@pytest.mark.slow  # runs the CLI in a subprocess
def test_unknown_class_is_one_line_error_naming_file_and_object(tmp_path):
    save_image(tmp_path / "annotations" / "0007.jpg")
    write_xml(tmp_path / "annotations" / "0007.xml", "0007.jpg", (64, 48),
              [("person", (1, 1, 9, 9), 0, 0), ("car", (1, 1, 9, 9), 0, 0),
               ("bicycle", (1, 1, 9, 9), 0, 0)])
    (tmp_path / "map.yaml").write_text("1: person\n2: car\n3: bus\n")
    result = run_cli("create_pascal_tfrecord.py", "--annotations_dir=annotations",
                     "--label_map_json_path=map.yaml", "--output_path=out/rec",
                     cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "create_pascal_tfrecord.py: error: annotations/0007.xml: object 3 "
        "'bicycle' is not in label_map (known: person, car, bus); pass "
        "--skip_unknown_classes to drop such objects"]
    assert not (tmp_path / "out").exists()
    report = convert_pascal(
        VocSource(annotations_dir=str(tmp_path / "annotations")),
        str(tmp_path / "out" / "rec"), label_map_path=str(tmp_path / "map.yaml"),
        options=Options(skip_unknown_classes=True)).report
    assert report.skipped_boxes[validation.UNKNOWN_CLASS] == 1
    assert report.boxes == {(1, "person"): 1, (2, "car"): 1}


@pytest.mark.slow  # runs the CLI in a subprocess
def test_malformed_xml_and_json_name_the_file(tmp_path):
    save_image(tmp_path / "a.jpg")
    (tmp_path / "a.xml").write_text("<annotation><object><name>x</name></annotation>")
    with pytest.raises(ConversionError, match=r"a\.xml: malformed XML \(mismatched tag"):
        convert_folder(tmp_path)
    write_xml(tmp_path / "a.xml", "a.jpg", (64, 48), [("x", (1, "one", 5, 5), 0, 0)])
    with pytest.raises(ConversionError,
                       match=r"a\.xml: object 1 'x': <bndbox/ymin> is not a number"):
        convert_folder(tmp_path)
    (tmp_path / "in.json").write_text('{"images": [}')
    result = run_cli("create_coco_tfrecord.py", f"--image_dir={tmp_path}",
                     f"--object_annotations_file={tmp_path / 'in.json'}",
                     f"--output_file_prefix={tmp_path / 'rec'}")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"create_coco_tfrecord.py: error: {tmp_path / 'in.json'}: malformed "
        "JSON (line 1, column 13: Expecting value)")


def test_duplicate_file_names_error_or_skip(tmp_path):
    save_image(tmp_path / "a.jpg")
    for stem in ("a", "a_copy"):
        write_xml(tmp_path / f"{stem}.xml", "a.jpg", (64, 48), [("x", (1, 1, 5, 5), 0, 0)])
    with pytest.raises(ConversionError, match=(
            r"duplicate file name 'a.jpg': .*a_copy\.xml -> .*a\.jpg repeats "
            r".*a\.xml -> .*a\.jpg \(pass --duplicates=skip")):
        convert_folder(tmp_path)
    report = convert_folder(tmp_path, Options(duplicates="skip")).report
    assert report.images == 1 and report.skipped_images[validation.DUPLICATE] == 1
    coco_json(tmp_path / "in.json", [{"id": 1, "file_name": "a.jpg"},
                                     {"id": 2, "file_name": "A.JPG"}], [])
    with pytest.raises(ConversionError, match="'A.JPG': image id 2 repeats image id 1"):
        convert_coco(str(tmp_path), str(tmp_path / "in.json"), str(tmp_path / "r"))


def test_empty_datasets_are_clear_errors_and_leave_no_files(tmp_path):
    (tmp_path / "labels").mkdir()
    with pytest.raises(ConversionError, match="no annotation files found"):
        convert_folder(tmp_path / "labels")
    coco_json(tmp_path / "in.json", [], [])
    with pytest.raises(ConversionError, match="in.json: lists no images"):
        convert_coco(str(tmp_path), str(tmp_path / "in.json"), str(tmp_path / "r"))
    (tmp_path / "labels" / "x.jpg").write_bytes(b"broken")
    write_xml(tmp_path / "labels" / "x.xml", "x.jpg", (9, 9), [("a", (1, 1, 5, 5), 0, 0)])
    with pytest.raises(ConversionError,
                       match=r"no images written \(of 1: 1 corrupt or unreadable"):
        convert_folder(tmp_path / "labels")
    assert os.listdir(tmp_path / "labels" / "out") == []  # no shard, no temp


def test_failed_conversion_leaves_no_complete_looking_shard(tmp_path):
    from efficientdet_tf.datasets.writer import write_records

    def build(item):
        if item == 3:
            raise RuntimeError("killed")
        from efficientdet_tf.datasets.annotations import ImageRecord
        return ImageRecord(f"{item}.jpg", str(item), 4, 4, [], encoded=b"x"), Report()

    with pytest.raises(RuntimeError):
        write_records(list(range(6)), build, str(tmp_path / "rec"), 2, Report(),
                      num_threads=2)
    assert os.listdir(tmp_path) == []


def test_voc_to_coco_uses_xml_sizes_without_decoding(tmp_path):
    write_xml(tmp_path / "a.xml", "a.jpg", (64, 48), [("b", (1, 2, 70, 40), 0, 0),
                                                      ("a", (3, 3, 3, 9), 0, 0)])
    data, report = voc_to_coco(VocSource(annotations_dir=str(tmp_path)))
    assert data["images"] == [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}]
    assert [a["bbox"] for a in data["annotations"]] == [[1.0, 2.0, 63.0, 38.0]]
    assert data["categories"][1] == {"id": 2, "name": "b", "supercategory": "none"}
    assert report.fixes[validation.CLIPPED] == 1
    assert report.skipped_boxes[validation.ZERO_AREA] == 1


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise():
    from efficientdet_tf.utils.progress import CountProgress

    class Stream(io.StringIO):
        def __init__(self, tty: bool):
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    for tty in (False, True):
        stream = Stream(tty)
        progress = CountProgress(20, stream=stream)
        for done in range(1, 21):
            progress.update(done)
        progress.close()
        text = stream.getvalue()
        if tty:
            assert text.startswith("\r[") and "20/20 images (100%)" in text
        else:
            assert "\r" not in text and len(text.splitlines()) == 10
            assert text.splitlines()[0].startswith("2/20 images (10%)")
