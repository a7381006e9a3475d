"""COCO evaluation: metric plumbing on hand-made data, then ``evaluate`` end
to end on tiny records.

The end-to-end tests that need exact answers use :class:`GroundTruthModel`,
a stand-in network whose outputs decode to each image's ground-truth boxes
in *network-input* pixels. AP 1 against a COCO JSON written in *original*
pixels then proves that detections are mapped back through
``image_scale`` correctly, for images smaller and larger than the input,
square or not. A real (untrained) tiny D0 checks the plumbing around an
actual Keras model.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.evaluation import coco_metrics as cm
from efficientdet_tf.config import get_config
from efficientdet_tf.data.pipeline import build_dataset, parse_example
from efficientdet_tf.data.tfrecord import Example, encode_example
from efficientdet_tf.evaluation.evaluate import evaluate, original_image
from efficientdet_tf.modeling.detector import Detector
from efficientdet_tf.modeling.model import num_anchors
from efficientdet_tf.ops.geometry import scale_geometry

LABEL_MAP = {1: "circle", 2: "square", 3: "triangle"}


def tiny_config(**overrides):
    values = {"image_size": 128, "num_classes": 3, "label_map": LABEL_MAP,
              "max_instances_per_image": 8}
    values.update(overrides)
    return get_config("efficientdet-d0", values)


# --- metric plumbing, no model ---------------------------------------------

def truth(source_id, height, width, boxes, classes, crowd=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return cm.ImageTruth(source_id, height, width, boxes,
                         np.asarray(classes, np.int32),
                         np.asarray(crowd or [0] * len(classes), np.int32))


TRUTHS = [truth("1", 100, 80, [[10, 10, 50, 40], [20, 30, 90, 75]], [1, 2]),
          truth("2", 60, 90, [[5, 5, 45, 60]], [3])]


def perfect_results(truths, shift=0.0, score=0.9):
    return cm.detections_to_coco(
        [int(t.source_id) for t in truths],
        [t.boxes + shift for t in truths],
        [np.full(len(t.classes), score) for t in truths],
        [t.classes for t in truths])


def test_detections_equal_to_ground_truth_score_one():
    gt = cm.ground_truth_from_records(TRUTHS, 3, LABEL_MAP)
    metrics = cm.coco_metrics(gt, perfect_results(TRUTHS), label_map=LABEL_MAP)
    assert list(metrics)[:12] == list(cm.METRIC_NAMES)
    for name in ("AP", "AP50", "AP75", "ARmax100"):
        assert metrics[name] == pytest.approx(1.0)
    assert metrics["APl"] == -1.0  # no large object: nothing to measure
    assert [metrics[f"AP_/{n}"] for n in LABEL_MAP.values()] == pytest.approx(
        [1.0] * 3)


def test_shifted_boxes_score_lower():
    gt = cm.ground_truth_from_records(TRUTHS, 3)
    metrics = cm.coco_metrics(gt, perfect_results(TRUTHS, shift=4.0))
    assert 0.0 < metrics["AP"] < 1.0
    assert metrics["AP"] < metrics["AP50"]
    assert metrics["AP_/1"] < 1.0  # no label map: the category ids


def test_zero_detections_give_zeros(caplog):
    gt = cm.ground_truth_from_records(TRUTHS, 3, LABEL_MAP)
    with caplog.at_level(logging.WARNING):
        metrics = cm.coco_metrics(gt, [])
    assert "no detections" in caplog.text
    assert set(metrics) == set(cm.METRIC_NAMES) | {
        f"AP_/{n}" for n in LABEL_MAP.values()}
    measured = {k: v for k, v in metrics.items() if v != -1.0}
    assert measured and set(measured.values()) == {0.0}
    assert metrics["AP"] == metrics["ARmax100"] == 0.0


def test_per_class_names_and_classes_without_ground_truth():
    gt = cm.ground_truth_from_records(TRUTHS[:1], 4, {1: "cat", 2: "dog"})
    assert [c["name"] for c in gt["categories"]] == ["cat", "dog", "3", "4"]
    results = perfect_results(TRUTHS[:1])
    metrics = cm.coco_metrics(gt, results, label_map={1: "cat", 2: "dog"})
    assert metrics["AP_/cat"] == metrics["AP_/dog"] == pytest.approx(1.0)
    assert metrics["AP_/3"] == metrics["AP_/4"] == -1.0
    # A label map given to coco_metrics names classes of any ground truth.
    renamed = cm.coco_metrics(gt, results, label_map={3: "bird"})
    assert "AP_/bird" in renamed and "AP_/cat" in renamed


def test_detections_to_coco_xywh_and_padding():
    boxes = np.array([[[10, 20, 30, 60], [1, 2, 3, 4], [0, 0, 0, 0]]], np.float32)
    results = cm.detections_to_coco([42], boxes, np.array([[0.9, 0.5, 0.0]]),
                                    np.array([[2, 1, 0]]), num_detections=[2])
    assert results == [
        {"image_id": 42, "category_id": 2, "bbox": [20.0, 10.0, 40.0, 20.0],
         "score": pytest.approx(0.9)},
        {"image_id": 42, "category_id": 1, "bbox": [2.0, 1.0, 2.0, 2.0],
         "score": pytest.approx(0.5)}]
    assert isinstance(results[0]["bbox"][0], float)  # JSON-serialisable
    json.dumps(results)


def test_ground_truth_from_records_ids_crowd_and_area():
    gt = cm.ground_truth_from_records(
        [truth("a.jpg", 10, 20, [[1, 2, 5, 10]], [1], crowd=[1]),
         truth("b.jpg", 10, 20, [], [])], 2)
    assert [(i["id"], i["file_name"]) for i in gt["images"]] == [
        (1, "a.jpg"), (2, "b.jpg")]
    (ann,) = gt["annotations"]
    assert ann["bbox"] == [2.0, 1.0, 8.0, 4.0] and ann["area"] == 32.0
    assert ann["iscrowd"] == 1
    numeric = cm.ground_truth_from_records(TRUTHS, 3)
    assert [i["id"] for i in numeric["images"]] == [1, 2]
    with pytest.raises(ValueError, match="duplicate source ids"):
        cm.ground_truth_from_records([TRUTHS[0], TRUTHS[0]], 3)


def test_image_id_resolver():
    resolve = cm.ImageIdResolver({"images": [
        {"id": 397133, "file_name": "val/000000397133.jpg"},
        {"id": 7, "file_name": "12"},
        {"id": 12, "file_name": "x/dup.jpg"},
        {"id": 13, "file_name": "y/dup.jpg"}]})
    assert resolve("397133") == 397133
    assert resolve("000000397133") == 397133  # integer value
    assert resolve("val/000000397133.jpg") == 397133
    assert resolve("000000397133.jpg") == 397133
    assert resolve("12") == 7  # the file name wins over the integer id
    for unknown in ("dup", "99"):  # ambiguous stem / no such id
        with pytest.raises(ValueError, match="same conversion"):
            resolve(unknown)


def test_results_for_images_outside_the_ground_truth():
    gt = cm.ground_truth_from_records(TRUTHS, 3)
    results = perfect_results(TRUTHS)
    results[0] = dict(results[0], image_id=99)
    with pytest.raises(ValueError, match="not in the ground truth"):
        cm.coco_metrics(gt, results)


def test_format_metrics():
    text = cm.format_metrics({**dict.fromkeys(cm.METRIC_NAMES, 0.5),
                              "APs": -1.0, "AP_/circle": 0.25}, "title")
    assert text.splitlines()[0] == "title"
    assert "APs" in text and "n/a" in text and "circle" in text


@pytest.mark.parametrize("overrides", [{}, {"mean_rgb": 127.0,
                                            "stddev_rgb": 128.0}])
@pytest.mark.parametrize("size", [(48, 80), (200, 150)])
def test_original_image_undoes_normalisation_and_resize(tmp_path, size,
                                                        overrides):
    config = tiny_config(**overrides)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([yy * 200 // height + 20, xx * 200 // width + 20,
                      np.full_like(yy, 90)], -1).astype(np.uint8)
    example = make_example(image, [(5, 5, 20, 20)], [1], "1")
    network_input, labels = parse_example(
        tf.constant(encode_example(example)), config, training=False)
    restored = original_image(network_input.numpy(), size,
                              config.mean_rgb, config.stddev_rgb)
    assert restored.shape == (height, width, 3) and restored.dtype == np.uint8
    # PNG is lossless, so only the two resamplings differ from the source.
    assert np.abs(restored.astype(int) - image).mean() < 3.0


def eval_input(image, config):
    """The eval pipeline's network input and labels for a uint8 image."""
    example = make_example(image, [(0, 0, 8, 8)], [1], "1")
    network_input, labels = parse_example(
        tf.constant(encode_example(example)), config, training=False)
    return network_input.numpy(), labels


