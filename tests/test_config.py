"""Config: official defaults, presets, overrides and the errors users see."""
from __future__ import annotations

import logging
import re

import pytest

from tests.conftest import REPO_ROOT
from efficientdet_tf.config import (Config, ConfigError, get_config,
                                    parse_image_size, parse_overrides)
from efficientdet_tf.presets import AUTOML_ONLY_KEYS, DEFAULTS, PRESETS


def test_defaults_are_official():
    config = get_config("efficientdet-d0")
    assert config.image_size == (512, 512)
    assert config.backbone_name == "efficientnet-b0"
    assert (config.fpn_num_filters, config.fpn_cell_repeats,
            config.box_class_repeats) == (64, 3, 3)
    assert (config.num_scales, config.aspect_ratios, config.anchor_scale) == (
        3, [1.0, 2.0, 0.5], 4.0)
    assert (config.alpha, config.gamma, config.delta,
            config.box_loss_weight) == (0.25, 1.5, 0.1, 50.0)
    assert config.nms_configs["method"] == "gaussian"
    assert config.moving_average_decay == 0.9998


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_config(name):
    config = get_config(name)
    assert config.name == name
    assert config.backbone_name.startswith("efficientnet-")


def test_presets_are_small_diffs():
    d7x = get_config("efficientdet-d7x")
    assert (d7x.max_level, d7x.fpn_weight_method, d7x.backbone_name) == (
        8, "sum", "efficientnet-b7")
    lite0 = get_config("efficientdet-lite0")
    assert (lite0.act_type, lite0.mean_rgb, lite0.stddev_rgb) == (
        "relu6", 127.0, 128.0)


def test_unknown_model_name_suggests():
    with pytest.raises(ConfigError, match="efficientdet-d3"):
        get_config("efficientdet-d33")


def test_unknown_key_names_key_and_closest():
    with pytest.raises(ConfigError, match=r"'num_clases'.*'num_classes'"):
        get_config("efficientdet-d0", "num_clases=3")


def test_unknown_nested_key_names_full_path():
    with pytest.raises(ConfigError, match=r"'nms_configs.methd'.*'nms_configs.method'"):
        get_config("efficientdet-d0", {"nms_configs": {"methd": "hard"}})


def test_automl_only_key_is_accepted_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        config = get_config("efficientdet-d0", "use_keras_model=false")
    assert "use_keras_model" in caplog.text
    assert "use_keras_model" not in config
    with caplog.at_level(logging.WARNING):
        config = get_config("efficientdet-d0", "nms_configs.pyfunc=false")
    assert "nms_configs.pyfunc" in caplog.text
    assert "pyfunc" not in config.nms_configs


def test_string_overrides_parse_types_and_nesting():
    parsed = parse_overrides(
        "num_classes=3,learning_rate=0.01,aspect_ratios=[1.0, 2.0],"
        "nms_configs.method=hard,mixed_precision=true,var_freeze_expr=none,"
        "act_type=relu")
    assert parsed == {"num_classes": 3, "learning_rate": 0.01,
                      "aspect_ratios": [1.0, 2.0],
                      "nms_configs": {"method": "hard"},
                      "mixed_precision": True, "var_freeze_expr": None,
                      "act_type": "relu"}


def test_nested_override_keeps_sibling_keys():
    config = get_config("efficientdet-d0", "nms_configs.method=hard")
    assert config.nms_configs["method"] == "hard"
    assert config.nms_configs["max_output_size"] == 100


def test_override_returns_new_config_and_leaves_original():
    base = get_config("efficientdet-d0")
    changed = base.override({"num_classes": 5})
    assert (base.num_classes, changed.num_classes) == (90, 5)


