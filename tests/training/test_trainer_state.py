"""model_dir bookkeeping: which checkpoint a rerun resumes from."""
from __future__ import annotations

import os
import pathlib

import pytest

from efficientdet_tf.modeling import checkpoint as ckpt_lib
from efficientdet_tf.training import trainer_state

from tests.modeling.test_checkpoint import write_stub_checkpoints


def test_fresh_model_dir_has_no_checkpoint(tmp_path: pathlib.Path) -> None:
    assert trainer_state.latest_checkpoint(str(tmp_path / "absent")) is None
    (tmp_path / "train").mkdir()  # summaries only: still a fresh run
    assert trainer_state.latest_checkpoint(str(tmp_path)) is None


def test_relative_model_dir_resumes_from_newest(tmp_path, monkeypatch) -> None:
    """A killed run rerun with a relative --model_dir (the default keeps
    five checkpoints) must resume, not restart at step 0."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("model")
    write_stub_checkpoints(tmp_path / "model", ["ckpt-3", "ckpt-4", "ckpt-5"])
    assert trainer_state.latest_checkpoint("model") == os.path.join(
        "model", "ckpt-5")


def test_unresolvable_checkpoints_are_an_error_not_a_fresh_start(
        tmp_path: pathlib.Path) -> None:
    write_stub_checkpoints(tmp_path, ["ckpt-1", "ckpt-2"])
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-9"\n')
    with pytest.raises(ckpt_lib.CheckpointError, match="holds 2 checkpoints"):
        trainer_state.latest_checkpoint(str(tmp_path))
