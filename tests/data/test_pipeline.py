"""The tf.data input pipeline on tiny generated JPEG records.

Images carry a bright rectangle exactly where their box is, so the tests can
check that every augmentation moves boxes and pixels together.
"""
from __future__ import annotations

import logging
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.ops.anchors import BACKGROUND, IGNORED, label_anchors
from efficientdet_tf.config import ConfigError, get_config
from efficientdet_tf.data import augment
from efficientdet_tf.data.pipeline import build_dataset, targets_from_labels
from efficientdet_tf.data.tfrecord import Example, encode_example
from efficientdet_tf.ops.geometry import scale_geometry

MAX_INSTANCES = 8


def tiny_config(**overrides):
    values = {"image_size": 128, "num_classes": 3,
              "max_instances_per_image": MAX_INSTANCES}
    values.update(overrides)
    return get_config("efficientdet-d0", values)


def image_with_boxes(height, width, boxes):
    """Dark image, value 255 inside each pixel box (ymin, xmin, ymax, xmax)."""
    image = np.full((height, width, 3), 20, np.uint8)
    for ymin, xmin, ymax, xmax in boxes:
        image[ymin:ymax, xmin:xmax] = 255
    return image


def make_example(image, boxes, source_id, classes=None, crowd=None):
    """An Example of ``image`` with pixel ``boxes`` (normalised on write)."""
    height, width = image.shape[:2]
    classes = classes or [1] * len(boxes)
    return Example(
        encoded=tf.io.encode_jpeg(image, quality=95).numpy(),
        height=height, width=width, filename=f"{source_id}.jpg",
        source_id=str(source_id),
        boxes=[(y0 / height, x0 / width, y1 / height, x1 / width)
               for y0, x0, y1, x1 in boxes],
        labels=list(classes), texts=["obj"] * len(boxes),
        is_crowd=list(crowd or [0] * len(boxes)),
        areas=[float((y1 - y0) * (x1 - x0)) for y0, x0, y1, x1 in boxes])


def write_records(path: pathlib.Path, examples) -> str:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(encode_example(example))
    return str(path)


def batches(dataset, count=None):
    """The first ``count`` batches (all when None) as NumPy."""
    dataset = dataset if count is None else dataset.take(count)
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset]


def denormalize(image, config):
    """Network input back to 0-255 (padding becomes the mean colour)."""
    return image * np.asarray(config.stddev_rgb) + np.asarray(config.mean_rgb)


def bright_extent(image, config):
    """(ymin, xmin, ymax, xmax) of the pixels brighter than mid-grey, or None."""
    mask = denormalize(image, config).mean(axis=-1) > 128
    if not mask.any():
        return None
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.float32)


RECT_BOX = (24, 10, 64, 40)  # a bright box in a 96 x 128 image


@pytest.fixture(scope="module")
def rect_records(tmp_path_factory) -> str:
    """Four 96x128 images, each a bright rectangle and its box."""
    folder = tmp_path_factory.mktemp("rect")
    image = image_with_boxes(96, 128, [RECT_BOX])
    return write_records(folder / "rect.tfrecord", [
        make_example(image, [RECT_BOX], source_id=i) for i in range(4)])