def test_hparams_joins_yaml_files_and_items_later_ones_winning(tmp_path):
    """``--hparams=data.yaml,anchors.yaml,key=value``: the dataset doctor
    writes the fitted anchors as their own YAML, to add to the user's."""
    (tmp_path / "data.yaml").write_text(
        "num_classes: 3\nanchor_scale: 4.0\nnms_configs: {method: hard}\n")
    (tmp_path / "anchors.yaml").write_text(
        "aspect_ratios: [[2.0, 0.5], [1.0, 1.0]]\nanchor_scale: 1.5\n"
        "nms_configs: {iou_thresh: 0.6}\n")
    text = f"{tmp_path / 'data.yaml'},{tmp_path / 'anchors.yaml'},num_scales=2"
    assert parse_overrides(text) == {
        "num_classes": 3, "anchor_scale": 1.5, "num_scales": 2,
        "aspect_ratios": [[2.0, 0.5], [1.0, 1.0]],
        "nms_configs": {"method": "hard", "iou_thresh": 0.6}}
    config = get_config("efficientdet-d0", text)
    assert (config.anchor_scale, config.num_scales) == (1.5, 2)
    assert config.nms_configs["method"] == "hard"
    # Files only, the last one's name ending the text (a bug read all of it
    # as one file name).
    files = f"{tmp_path / 'data.yaml'},{tmp_path / 'anchors.yaml'}"
    assert get_config("efficientdet-d0", files).anchor_scale == 1.5
    with pytest.raises(ConfigError, match="not found: .*missing.yaml"):
        parse_overrides(f"{tmp_path / 'data.yaml'},{tmp_path / 'missing.yaml'}")


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides("num_classes")


@pytest.mark.parametrize("value,expected", [
    (512, (512, 512)), ("640x384", (384, 640)), ([256, 384], (256, 384)),
    ((128, 256), (128, 256)), ("256", (256, 256))])
def test_image_size_forms(value, expected):
    """Strings are automl's WIDTHxHEIGHT; pairs are (height, width)."""
    assert parse_image_size(value) == expected


def test_image_size_string_is_width_by_height_in_config():
    config = get_config("efficientdet-d0", {"image_size": "384x256"})
    assert config.image_size == (256, 384)


@pytest.mark.parametrize("bad", ["abc", [1, 2, 3], 1.5, True])
def test_image_size_rejects_garbage(bad):
    with pytest.raises(ConfigError, match="image_size"):
        parse_image_size(bad)


def test_image_size_must_tile_levels():
    with pytest.raises(ConfigError, match=r"divisible by 2\*\*max_level = 128"):
        get_config("efficientdet-d0", "image_size=500")


def test_label_map_validation():
    with pytest.raises(ConfigError, match="num_classes"):
        get_config("efficientdet-d0", {"num_classes": 2,
                                       "label_map": {1: "a", 2: "b", 3: "c"}})
    with pytest.raises(ConfigError, match="1-based"):
        get_config("efficientdet-d0", {"num_classes": 2,
                                       "label_map": {0: "a", 1: "b"}})


def test_shipped_hparams_load(caplog):
    with caplog.at_level(logging.WARNING):
        wrs = get_config("efficientdet-d0", str(REPO_ROOT / "hparams/wrs.yaml"))
    assert wrs.num_classes == 13 and wrs.label_map[12] == "obj12"
    assert wrs.mixed_precision and wrs.anchor_scale == 2.0
    assert wrs.var_freeze_expr == "(efficientnet|fpn_cells)"
    assert "use_keras_model" in caplog.text and "never trained" in caplog.text
    voc = get_config("efficientdet-d0", str(REPO_ROOT / "hparams/voc.yaml"))
    assert voc.num_classes == 20 and voc.label_map[15] == "person"


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_classes: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        get_config("efficientdet-d0", str(bad))
    with pytest.raises(ConfigError, match="not found"):
        get_config("efficientdet-d0", str(tmp_path / "missing.yaml"))


def test_yaml_round_trip(tmp_path):
    config = get_config("efficientdet-d0", {"image_size": "384x256",
                                            "num_classes": 4})
    path = tmp_path / "config.yaml"
    config.to_yaml(str(path))
    loaded = get_config("efficientdet-d0", str(path))
    assert dict(loaded) == dict(config)


def test_automl_keys_exist():
    # A few automl names, so YAML written for automl works.
    for key in ("num_classes", "label_map", "image_size", "min_level",
                "max_level", "num_scales", "aspect_ratios", "anchor_scale",
                "fpn_num_filters", "fpn_cell_repeats", "box_class_repeats",
                "fpn_weight_method", "act_type", "learning_rate",
                "lr_warmup_init", "lr_warmup_epoch", "num_epochs", "optimizer",
                "momentum", "weight_decay", "clip_gradients_norm", "alpha",
                "gamma", "delta", "box_loss_weight", "iou_loss_type",
                "iou_loss_weight", "moving_average_decay", "mixed_precision",
                "var_freeze_expr", "jitter_min", "jitter_max",
                "input_rand_hflip", "nms_configs"):
        assert key in DEFAULTS, key


def test_attribute_error_suggests():
    with pytest.raises(AttributeError, match="num_classes"):
        get_config("efficientdet-d0").num_clases  # noqa: B018


