"""The 15 official presets as automl builds them: trainable parameter
counts, variable names and shapes (automl's listings), backbone drop-connect.

Every test here takes the ``preset`` fixture: pytest runs all checks of one
preset, then releases its model before building the next, so each preset is
built once (D7x takes ~20 s on two cores) and only one is in memory.
"""
from __future__ import annotations

import gc
import json

import keras
import numpy as np
import pytest

from efficientdet_tf.config import get_config
from efficientdet_tf.modeling import checkpoint as ckpt_lib
from efficientdet_tf.modeling.model import build_model
from efficientdet_tf.presets import PRESETS

# Tracing the bigger models takes 15-35 s each on two cores: they are marked
# slow (CI still runs them), the smaller ones run in every quick pass.
BIG_MODELS = {"efficientdet-d3", "efficientdet-d4", "efficientdet-d5",
              "efficientdet-d6", "efficientdet-d7", "efficientdet-d7x",
              "efficientdet-lite3x", "efficientdet-lite4"}

# Official trainable parameter counts with 90 classes. lite* are the exact
# figures of the official code (fixtures' summary.json); the issue gives them
# as approximately 3.24M, 4.25M, 5.25M, 8.35M, 15.13M.
OFFICIAL_PARAMS = {
    "efficientdet-d0": 3_880_067, "efficientdet-d1": 6_625_898,
    "efficientdet-d2": 8_097_039, "efficientdet-d3": 12_032_296,
    "efficientdet-d4": 20_723_675, "efficientdet-d5": 33_653_315,
    "efficientdet-d6": 51_871_782, "efficientdet-d7": 51_871_782,
    "efficientdet-d7x": 77_147_166, "efficientdet-lite0": 3_243_470,
    "efficientdet-lite1": 4_248_318, "efficientdet-lite2": 5_252_334,
    "efficientdet-lite3": 8_350_862, "efficientdet-lite3x": 9_280_862,
    "efficientdet-lite4": 15_130_894,
}


# automl's backbone builder turns drop-connect off for EfficientNet-B0 only;
# every other official backbone keeps its default survival of 0.8 in the
# last block.
NO_DROP_CONNECT = {"efficientdet-d0"}


@pytest.fixture(scope="module", params=[
    pytest.param(n, marks=[pytest.mark.slow] if n in BIG_MODELS else [])
    for n in sorted(PRESETS)])
def preset(request):
    """(name, model): the named preset with 90 classes at the smallest valid
    image size (parameter counts and variable names do not depend on it)."""
    name = request.param
    config = get_config(name)
    model = build_model(config.override({"image_size": 2 ** config.max_level}))
    yield name, model
    del model
    gc.collect()


def trainable_count(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_every_preset_is_checked():
    assert sorted(OFFICIAL_PARAMS) == sorted(PRESETS)


def test_trainable_parameters_equal_official(preset):
    name, model = preset
    assert trainable_count(model) == OFFICIAL_PARAMS[name]


def test_backbone_drop_connect_comes_from_the_config(preset):
    name, model = preset
    backbone = model.get_layer(get_config(name).backbone_name)
    expected = None if name in NO_DROP_CONNECT else 0.8
    assert backbone.survival_prob == expected


def test_every_automl_listing_is_checked(fixtures_dir):
    listings = (fixtures_dir / "automl_variables").glob("*.tsv")
    assert sorted(p.stem for p in listings) == sorted(PRESETS)


def test_official_names_match_automl_listing(fixtures_dir, preset):
    model_name, model = preset
    listing = fixtures_dir / "automl_variables" / f"{model_name}.tsv"
    official = {}
    for line in listing.read_text().splitlines()[1:]:
        name, shape, trainable = line.split("\t")
        official[name] = (tuple(int(s) for s in shape.split(",") if s),
                          trainable == "1")
    ours = {name: (tuple(v.shape), v.trainable) for name, v in
            ckpt_lib.official_variable_map(model).items()}
    assert sorted(ours) == sorted(official)
    assert ours == official
    summary = json.loads(
        (fixtures_dir / "automl_variables" / "summary.json").read_text())
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == summary[model_name]["trainable_params"]