def test_eval_boxes_map_by_image_scale_and_image_matches_export(tmp_path):
    config = tiny_config()
    # 64x48 scales by exactly 2 (to 128x96); 96x64 by 4/3 (to 128x85).
    exact = image_with_boxes(64, 48, [(8, 4, 40, 30)])
    inexact = image_with_boxes(96, 64, [(12, 6, 60, 33)])
    path = write_records(tmp_path / "eval.tfrecord", [
        make_example(exact, [(8, 4, 40, 30), (0, 0, 64, 48)], 11, [2, 3]),
        make_example(inexact, [(12, 6, 60, 33)], 12)])
    [(images, labels)] = batches(build_dataset(
        path, config, training=False, batch_size=2, deterministic=True))

    np.testing.assert_allclose(labels["image_scale"], [2.0, 128 / 96])
    np.testing.assert_array_equal(labels["image_size"], [[64, 48], [96, 64]])
    np.testing.assert_array_equal(labels["source_id"], [b"11", b"12"])
    np.testing.assert_array_equal(labels["classes"][0], [2, 3] + [-1] * 6)
    np.testing.assert_array_equal(labels["classes"][1], [1] + [-1] * 7)
    np.testing.assert_allclose(
        labels["boxes"][0, :2],
        np.array([(8, 4, 40, 30), (0, 0, 64, 48)]) * labels["image_scale"][0],
        atol=1e-4)
    # The resized size is truncated to whole pixels (128 x 85, not 85.33):
    # boxes follow the image content, within a pixel of original * scale.
    np.testing.assert_allclose(
        labels["boxes"][1, 0], np.array([12, 6, 60, 33]) / [96, 64, 96, 64] *
        [128, 85, 128, 85], atol=1e-4)
    np.testing.assert_allclose(
        labels["boxes"][1, 0],
        np.array([12, 6, 60, 33]) * labels["image_scale"][1], atol=1.0)
    np.testing.assert_array_equal(labels["boxes"][:, 2:], 0.0)

    # Same pixels as the export path: normalise, resize, pad.
    from efficientdet_tf.ops import preprocess
    for image, record_image in zip(images, (exact, inexact), strict=True):
        decoded = tf.io.decode_jpeg(tf.io.encode_jpeg(record_image, quality=95))
        expected, _ = preprocess.preprocess_image(
            decoded, config.image_size, config.mean_rgb, config.stddev_rgb)
        np.testing.assert_allclose(image, expected, atol=1e-5)


def test_eval_keeps_every_image_in_record_order(tmp_path):
    image = image_with_boxes(64, 64, [])
    path = write_records(tmp_path / "five.tfrecord", [
        make_example(image, [], i) for i in range(5)])
    got = batches(build_dataset(path, tiny_config(), training=False,
                                batch_size=2, deterministic=True))
    assert [len(labels["source_id"]) for _, labels in got] == [2, 2, 1]
    ids = np.concatenate([labels["source_id"] for _, labels in got])
    assert ids.tolist() == [str(i).encode() for i in range(5)]


def test_flip_mirrors_boxes_and_pixels(rect_records):
    # No jitter: the 96x128 image fills the width at scale 1 with no crop.
    config = tiny_config(jitter_min=1.0, jitter_max=1.0)
    [(images, labels)] = batches(build_dataset(
        rect_records, config, training=True, batch_size=16, seed=5), 1)
    original = np.array(RECT_BOX, np.float32)
    mirrored = np.array([24, 128 - 40, 64, 128 - 10], np.float32)
    flipped = []
    for image, boxes in zip(images, labels["boxes"], strict=True):
        box = boxes[0]
        assert np.allclose(box, original) or np.allclose(box, mirrored), box
        flipped.append(np.allclose(box, mirrored))
        np.testing.assert_allclose(bright_extent(image, config), box, atol=1)
    assert any(flipped) and not all(flipped)

    no_flip = tiny_config(jitter_min=1.0, jitter_max=1.0, input_rand_hflip=False)
    [(_, labels)] = batches(build_dataset(
        rect_records, no_flip, training=True, batch_size=16, seed=5), 1)
    np.testing.assert_allclose(labels["boxes"][:, 0],
                               np.tile(original, (16, 1)))


@pytest.mark.parametrize("setting", [{"autoaugment_policy": "v0"},
                                     {"autoaugment_policy": "randaug"},
                                     {"grid_mask": True}])
