"""K-fold splits: the stratified assignment, the record scan, the filter the
input pipeline reads a fold through, and split_kfold.py end to end (run
from a working folder with relative paths, as a user types it)."""
from __future__ import annotations

import collections
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.data.pipeline import build_dataset
from efficientdet_tf.datasets import kfold
from efficientdet_tf.datasets.kfold import ImageClasses
from efficientdet_tf.errors import EfficientDetError
from tests.conftest import REPO_ROOT
from tests.data.test_pipeline import image_with_boxes, make_example, write_records

RARE = 5  # the class of only 7 images


def generated_images(count: int = 200, seed: int = 1) -> list[ImageClasses]:
    """A multi-label set: classes 1-4 in about 90, 50, 20 and 8 % of the
    images (1-2 boxes each), class 5 in exactly 7; some images are empty."""
    rng = np.random.default_rng(seed)
    rare = set(rng.choice(count, 7, replace=False).tolist())
    images = []
    for i in range(count):
        classes = [c for c, share in {1: 0.9, 2: 0.5, 3: 0.2, 4: 0.08}.items()
                   if rng.random() < share for _ in range(rng.integers(1, 3))]
        classes += [RARE] * (i in rare)
        images.append(ImageClasses(f"img{i:03d}", tuple(classes)))
    return images


def images_per_class(images, assignment, num_folds):
    counts = collections.defaultdict(lambda: [0] * num_folds)
    for image in images:
        for c in set(image.classes):
            counts[c][assignment[image.source_id]] += 1
    return counts


def test_every_fold_gets_its_share_of_every_class():
    images = generated_images()
    assert any(not image.classes for image in images)
    assignment = kfold.assign_folds(images, 5)
    assert sorted(assignment) == sorted(i.source_id for i in images)
    sizes = collections.Counter(assignment.values())
    assert sorted(sizes) == [0, 1, 2, 3, 4]
    assert max(sizes.values()) - min(sizes.values()) <= 1
    counts = images_per_class(images, assignment, 5)
    # Each class within 1 of its target (1/5 of its images); on this set
    # even within 1 of each other. The 7 images of the rare class: 1-2 each.
    for c, per_fold in counts.items():
        target = sum(per_fold) / 5
        assert all(abs(n - target) <= 1 for n in per_fold), (c, per_fold)
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    assert sorted(counts[RARE]) == [1, 1, 1, 2, 2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sizes_even_when_every_image_has_boxes(seed):
    """Images of 1-4 boxes of three common classes (the demo's shapes):
    dealt class by class, the sizes would end a few images apart."""
    rng = np.random.default_rng(seed)
    images = [ImageClasses(f"{i}", tuple(rng.integers(1, 4, rng.integers(1, 5))))
              for i in range(320)]
    assignment = kfold.assign_folds(images, 5, seed)
    assert sorted(collections.Counter(assignment.values()).values()) == [64] * 5
    for c, per_fold in images_per_class(images, assignment, 5).items():
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)


def test_assignment_depends_on_the_seed_not_the_input_order():
    images = generated_images()
    first = kfold.assign_folds(images, 5, seed=3)
    shuffled = list(images)
    random.Random(0).shuffle(shuffled)
    assert kfold.assign_folds(shuffled, 5, seed=3) == first
    assert kfold.assign_folds(images[::-1], 5, seed=3) == first
    assert kfold.assign_folds(images, 5, seed=4) != first


def test_images_without_boxes_are_spread_evenly():
    images = [ImageClasses(f"e{i}", ()) for i in range(10)]
    assignment = kfold.assign_folds(images, 3)
    assert sorted(collections.Counter(assignment.values()).values()) == [3, 3, 4]


