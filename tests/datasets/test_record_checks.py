"""Start-up checks of the records: class ids outside 1..num_classes and
truncated shards stop a run before step 1, naming the file and the fix.

The CLI tests run ``main.py`` in a subprocess from a working directory with
relative patterns, as a user types them, and check the one-line error.
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from efficientdet_tf.config import get_config
from efficientdet_tf.datasets import record_check
from tests.data.test_pipeline import image_with_boxes, make_example, write_records

MAIN = str(REPO_ROOT / "main.py")
# The smallest network main.py accepts: a run that got past the checks would
# build and train it, so a missing check costs seconds, not minutes.
HPARAMS = "image_size=128,num_classes=2,fpn_cell_repeats=1,box_class_repeats=1"


def write_shard(path: pathlib.Path, ids_per_record: list[list[int]]) -> str:
    """A shard with one tiny image per entry, one box per class id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    examples = []
    for index, ids in enumerate(ids_per_record):
        boxes = [(2, 2, 10, 10)] * len(ids)
        examples.append(make_example(image_with_boxes(16, 16, boxes), boxes,
                                     f"{path.stem}-{index}", classes=ids))
    return write_records(path, examples)


def truncate(path: pathlib.Path, cut: int = 40) -> None:
    """Cuts the last ``cut`` bytes off, as a converter killed mid-write or an
    interrupted copy leaves a shard."""
    data = path.read_bytes()
    path.write_bytes(data[:-cut])


def config(num_classes: int = 2, label_map: dict | None = None):
    values = {"image_size": 128, "num_classes": num_classes}
    if label_map:
        values["label_map"] = label_map
    return get_config("efficientdet-d0", values)


def test_ids_within_range_pass_and_count_records(tmp_path):
    write_shard(tmp_path / "train-0.tfrecord", [[1, 2], [2], []])
    write_shard(tmp_path / "train-1.tfrecord", [[1]])
    assert record_check.check_records(str(tmp_path / "train-*.tfrecord"),
                                      config(), "training data") == 4


def test_ids_above_num_classes_name_ids_file_record_and_fix(tmp_path):
    write_shard(tmp_path / "train-0.tfrecord", [[1], [2]])
    bad = write_shard(tmp_path / "train-1.tfrecord", [[1], [2, 3], [5]])
    with pytest.raises(record_check.RecordError) as info:
        record_check.check_records(str(tmp_path / "train-*.tfrecord"),
                                   config(label_map={1: "cat", 2: "dog"}),
                                   "training data")
    message = str(info.value)
    assert message.startswith("training data: ")
    assert "ids 3, 5 found" in message and "max allowed 2" in message
    assert "num_classes=2" in message and "{1: cat, 2: dog}" in message
    assert f"{bad} (record index 1)" in message and "2 of 5 records" in message
    assert "num_classes=5" in message  # the fix: cover the highest id


@pytest.mark.parametrize("bad_id", [0, -3])
def test_ids_below_one_are_refused(tmp_path, bad_id):
    bad = write_shard(tmp_path / "val.tfrecord", [[1], [bad_id, 2]])
    with pytest.raises(record_check.RecordError) as info:
        record_check.check_records(bad, config(), "validation data")
    message = str(info.value)
    assert f"ids {bad_id} found" in message and "1-based" in message
    assert f"{bad} (record index 1)" in message and "label_map: none" in message


def test_truncated_shard_names_file_record_and_offset(tmp_path):
    write_shard(tmp_path / "train-0.tfrecord", [[1]])
    bad = tmp_path / "train-1.tfrecord"
    write_shard(bad, [[1], [2], [1]])
    truncate(bad)
    with pytest.raises(record_check.RecordError) as info:
        record_check.check_records(str(tmp_path / "train-*.tfrecord"),
                                   config(), "training data")
    message = str(info.value)
    assert f"{bad}: record index 2 (at byte " in message and "is truncated" in message
    assert "re-run the converter" in message
    assert "{{" not in message and "Op:" not in message  # no TF wrapping


def test_corrupted_record_names_its_index(tmp_path):
    bad = tmp_path / "train.tfrecord"
    write_shard(bad, [[1], [2], [1]])
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside record 1's payload: its checksum fails
    bad.write_bytes(bytes(data))
    with pytest.raises(record_check.RecordError) as info:
        record_check.check_records(str(bad), config(), "training data")
    assert f"{bad}: record index 1 (at byte " in str(info.value)
    assert "is corrupted" in str(info.value)