def test_automl_policies_train_with_no_warning(rect_records, setting, caplog):
    """automl's YAML keys were accepted with a warning and silently trained
    without (a bug). Now no warning, the images change (the policy ran)
    while the flip, jitter and crop drawn from the same seed do not, and
    boxes stay inside the network input."""
    plain = tiny_config(jitter_min=1.0, jitter_max=1.0)
    with caplog.at_level(logging.WARNING):
        config = tiny_config(jitter_min=1.0, jitter_max=1.0, **setting)
    assert not caplog.records, caplog.text
    [(augmented, labels)] = batches(build_dataset(
        rect_records, config, training=True, batch_size=16, seed=5,
        deterministic=True), 1)
    [(images, plain_labels)] = batches(build_dataset(
        rect_records, plain, training=True, batch_size=16, seed=5,
        deterministic=True), 1)
    assert not np.allclose(augmented, images)
    boxes = labels["boxes"][labels["classes"] > 0]
    assert np.all(boxes >= 0) and np.all(boxes[:, 2] <= 128)
    assert np.all(boxes[:, 3] <= 128)
    if "grid_mask" in setting:  # boxes untouched: only pixels are hidden
        np.testing.assert_array_equal(labels["boxes"], plain_labels["boxes"])


def test_unknown_autoaugment_policy_fails_when_the_pipeline_is_built(
        rect_records):
    with pytest.raises(ConfigError, match="unknown autoaugment_policy 'v9'"):
        build_dataset(rect_records, tiny_config(autoaugment_policy="v9"),
                      training=True, batch_size=2, seed=0)


def test_jitter_and_crop_keep_boxes_on_their_pixels(rect_records):
    config = tiny_config(input_rand_hflip=False)  # jitter 0.1 - 2.0
    scales, cropped = [], 0
    for images, labels in batches(build_dataset(
            rect_records, config, training=True, batch_size=8, seed=1), 6):
        for image, boxes, classes, positives, scale in zip(
                images, labels["boxes"], labels["classes"],
                labels["num_positives"], labels["image_scale"], strict=True):
            scales.append(scale)
            extent = bright_extent(image, config)
            if classes[0] == -1:  # the rectangle was cropped away
                assert extent is None or np.prod(extent[2:] - extent[:2]) <= 128
                assert positives == 0
                continue
            assert classes[0] == 1 and positives > 0
            np.testing.assert_allclose(extent, boxes[0], atol=1.5)
            expected = np.array(RECT_BOX) * scale
            cropped += not np.allclose(boxes[0], expected, atol=1.0)
    scales = np.array(scales)
    assert scales.min() < 0.5 and scales.max() > 1.5, scales
    assert cropped > 0  # some crops cut or shifted the box


def test_boxes_padded_and_truncated_to_max_instances(tmp_path):
    config = tiny_config()
    many = [(4 * i, 4 * i, 4 * i + 20, 4 * i + 24) for i in range(11)]
    image = image_with_boxes(64, 64, [])
    path = write_records(tmp_path / "pad.tfrecord", [
        make_example(image, many[:3], 1, [1, 2, 3]),
        make_example(image, many, 2, [1 + i % 3 for i in range(11)])])
    [(_, labels)] = batches(build_dataset(path, config, training=False,
                                          batch_size=2, deterministic=True))
    assert labels["boxes"].shape == (2, MAX_INSTANCES, 4)
    np.testing.assert_array_equal(labels["classes"][0], [1, 2, 3] + [-1] * 5)
    np.testing.assert_array_equal(labels["boxes"][0, 3:], 0.0)
    np.testing.assert_array_equal(labels["classes"][1],
                                  [1 + i % 3 for i in range(MAX_INSTANCES)])
    np.testing.assert_allclose(labels["boxes"][1],
                               np.array(many[:MAX_INSTANCES]) * 2.0, atol=1e-4)
    # Anchor targets still come from all 11 boxes.
    all_boxes = tf.constant(np.array(many, np.float32) * 2.0)
    expected = label_anchors(all_boxes, [1 + i % 3 for i in range(11)], config)
    assert labels["num_positives"][1] == expected.num_positives.numpy()


