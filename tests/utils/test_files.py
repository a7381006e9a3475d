"""Atomic writes: the file appears whole or not at all, and no temporary
file is left behind either way."""
from __future__ import annotations

import os

import pytest

from efficientdet_tf.utils.files import (IMAGE_EXTENSIONS, atomic_path,
                                         atomic_write, temporary_path)


def test_atomic_write_creates_the_folder_and_replaces_the_file(tmp_path):
    target = tmp_path / "new" / "result.json"
    atomic_write(target, "{}\n")
    assert target.read_bytes() == b"{}\n"
    atomic_write(str(target), b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(target.parent) == ["result.json"]


def test_atomic_path_keeps_the_old_file_and_removes_the_temporary_on_failure(
        tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="converter failed"):
        with atomic_path(target) as temp:
            assert os.path.dirname(temp) == str(tmp_path)
            with open(temp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("converter failed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_atomic_path_tolerates_a_writer_that_wrote_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "frozen.pb"):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_temporary_name_is_hidden_from_the_target_patterns():
    temp = temporary_path(os.path.join("out", "train-00000-of-00002.tfrecord"))
    name = os.path.basename(temp)
    assert os.path.dirname(temp) == "out" and name.startswith(".")
    assert not name.endswith(".tfrecord")


def test_one_image_extension_list_for_every_reader():
    assert IMAGE_EXTENSIONS[:4] == (".jpg", ".jpeg", ".png", ".bmp")
    assert {".gif", ".tif", ".webp"} <= set(IMAGE_EXTENSIONS)