def _package_source_reads(key: str) -> bool:
    """``key`` is read as ``x.key``, ``x["key"]``, ``x.get("key"``: a name in
    a list of keys (or the defaults table itself) does not count."""
    package = REPO_ROOT / "efficientdet_tf"
    source = "\n".join(path.read_text(encoding="utf-8")
                       for path in package.rglob("*.py")
                       if path.name != "config.py")
    quoted = rf"[\"']{key}[\"']"
    return any(re.search(pattern, source) for pattern in (
        rf"\.{key}\b", rf"\[{quoted}\]", rf"get\({quoted}"))


def test_every_key_is_read_or_warned_about():
    """A key nobody reads would tell the user a setting works when it is
    silently ignored: it belongs in AUTOML_ONLY_KEYS (ignored, with a
    warning) or it is read by the package."""
    unread = [f"{key}.{sub}" if sub else key
              for key, value in DEFAULTS.items()
              for sub in [None, *(value if isinstance(value, dict) else [])]
              if not _package_source_reads(sub or key)]
    assert unread == []
    assert not AUTOML_ONLY_KEYS & set(DEFAULTS)


@pytest.mark.parametrize("key", ["is_training_bn", "skip_mismatch",
                                 "tflite_max_detections"])
def test_automl_keys_without_effect_are_warned_about(key, caplog):
    with caplog.at_level(logging.WARNING):
        config = get_config("efficientdet-d0", {key: False})
    assert key in caplog.text and key not in config


@pytest.mark.parametrize("name,method", [
    ("efficientdet-d0", "fastattn"), ("efficientdet-d5", "fastattn"),
    ("efficientdet-d6", "sum"), ("efficientdet-lite0", "sum")])
def test_fpn_weight_method_is_resolved(name, method):
    config = get_config(name)
    assert config.fpn_weight_method == method
    assert config.fpn_name == "bifpn"


def test_fpn_config_weight_method_wins():
    nodes = [{"feat_level": 3, "inputs_offsets": [0, 1]},
             {"feat_level": 4, "inputs_offsets": [1, 2]}]
    config = get_config("efficientdet-d0", {
        "min_level": 3, "max_level": 4, "image_size": 128,
        "fpn_config": {"nodes": nodes, "weight_method": "attn"}})
    assert config.fpn_weight_method == "attn"
    assert config.fpn_config["nodes"] == nodes


@pytest.mark.parametrize("bad", [
    [{"feat_level": 3, "inputs_offsets": [0, 1]}], {"nodes": []},
    {"nodes": [{"feat_level": 3, "inputs_offsets": [0]}], "weights": "sum"}])
def test_fpn_config_shape_is_checked(bad):
    with pytest.raises(ConfigError, match="fpn_config must be"):
        get_config("efficientdet-d0", {"fpn_config": bad})


@pytest.mark.parametrize("bad", [
    ["r1_k3_s11_e1_i32_o16"], {"blocks": []}, {"blocks": [3]},
    {"blocks": ["r1_k3_s11_e1_i32_o16"], "extra": 1}])
def test_backbone_config_shape_is_checked(bad):
    with pytest.raises(ConfigError, match="backbone_config must be"):
        get_config("efficientdet-d0", {"backbone_config": bad})


def test_backbone_survival_prob_follows_automl_and_later_overrides():
    """automl trains the B0 backbone without drop-connect, the others with
    survival 0.8; the rule follows a backbone changed by a later override
    (and a YAML written in between), an explicit value stays."""
    d0 = get_config("efficientdet-d0")
    assert d0.backbone_survival_prob is None
    assert get_config("efficientdet-d1").backbone_survival_prob == 0.8
    assert get_config("efficientdet-lite0").backbone_survival_prob == 0.8
    b3 = d0.override({"backbone_name": "efficientnet-b3"})
    assert b3.backbone_survival_prob == 0.8
    reloaded = Config(d0.as_dict()).override({"backbone_name": "efficientnet-b3"})
    assert reloaded.backbone_survival_prob == 0.8
    assert d0.as_dict()["fpn_weight_method"] is None
    assert get_config("efficientdet-d1", "backbone_survival_prob=1.0"
                      ).backbone_survival_prob == 1.0
    for bad in (0, "high", True):
        with pytest.raises(ConfigError, match="backbone_survival_prob"):
            get_config("efficientdet-d1", {"backbone_survival_prob": bad})