@pytest.mark.parametrize("num_folds, images, message", [
    (1, 4, "1 folds of 4 images"),
    (5, 4, "5 folds of 4 images"),
    (2, 0, "2 folds of 0 images"),
])
def test_impossible_fold_counts_are_errors(num_folds, images, message):
    with pytest.raises(kfold.KFoldError, match=message) as raised:
        kfold.assign_folds([ImageClasses(str(i), (1,)) for i in range(images)],
                           num_folds)
    assert isinstance(raised.value, EfficientDetError)


def test_a_negative_seed_is_an_error():
    with pytest.raises(kfold.KFoldError, match="0 or more, got -1"):
        kfold.assign_folds([ImageClasses(str(i), (1,)) for i in range(4)], 2, -1)


def test_repeated_source_ids_are_an_error():
    with pytest.raises(kfold.KFoldError, match="'a' appears more than once"):
        kfold.assign_folds([ImageClasses("a", (1,)), ImageClasses("a", (2,)),
                            ImageClasses("b", ())], 2)


def test_report_counts_images_records_and_boxes_per_class():
    images = [ImageClasses("a", (1, 1, 2), records=2), ImageClasses("b", (2,)),
              ImageClasses("c", ())]
    report = kfold.fold_report(images, {"a": 0, "b": 1, "c": 1}, 2)
    assert report == [kfold.FoldSummary(0, 1, 2, {1: 2, 2: 1}),
                      kfold.FoldSummary(1, 2, 2, {2: 1})]
    table = kfold.format_report(report, {1: "cat", 2: "dog"}).splitlines()
    assert table[1].split() == ["fold", "0", "fold", "1", "all"]
    assert table[2].split() == ["images", "1", "2", "3"]
    assert table[3].split() == ["records", "2", "2", "4"]  # a repeats
    assert table[4].split() == ["1", "cat", "2", "0", "2"]
    data = kfold.folds_json({"a": 0, "b": 1, "c": 1}, report, 7, fold=1)
    assert data["num_folds"] == 2 and data["seed"] == 7 and data["fold"] == 1
    assert data["duplicate_records"] == 1


def config(**overrides):
    return get_config("efficientdet-d0", {"image_size": 128, "num_classes": 3,
                                          **overrides})


def write_shard(path: pathlib.Path, classes_per_record, first: int = 0) -> str:
    """Tiny images with one box per class id; source ids count from
    ``first``."""
    examples = []
    for index, classes in enumerate(classes_per_record, first):
        boxes = [(2, 2, 10, 10)] * len(classes)
        examples.append(make_example(image_with_boxes(16, 16, boxes), boxes,
                                     index, classes=list(classes)))
    return write_records(path, examples)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    """Twelve images in two files; a third repeats source id 3."""
    folder = tmp_path_factory.mktemp("kfold")
    write_shard(folder / "a.tfrecord", [[1], [2, 2], [3], [1, 2], [], [3]])
    write_shard(folder / "b.tfrecord", [[1], [2], [1, 3], [2], [], [1]], first=6)
    write_shard(folder / "c.tfrecord", [[2]], first=3)
    return str(folder / "*.tfrecord")


def test_scan_reads_ids_and_classes_and_counts_repeats_once(shards):
    images = kfold.scan_records(shards, config())
    assert [i.source_id for i in images] == [str(i) for i in range(12)]
    assert images[1].classes == (2, 2) and images[4].classes == ()
    assert images[3] == ImageClasses("3", (1, 2), records=2)  # the first kept
    hashed = kfold.scan_records(shards, config(regenerate_source_id=True))
    assert hashed[0].source_id == str(tf.strings.to_hash_bucket_fast(
        "0.jpg", 2 ** 63 - 1).numpy())


def test_a_bad_record_names_its_file_and_index(tmp_path):
    path = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(tf.train.Example().SerializeToString())
        writer.write(b"not an Example")
    with pytest.raises(kfold.KFoldError, match=f"{path}: record index 1 "):
        kfold.scan_records(str(path), config())


def source_ids(dataset) -> list[str]:
    return [s.decode() for _, labels in dataset
            for s in labels["source_id"].numpy()]