def test_original_image_maps_the_eval_input_back_by_hand():
    """A 32x64 image into the 128x128 input and back, every pixel known.

    Scale min(128/32, 128/64) = 2: the image fills rows 0-63, rows 64-127
    are padding (0 once normalised). Channel 0 steps from 31 to 223 at
    column 32, channel 1 from 223 to 31 at row 16, channel 2 is 159; with
    mean 127 and stddev 128 these are -0.75, 0.75 and 0.25, and every
    bilinear weight is a power of two, so all values are exact. Upsampling
    by 2 (half-pixel centres) mixes the two sides 3:1 and 1:3 in input
    columns 63 and 64; downsampling by 2 averages input columns 2i and
    2i + 1, so original column i returns as 3/4 x[i] + 1/8 (x[i-1] +
    x[i+1]): unchanged away from the step, 7/8 * 31 + 1/8 * 223 = 55 and
    7/8 * 223 + 1/8 * 31 = 199 on either side of it. Padding read back
    would show as 127 in channel 2.
    """
    config = tiny_config(mean_rgb=127.0, stddev_rgb=128.0)
    image = np.empty((32, 64, 3), np.uint8)
    image[..., 0] = np.where(np.arange(64) < 32, 31, 223)
    image[..., 1] = np.where(np.arange(32) < 16, 223, 31)[:, None]
    image[..., 2] = 159
    network_input, labels = eval_input(image, config)

    assert float(labels["image_scale"]) == 2.0
    np.testing.assert_array_equal(labels["image_size"], [32, 64])
    np.testing.assert_array_equal(
        network_input[:64, :, 0],
        np.tile([-0.75] * 63 + [-0.375, 0.375] + [0.75] * 63, (64, 1)))
    np.testing.assert_array_equal(
        network_input[:64, :, 1],
        np.tile(np.array([0.75] * 31 + [0.375, -0.375] + [-0.75] * 31)[:, None],
                (1, 128)))
    np.testing.assert_array_equal(network_input[:64, :, 2], 0.25)
    np.testing.assert_array_equal(network_input[64:], 0.0)

    restored = original_image(network_input,
                              (32, 64), config.mean_rgb, config.stddev_rgb)
    assert restored.shape == (32, 64, 3) and restored.dtype == np.uint8
    np.testing.assert_array_equal(
        restored[..., 0], np.tile([31] * 31 + [55, 199] + [223] * 31, (32, 1)))
    np.testing.assert_array_equal(
        restored[..., 1],
        np.tile(np.array([223] * 15 + [199, 55] + [31] * 15)[:, None], (1, 64)))
    np.testing.assert_array_equal(restored[..., 2], 159)