def test_record_in_another_schema_is_named(tmp_path):
    bad = tmp_path / "train.tfrecord"
    floats = tf.train.Example(features=tf.train.Features(feature={
        "image/object/class/label": tf.train.Feature(
            float_list=tf.train.FloatList(value=[1.0]))}))
    with tf.io.TFRecordWriter(str(bad)) as writer:
        writer.write(floats.SerializeToString())
    with pytest.raises(record_check.RecordError,
                       match=re.escape(f"{bad}: not a TFRecord file of "
                                       "tf.train.Examples in this schema")):
        record_check.check_records(str(bad), config(), "training data")


def test_data_loss_during_a_run_is_traced_to_its_file(tmp_path):
    write_shard(tmp_path / "train-0.tfrecord", [[1]])
    bad = tmp_path / "train-1.tfrecord"
    write_shard(bad, [[1], [2]])
    truncate(bad)
    pattern = str(tmp_path / "train-*.tfrecord")
    with pytest.raises(record_check.RecordError,
                       match=re.escape(f"training data: {bad}: record index 1")):
        with record_check.naming_damaged_files({"training data": pattern}):
            raise tf.errors.DataLossError(None, None, "Graph execution error:")


def test_other_data_loss_is_left_alone(tmp_path):
    pattern = write_shard(tmp_path / "train-0.tfrecord", [[1]])
    with pytest.raises(tf.errors.DataLossError, match="checkpoint"):
        with record_check.naming_damaged_files({"training data": pattern}):
            raise tf.errors.DataLossError(None, None, "bad checkpoint")


def run_main(cwd: pathlib.Path, *argv: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, MAIN, "--model_dir=run", f"--hparams={HPARAMS}",
         "--train_batch_size=2", "--num_epochs=1", *argv],
        cwd=cwd, capture_output=True, text=True, timeout=600)
    return result.returncode, result.stderr


def error_line(stderr: str) -> str:
    """The one ``main.py: error:`` line (TF's own start-up log lines may
    precede it)."""
    assert "Traceback" not in stderr, stderr
    lines = [l for l in stderr.splitlines() if l.startswith("main.py: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.slow  # runs main.py in subprocesses
@pytest.mark.parametrize("mode, bad_set", [
    ("train", "train"), ("train_and_eval", "val"), ("eval", "val")])
def test_cli_refuses_ids_above_num_classes(tmp_path, mode, bad_set):
    for name in ("train", "val"):
        write_shard(tmp_path / "records" / f"{name}-0.tfrecord", [[1], [2]])
    write_shard(tmp_path / "records" / f"{bad_set}-1.tfrecord", [[1], [3, 1]])
    argv = [f"--mode={mode}"]
    if mode != "eval":
        argv.append("--training_file_pattern=records/train-*.tfrecord")
    if mode != "train":
        # eval: no checkpoint yet, so wait for one; the scan comes first.
        argv += ["--validation_file_pattern=records/val-*.tfrecord",
                 "--eval_timeout=1"]
    code, stderr = run_main(tmp_path, *argv)
    line = error_line(stderr)
    what = "training" if bad_set == "train" else "validation"
    assert code == 1
    assert line.startswith(f"main.py: error: {what} data: class ids 3 found")
    assert "max allowed 2" in line and "num_classes=2" in line
    assert f"records/{bad_set}-1.tfrecord (record index 1)" in line


@pytest.mark.slow  # runs main.py in a subprocess
@pytest.mark.parametrize("count", [True, False])
def test_cli_names_a_truncated_training_shard(tmp_path, count):
    write_shard(tmp_path / "records" / "train-0.tfrecord", [[1], [2]])
    write_shard(tmp_path / "records" / "train-1.tfrecord", [[1], [2]])
    truncate(tmp_path / "records" / "train-1.tfrecord")
    counting = [] if count else ["--num_examples_per_epoch=4"]
    code, stderr = run_main(
        tmp_path, "--training_file_pattern=records/train-*.tfrecord", *counting)
    line = error_line(stderr)
    assert code == 1
    assert ("main.py: error: training data: records/train-1.tfrecord: "
            "record index 1 (at byte ") in line and "is truncated" in line
    assert "re-run the converter" in line