def test_fold_filter_reads_one_side_of_the_split(shards):
    assignment = {str(i): i % 3 for i in range(12)}
    held_out = build_dataset(shards, config(), training=False, batch_size=4,
                             keep=kfold.fold_filter(assignment, 1, config(),
                                                    held_out=True))
    assert sorted(source_ids(held_out)) == ["1", "10", "4", "7"]
    assignment.pop("5")  # an id the split does not know is on neither side
    training = build_dataset(shards, config(), training=False, batch_size=4,
                             keep=kfold.fold_filter(assignment, 1, config(),
                                                    held_out=False))
    # Both records of source id 3 are read (the eval loop counts it once).
    assert sorted(source_ids(training)) == sorted(
        ["0", "2", "3", "3", "6", "8", "9", "11"])


def test_filtered_input_checkpoints_and_resumes(shards, tmp_path):
    keep = kfold.fold_filter({str(i): i % 2 for i in range(12)}, 0, config(),
                             held_out=False)
    iterator = iter(build_dataset(shards, config(), training=True, batch_size=2,
                                  seed=4, deterministic=True, keep=keep))
    next(iterator)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    path = checkpoint.write(str(tmp_path / "input"))
    expected = [next(iterator)[1]["source_id"].numpy() for _ in range(4)]
    checkpoint.read(path).assert_consumed()
    resumed = [next(iterator)[1]["source_id"].numpy() for _ in range(4)]
    np.testing.assert_array_equal(resumed, expected)
    assert {int(s) % 2 for s in np.concatenate(expected)} == {1}


def records_by_bytes(pattern: str) -> collections.Counter:
    return collections.Counter(
        r.numpy() for r in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)))


@pytest.mark.slow  # three CLIs in subprocesses
def test_split_cli_copies_every_record_into_its_fold(tmp_path):
    commands = [
        ["dataset/make_demo_dataset.py", "--output_dir=shapes", "--num_train=12",
         "--num_val=0", "--image_size=64"],
        ["dataset/create_coco_tfrecord.py", "--image_dir=shapes/train/images",
         "--object_annotations_file=shapes/train/annotations.json",
         "--output_file_prefix=records/train", "--num_shards=2"],
        ["dataset/split_kfold.py", "--input_file_pattern=records/train-*.tfrecord",
         "--num_folds=3", "--output_dir=folds", "--seed=2"],
    ]
    for script, *args in commands:
        done = subprocess.run(
            [sys.executable, str(REPO_ROOT / script), *args], cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "images and boxes per class in each fold:" in out
    assert out.split("\n")[2].split() == ["images", "4", "4", "4", "12"]
    assert "folds/fold-2-of-3.tfrecord" in out and "folds/folds.json" in out

    # Every record exactly once, byte for byte, in the file of its fold.
    records = records_by_bytes(str(tmp_path / "records" / "train-*.tfrecord"))
    assert sum(records.values()) == 12
    assert records_by_bytes(str(tmp_path / "folds" / "fold-*-of-3.tfrecord")) == records
    data = json.loads((tmp_path / "folds" / "folds.json").read_text())
    assert data["num_folds"] == 3 and data["seed"] == 2
    assert data["file_pattern"] == "records/train-*.tfrecord"
    images = kfold.scan_records(str(tmp_path / "records" / "train-*.tfrecord"),
                                config())
    assert data["assignment"] == kfold.assign_folds(images, 3, seed=2)
    for fold, summary in enumerate(data["folds"]):
        held = kfold.scan_records(
            str(tmp_path / "folds" / data["files"][fold]), config())
        assert {i.source_id for i in held} == {
            s for s, k in data["assignment"].items() if k == fold}
        boxes = collections.Counter(c for i in held for c in i.classes)
        assert summary == {"fold": fold, "images": len(held), "records": len(held),
                           "boxes": {str(c): n for c, n in sorted(boxes.items())}}