# (original size, region the pipeline fills in the 128x128 input). 30x41:
# 41 * float32(128 / 41) rounds below 128, so the pipeline leaves a padding
# column that exact arithmetic would not; 30x43: 43 * float32(128 / 43) is
# 128 in float32 but 127.99... in float64.
FILLED_REGIONS = [((100, 80), (128, 102)), ((64, 120), (68, 128)),
                  ((200, 150), (128, 96)), ((77, 131), (75, 128)),
                  ((30, 41), (93, 127)), ((30, 43), (89, 128))]


@pytest.mark.parametrize("size, filled", FILLED_REGIONS,
                         ids=[f"{h}x{w}" for (h, w), _ in FILLED_REGIONS])
def test_original_image_geometry_matches_pipeline(size, filled):
    """``original_image`` crops exactly the region the pipeline filled (its
    size in float32 like ``scale_geometry``): the region is read
    off the pipeline's own output, then random content in it with extreme
    padding around it must come back as that region resized, and nothing
    else, so one row or column too many or too few shows."""
    config = tiny_config(mean_rgb=127.0, stddev_rgb=128.0)
    network_input, labels = eval_input(np.full((*size, 3), 223, np.uint8),
                                       config)
    content = np.any(network_input != 0.0, axis=-1)
    rows, cols = int(content.any(1).sum()), int(content.any(0).sum())
    assert (rows, cols) == filled
    assert content[:rows, :cols].all() and content.sum() == rows * cols
    geometry = scale_geometry(tf.constant(size), (128, 128))
    assert tuple(geometry.scaled_size.numpy()) == filled

    rng = np.random.default_rng(sum(size))
    probe = np.full(network_input.shape, 10.0, np.float32)  # 255 once clipped
    probe[:rows, :cols] = rng.uniform(-0.9, 0.9, (rows, cols, 3))
    restored = original_image(probe, size,
                              config.mean_rgb, config.stddev_rgb)
    region = tf.image.resize(probe[:rows, :cols] * 128.0 + 127.0, size).numpy()
    np.testing.assert_array_equal(restored,
                                  np.clip(np.round(region), 0, 255))


