"""Any model behind one call: which kind a path is, and where its config
comes from."""
from __future__ import annotations

import numpy as np
import pytest

from efficientdet_tf.serving.predictors import is_checkpoint, open_model
from tests.serving.serving_helpers import sample_images, small_model


def no_fallback():
    raise AssertionError("the model's own config.yaml should have been used")


def test_a_best_checkpoint_in_archive_takes_its_model_dirs_config(
        fixtures_dir, tmp_path):
    from efficientdet_tf.modeling.checkpoint import save_native
    model, config = small_model(fixtures_dir)
    prefix = save_native(model, tmp_path / "run" / "archive")
    config.to_yaml(str(tmp_path / "run" / "config.yaml"))
    assert is_checkpoint(str(tmp_path / "run" / "archive"))
    assert is_checkpoint(prefix) and not is_checkpoint(str(tmp_path / "run"))
    loaded = open_model(str(tmp_path / "run" / "archive"), no_fallback)
    assert loaded.config.num_classes == 3 and loaded.label_map == {
        1: "cat", 2: "dog", 3: "bird"}
    images = sample_images(fixtures_dir)["a"]
    one = loaded.predict(images[0])
    both = loaded.run(images)
    assert len(both) == 2
    np.testing.assert_allclose(both[0].scores, one.scores, atol=1e-5)
    np.testing.assert_allclose(both[0].boxes, one.boxes, atol=1e-3)


def test_a_missing_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at .*gone"):
        open_model(str(tmp_path / "gone"), no_fallback)


def test_a_checkpoint_without_a_config_asks_for_one(fixtures_dir, tmp_path):
    from efficientdet_tf.modeling.checkpoint import save_native
    from efficientdet_tf.serving.predictors import ModelFileError
    model, _ = small_model(fixtures_dir)
    save_native(model, tmp_path / "bare")
    with pytest.raises(ModelFileError, match="carries no config.*--hparams"):
        open_model(str(tmp_path / "bare"))