def test_same_seed_same_batches(tmp_path):
    image = image_with_boxes(80, 112, [(10, 20, 50, 90)])
    path = ",".join(write_records(tmp_path / f"part{k}.tfrecord", [
        make_example(image, [(10, 20, 50, 90)], 10 * k + i) for i in range(3)])
        for k in range(2))
    config = tiny_config()

    def run(seed):
        return batches(build_dataset(path, config, training=True, batch_size=2,
                                     seed=seed, deterministic=True), 4)

    first, second, other = run(7), run(7), run(8)
    assert len(first) == len(second) == len(other) == 4
    for a, b in zip(tf.nest.flatten(first), tf.nest.flatten(second),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in
                   zip(tf.nest.flatten(first), tf.nest.flatten(other),
                       strict=True))


def test_no_matching_files_names_the_pattern(tmp_path, rect_records):
    missing = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(FileNotFoundError, match=re.escape(repr(missing))):
        build_dataset(missing, tiny_config(), training=True, batch_size=1)
    with pytest.raises(FileNotFoundError, match=re.escape(repr(missing))):
        build_dataset(f"{rect_records},{missing}", tiny_config(),
                      training=False, batch_size=1)


@pytest.mark.parametrize("training", [False, True])
def test_image_without_objects_gives_all_negative_targets(tmp_path, training):
    config = tiny_config()
    path = write_records(tmp_path / "empty.tfrecord", [
        make_example(image_with_boxes(64, 96, []), [], i) for i in range(2)])
    [(_, labels)] = batches(build_dataset(path, config, training=training,
                                          batch_size=2, seed=0), 1)
    targets = targets_from_labels(labels, config)
    for cls_t, box_t in zip(targets.cls_targets, targets.box_targets,
                            strict=True):
        np.testing.assert_array_equal(cls_t, BACKGROUND)
        np.testing.assert_array_equal(box_t, 0.0)
    np.testing.assert_array_equal(targets.num_positives, 0.0)
    np.testing.assert_array_equal(labels["classes"], -1)


def test_crowd_boxes_dropped_in_training_kept_and_ignored_in_eval(tmp_path):
    config = tiny_config(jitter_min=1.0, jitter_max=1.0, input_rand_hflip=False)
    crowd_box = (16, 16, 80, 112)
    path = write_records(tmp_path / "crowd.tfrecord", [make_example(
        image_with_boxes(128, 128, [crowd_box]), [crowd_box], 1, crowd=[1])])
    [(_, train)] = batches(build_dataset(path, config, training=True,
                                         batch_size=1, seed=0), 1)
    np.testing.assert_array_equal(train["classes"], -1)
    [(_, evaluation)] = batches(build_dataset(path, config, training=False,
                                              batch_size=1))
    assert evaluation["classes"][0, 0] == 1 and evaluation["is_crowd"][0, 0] == 1
    targets = targets_from_labels(evaluation, config)
    assert targets.num_positives[0] == 0
    assert any((t == IGNORED).any() for t in targets.cls_targets)


def test_batch_feeds_detection_loss_of_a_tiny_model(rect_records):
    from efficientdet_tf.ops.losses import detection_loss
    from efficientdet_tf.modeling.model import build_model
    config = tiny_config()
    [(images, labels)] = build_dataset(rect_records, config, training=True,
                                       batch_size=2, seed=3).take(1)
    cls_outputs, box_outputs = build_model(config)(images, training=True)
    losses = detection_loss(cls_outputs, box_outputs,
                            targets_from_labels(labels, config), config)
    for name, value in losses.items():
        assert np.isfinite(value.numpy()), name
    assert losses["total"] > 0