# --- end to end on records ---------------------------------------------------

def make_example(image, boxes, classes, source_id, fmt="png"):
    """``boxes`` in pixels (ymin, xmin, ymax, xmax); PNG keeps pixels exact."""
    height, width = image.shape[:2]
    encoded = (tf.io.encode_png(image) if fmt == "png"
               else tf.io.encode_jpeg(image, quality=95)).numpy()
    return Example(
        encoded=encoded, height=height, width=width,
        filename=f"img_{source_id}.{fmt}", source_id=str(source_id),
        image_format=fmt,
        boxes=[(y0 / height, x0 / width, y1 / height, x1 / width)
               for y0, x0, y1, x1 in boxes],
        labels=list(classes), texts=[LABEL_MAP[c] for c in classes],
        is_crowd=[0] * len(boxes),
        areas=[float((y1 - y0) * (x1 - x0)) for y0, x0, y1, x1 in boxes])


def drawn_image(height, width, boxes, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
    for ymin, xmin, ymax, xmax in boxes:
        image[ymin:ymax, xmin:xmax] = rng.integers(120, 255, 3)
    return image


# Smaller and larger than the 128 input, square and not, so every image has
# its own scale; boxes are >= 30 px so the sub-pixel rounding of the
# pipeline keeps IoU far above 0.95.
SCENES = [
    ("101", (100, 80), [(10, 10, 60, 50)], [1]),
    ("102", (64, 120), [(5, 10, 45, 70), (20, 75, 60, 115)], [2, 3]),
    ("103", (200, 150), [(20, 20, 190, 140)], [3]),
    ("104", (90, 90), [(30, 40, 80, 85), (2, 2, 40, 36)], [1, 1]),
]


def coco_json(scenes):
    """The ground truth a converter writes: original pixels, id = source_id."""
    images, annotations = [], []
    for source_id, (height, width), boxes, classes in scenes:
        images.append({"id": int(source_id), "file_name": f"img_{source_id}.png",
                       "height": height, "width": width})
        for (y0, x0, y1, x1), label in zip(boxes, classes):
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(source_id),
                "category_id": label, "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in LABEL_MAP.items()]}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Two shards of the scenes and their COCO JSON."""
    folder = tmp_path_factory.mktemp("records")
    examples = [make_example(drawn_image(*size, boxes, int(sid)), boxes,
                             classes, sid)
                for sid, size, boxes, classes in SCENES]
    for shard, part in enumerate((examples[:2], examples[2:])):
        with tf.io.TFRecordWriter(str(folder / f"val-{shard:05d}-of-00002"
                                             ".tfrecord")) as writer:
            for example in part:
                writer.write(encode_example(example))
    json_path = folder / "val.json"
    json_path.write_text(json.dumps(coco_json(SCENES)))
    return str(folder / "val-*.tfrecord"), str(json_path)


class GroundTruthModel:
    """A stand-in network whose outputs decode to the image's ground truth.

    It precomputes, per image (keyed by the bytes of its network input), the
    eval pipeline's anchor targets as confident logits and the box targets
    as box codes: exactly what a perfect detector emits, in network-input
    coordinates. The lookup runs in ``tf.py_function`` so the model also
    works inside ``evaluate``'s ``tf.function``. ``class_shift`` relabels
    every object as the next class: perfect boxes, every class wrong.
    """

    def __init__(self, file_pattern, config, class_shift=0):
        self.levels = range(config.min_level, config.max_level + 1)
        classes = np.arange(config.num_classes)
        self.outputs = {}
        for images, labels in build_dataset(file_pattern, config,
                                            training=False, batch_size=1):
            logits, codes = [], []
            for level in self.levels:
                targets = labels[f"cls_targets_{level}"][0].numpy()
                targets = np.where(targets >= 0, (targets + class_shift)
                                   % config.num_classes, targets)
                one_hot = targets[..., None] == classes
                logits.append(np.where(one_hot, 8.0, -8.0).astype(
                    np.float32).reshape(*targets.shape[:2], -1))
                codes.append(labels[f"box_targets_{level}"][0].numpy())
            self.outputs[self.key(images[0].numpy())] = logits + codes
        self.shapes = [o.shape for o in next(iter(self.outputs.values()))]

    @staticmethod
    def key(image):
        return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()

    def lookup(self, images):
        per_image = [self.outputs[self.key(image)] for image in images.numpy()]
        return [np.stack(parts) for parts in zip(*per_image)]

    def __call__(self, images, training=False):
        assert not training
        flat = tf.py_function(self.lookup, [images],
                              [tf.float32] * len(self.shapes))
        for tensor, shape in zip(flat, self.shapes):
            tensor.set_shape([None, *shape])
        count = len(self.levels)
        return flat[:count], flat[count:]


def read_events(folder):
    """{tag: [(step, value or image shape)]} from the event files."""
    events = {}
    for path in glob.glob(str(pathlib.Path(folder) / "events.out.tfevents*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "images":
                    item = tuple(tf.io.decode_png(tensor[2]).shape)
                else:
                    item = float(tensor)
                events.setdefault(value.tag, []).append((event.step, item))
    return events


def test_perfect_model_scores_one_against_original_pixel_json(
        records, tmp_path, capsys):
    pattern, json_path = records
    config = tiny_config()
    model = GroundTruthModel(pattern, config)
    writer = tf.summary.create_file_writer(str(tmp_path / "summaries"))
    metrics = evaluate(Detector(model, config), pattern, val_json_file=json_path,
                       batch_size=3, output_dir=str(tmp_path / "out"),
                       summary_writer=writer, step=7, num_images_to_draw=2)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0)
    assert [metrics[f"AP_/{n}"] for n in LABEL_MAP.values()] == pytest.approx(
        [1.0] * 3)
    assert "triangle 1.0000" in capsys.readouterr().out

    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert saved == pytest.approx(metrics)
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    expected = {(a["image_id"], a["category_id"]): a["bbox"]
                for a in coco_json(SCENES)["annotations"]
                if a["image_id"] != 104}  # two boxes of one class there
    best = {}
    for d in sorted(detections, key=lambda d: -d["score"]):
        best.setdefault((d["image_id"], d["category_id"]), d["bbox"])
    for key, bbox in expected.items():  # original pixels, not network ones
        np.testing.assert_allclose(best[key], bbox, atol=1.6)

    events = read_events(tmp_path / "summaries")
    assert events["AP"] == [(7, pytest.approx(metrics["AP"]))]
    assert "AP_/circle" in events and "ARl" in events
    # The first images read (shards round-robin), at their original sizes.
    drawn = [events[f"eval_images/{k}"] for k in range(2)]
    assert sorted(drawn) == [[(7, (100, 80, 3))], [(7, (200, 150, 3))]]
    assert "eval_images/2" not in events


def test_all_wrong_predictions_score_zero(records, tmp_path):
    """The same perfect boxes, each labelled as another class: every AP
    that has ground truth to measure is exactly 0 (not -1, not a crash)."""
    pattern, json_path = records
    config = tiny_config()
    metrics = evaluate(Detector(GroundTruthModel(pattern, config, class_shift=1), config),
                       pattern, val_json_file=json_path, batch_size=2,
                       output_dir=str(tmp_path))
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert len(detections) >= len(coco_json(SCENES)["annotations"])
    for name in ("AP", "AP50", "AP75", "APm", "ARmax100", *(
            f"AP_/{n}" for n in LABEL_MAP.values())):
        assert metrics[name] == 0.0, name


def test_perfect_model_without_json_and_max_images(records, tmp_path):
    pattern, _ = records
    config = tiny_config(label_map=None)
    model = GroundTruthModel(pattern, config)
    metrics = evaluate(Detector(model, config), pattern, batch_size=2, max_images=3,
                       output_dir=str(tmp_path))
    assert metrics["AP"] == pytest.approx(1.0)
    assert "AP_/1" in metrics and "AP_/3" in metrics
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert {d["image_id"] for d in detections} == {101, 102, 103}


def test_scale_mistakes_would_show(records, tmp_path, monkeypatch):
    """The control for the tests above: the same perfect detections left in
    network pixels (postprocess without the scale) score far below 1."""
    import efficientdet_tf.modeling.detector as detector_module
    pattern, json_path = records
    config = tiny_config()
    real = detector_module.postprocess
    monkeypatch.setattr(detector_module, "postprocess",
                        lambda c, b, cfg, image_scales, portable: real(
                            c, b, cfg, None, portable))
    metrics = evaluate(Detector(GroundTruthModel(pattern, config), config), pattern,
                       val_json_file=json_path)
    assert metrics["AP"] < 0.5


def test_duplicate_source_ids_count_once(tmp_path, caplog):
    # Hard NMS: one confident detection per object (soft-NMS keeps
    # decayed copies of it).
    config = tiny_config(nms_configs={"method": "hard"})
    sid, size, boxes, classes = SCENES[0]
    example = make_example(drawn_image(*size, boxes, 1), boxes, classes, sid)
    pattern = str(tmp_path / "dup.tfrecord")
    with tf.io.TFRecordWriter(pattern) as writer:
        writer.write(encode_example(example))
        writer.write(encode_example(example))
    with caplog.at_level(logging.WARNING):
        metrics = evaluate(Detector(GroundTruthModel(pattern, config), config), pattern,
                           output_dir=str(tmp_path))
    assert "appears again" in caplog.text
    assert metrics["AP"] == pytest.approx(1.0)
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert {d["image_id"] for d in detections} == {101}
    assert sum(d["score"] > 0.5 for d in detections) == 1


def test_no_detections_end_to_end(records, tmp_path, capsys):
    pattern, json_path = records
    config = tiny_config()
    model = GroundTruthModel(pattern, config)
    count = len(model.levels)
    model.outputs = {key: [np.full_like(o, -8.0) for o in outputs[:count]]
                     + outputs[count:] for key, outputs in model.outputs.items()}
    metrics = evaluate(Detector(model, config), pattern, val_json_file=json_path,
                       output_dir=str(tmp_path))
    assert metrics["AP"] == metrics["ARmax100"] == 0.0
    assert json.loads((tmp_path / "detections.json").read_text()) == []
    assert "no detections" in capsys.readouterr().out


def test_records_that_do_not_match_the_json_fail_early(records, tmp_path):
    pattern, _ = records
    other = coco_json(SCENES)
    for image in other["images"]:
        image.update(id=image["id"] + 1000, file_name="other.png")
    json_path = tmp_path / "other.json"
    json_path.write_text(json.dumps(other))

    def model(images, training):
        raise AssertionError("the model must not run")
    with pytest.raises(ValueError, match="'101' is neither"):
        evaluate(Detector(model, tiny_config()), pattern, val_json_file=str(json_path),
                 batch_size=1)


def test_summary_writer_needs_a_step(records, tmp_path):
    pattern, _ = records
    writer = tf.summary.create_file_writer(str(tmp_path))
    with pytest.raises(ValueError, match="needs step"):
        evaluate(Detector(lambda images, training: None, tiny_config()), pattern,
                 summary_writer=writer)


def test_demo_dataset_against_its_coco_json(tmp_path):
    """The generated demo dataset through the COCO converter: its own JSON
    (64 px images, ids 1..N, names from the label map) scores a perfect
    detector at 1."""
    from efficientdet_tf.datasets.coco import convert_coco
    from efficientdet_tf.datasets.demo import make_demo_dataset
    make_demo_dataset(str(tmp_path), num_train=1, num_val=3, image_size=64)
    convert_coco(str(tmp_path / "val" / "images"),
                 str(tmp_path / "val" / "annotations.json"),
                 str(tmp_path / "val"), num_shards=1)
    pattern = str(tmp_path / "val-*.tfrecord")
    config = tiny_config()
    metrics = evaluate(Detector(GroundTruthModel(pattern, config), config), pattern,
                       val_json_file=str(tmp_path / "val" / "annotations.json"))
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP"] > 0.9  # small shapes: sub-pixel rounding counts


def test_real_tiny_model(records, tmp_path):
    """An untrained D0 at 128 px: the plumbing around a real Keras model."""
    from efficientdet_tf.modeling.model import build_model
    pattern, json_path = records
    config = tiny_config()
    model = build_model(config)
    assert num_anchors(config) == 9
    writer = tf.summary.create_file_writer(str(tmp_path / "summaries"))
    with_json = evaluate(Detector(model, config), pattern, val_json_file=json_path,
                         batch_size=3, max_images=2,
                         output_dir=str(tmp_path / "a"),
                         summary_writer=writer, step=1)
    from_records = evaluate(Detector(model, config), pattern, batch_size=3,
                            output_dir=str(tmp_path / "b"))
    names = set(cm.METRIC_NAMES) | {f"AP_/{n}" for n in LABEL_MAP.values()}
    for metrics, folder in ((with_json, "a"), (from_records, "b")):
        assert set(metrics) == names
        assert all(-1.0 <= v <= 1.0 for v in metrics.values())
        saved = json.loads((tmp_path / folder / "eval_results.json").read_text())
        assert saved == pytest.approx(metrics)
    detections = json.loads((tmp_path / "a" / "detections.json").read_text())
    # The first two images read (shards round-robin).
    assert detections and {d["image_id"] for d in detections} == {101, 103}
    assert {d["category_id"] for d in detections} <= {1, 2, 3}
    events = read_events(tmp_path / "summaries")
    assert "AP" in events and "eval_images/0" in events