def test_distribute_datasets_from_function(rect_records):
    config = tiny_config()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: build_dataset(rect_records, config, training=True,
                                  batch_size=4, seed=0, input_context=ctx))
    images, labels = next(iter(dataset))
    assert images.shape == (4, 128, 128, 3)
    total = strategy.run(lambda t: tf.reduce_sum(t), args=(labels["num_positives"],))
    assert strategy.reduce("SUM", total, axis=None) > 0


@pytest.mark.parametrize("num_files", [1, 2])
def test_input_context_shards_and_splits_the_batch(tmp_path, num_files):
    image = image_with_boxes(64, 64, [])
    pattern = ",".join(write_records(tmp_path / f"s{k}.tfrecord", [
        make_example(image, [], 10 * k + i) for i in range(4)])
        for k in range(num_files))
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline,
            num_replicas_in_sync=2)
        got = batches(build_dataset(pattern, tiny_config(), training=False,
                                    batch_size=4, input_context=context))
        # Global batch 4 over 2 replicas: 2 images a replica, per batch.
        assert got and all(len(labels["source_id"]) == 2 for _, labels in got)
        seen.append({s for _, labels in got for s in labels["source_id"]})
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 4 * num_files


def test_scale_geometry_matches_automl_arithmetic():
    # 300x400 into 128 with jitter 1.5: target 192, scale min(.64, .48) = .48,
    # resized 144x192, free range (16, 64), crop at int(0.5*16), int(0.25*64).
    geometry = scale_geometry(tf.constant([300, 400]), (128, 128),
                              tf.constant(1.5), tf.constant([0.5, 0.25]))
    assert geometry.scale.numpy() == np.float32(192) / np.float32(400)
    np.testing.assert_array_equal(geometry.scaled_size, [144, 192])
    np.testing.assert_array_equal(geometry.offset, [8, 16])
    boxes, keep = augment.transform_boxes(
        tf.constant([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.05, 0.05]]), geometry,
        (128, 128))
    np.testing.assert_allclose(boxes[0], [0, 0, 72 - 8, 96 - 16])
    np.testing.assert_array_equal(keep, [True, False])


def test_regenerate_source_id_hashes_the_filename(rect_records):
    config = tiny_config(regenerate_source_id=True)
    [(_, labels)] = batches(build_dataset(rect_records, config, training=False,
                                          batch_size=4, deterministic=True))
    expected = [str(tf.strings.to_hash_bucket_fast(f"{i}.jpg", 2 ** 63 - 1)
                    .numpy()).encode() for i in range(4)]
    assert labels["source_id"].tolist() == expected


@pytest.mark.parametrize("setting", [
    {"autoaugment_policy": "v0"}, {"autoaugment_policy": "v1"},
    {"autoaugment_policy": "v2"}, {"autoaugment_policy": "v3"},
    {"autoaugment_policy": "randaug"}, {"grid_mask": True},
    {"mosaic_prob": 0.4, "mixup_prob": 0.3, "cutmix_prob": 0.3}])
def test_input_position_checkpoints_and_resumes_with_augmentation(
        rect_records, tmp_path, setting):
    """``--deterministic`` runs save the iterator with each checkpoint. A
    stateful op in the map (the shape asserts of tf.image.grayscale_to_rgb
    in AutoAugment's Color) once made that save fail at the first
    checkpoint; a restored iterator must continue with the same batches."""
    config = tiny_config(**setting)
    iterator = iter(build_dataset(rect_records, config, training=True,
                                  batch_size=2, seed=4, deterministic=True))
    next(iterator)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    path = checkpoint.write(str(tmp_path / "input"))
    expected = [next(iterator) for _ in range(2)]
    checkpoint.read(path).assert_consumed()
    for (images, labels), (want_images, want_labels) in zip(
            [next(iterator) for _ in range(2)], expected):
        np.testing.assert_array_equal(images.numpy(), want_images.numpy())
        np.testing.assert_array_equal(labels["boxes"].numpy(),
                                      want_labels["boxes"].numpy())
