"""One configuration object for every EfficientDet hyperparameter.

The defaults are the official automl EfficientDet defaults and each named model
is a small diff on them, so a reader sees at a glance what D3 changes from D0.
Keys use automl's names so a YAML file written for automl loads unchanged.

Override order (docs/contracts.md): defaults -> model preset -> ``--hparams``
(YAML file or ``a=1,b.c=2`` string) -> explicit CLI flags, each step a call to
:func:`Config.override` that returns a new config (configs are values, never
mutated globally).

A config holds two layers: the *settings* those steps produce, where
``None`` may stand for one of automl's rules ("fast attention unless the
model says otherwise"), and the *values* everyone reads, those rules
resolved once here so no consumer repeats them. YAML holds the settings, so
a saved config still follows the rules when a later override changes what
they depend on.
"""
from __future__ import annotations

import ast
import copy
import difflib
import logging
import os
from typing import Any, Mapping

import yaml

from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.utils.files import atomic_write

_LOG = logging.getLogger(__name__)

IMAGENET_MEAN_RGB = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STDDEV_RGB = [0.229 * 255, 0.224 * 255, 0.225 * 255]

DEFAULTS: dict[str, Any] = {
    "name": "efficientdet-d1",
    "backbone_name": "efficientnet-b1",
    # {blocks: [EfficientNet block strings]} replacing the seven stages of
    # B0 (scaled by backbone_name's width and depth); None: the official ones.
    "backbone_config": None,
    # Drop-connect survival of the last backbone block (decaying from 1 at
    # the first); None: automl's, 0.8 and none for B0. 1.0 turns it off.
    "backbone_survival_prob": None,
    "act_type": "swish",
    # Input.
    "image_size": 640,
    "input_rand_hflip": True,
    "jitter_min": 0.1,
    "jitter_max": 2.0,
    "mean_rgb": IMAGENET_MEAN_RGB,
    "stddev_rgb": IMAGENET_STDDEV_RGB,
    "max_instances_per_image": 100,
    "skip_crowd_during_training": True,
    "regenerate_source_id": False,
    # Classes.
    "num_classes": 90,
    "label_map": None,
    # Anchors.
    "min_level": 3,
    "max_level": 7,
    "num_scales": 3,
    "aspect_ratios": [1.0, 2.0, 0.5],
    "anchor_scale": 4.0,
    # Network.
    # The feature network's topology: a name from fpn_topologies.FPN_TOPOLOGIES
    # (None: "bifpn"), or fpn_config = {nodes: [{feat_level: L,
    # inputs_offsets: [ids]}, ...], weight_method: optional}, which wins.
    "fpn_name": None,
    "fpn_config": None,
    "fpn_num_filters": 88,
    "fpn_cell_repeats": 4,
    # How nodes fuse their inputs (fpn_config's weight_method wins, as in
    # automl); None: "fastattn".
    "fpn_weight_method": None,
    "box_class_repeats": 3,
    "separable_conv": True,
    "apply_bn_for_resampling": True,
    "conv_after_downsample": False,
    "conv_bn_act_pattern": False,
    "survival_prob": None,
    "batch_norm_momentum": 0.99,
    "batch_norm_epsilon": 1e-3,
    "mixed_precision": False,
    # Recompute backbone block activations in the backward pass instead of
    # keeping them: ~40 % less training memory for ~20 % more time.
    "grad_checkpoint": False,
    # Optimization.
    "optimizer": "sgd",
    "momentum": 0.9,
    "learning_rate": 0.08,
    "lr_warmup_init": 0.008,
    "lr_warmup_epoch": 1.0,
    "lr_decay_method": "cosine",
    "first_lr_drop_epoch": 200.0,
    "second_lr_drop_epoch": 250.0,
    "poly_lr_power": 0.9,
    "clip_gradients_norm": 10.0,
    "num_epochs": 300,
    "weight_decay": 4e-5,
    "moving_average_decay": 0.9998,
    "var_freeze_expr": None,
    "drop_remainder": True,
    # Loss.
    "label_smoothing": 0.0,
    "alpha": 0.25,
    "gamma": 1.5,
    "delta": 0.1,
    "box_loss_weight": 50.0,
    "iou_loss_type": None,
    "iou_loss_weight": 1.0,
    # Post-processing.
    "nms_configs": {
        "method": "gaussian",
        "iou_thresh": None,
        "score_thresh": None,
        "sigma": None,
        "max_nms_inputs": 0,
        "max_output_size": 100,
        "per_class": True,
    },
}

# automl keys that configure things this implementation does differently (or
# not at all). A YAML written for automl may carry them: accept with a warning.
AUTOML_ONLY_KEYS = frozenset({
    "use_keras_model", "strategy", "data_format", "verbose",
    "save_freq", "sample_image", "map_freq", "img_summary_steps", "dataset_type",
    "seg_num_classes", "heads", "positives_momentum", "ckpt_var_scope",
    "model_optimizations", "autoaugment_policy", "grid_mask", "scale_range",
    "target_size", "loss_scale", "use_tpu", "precision", "nms_configs.pyfunc",
    # Batch norms follow each call's `training` argument, as in Keras.
    "is_training_bn",
    # Warm starts (--ckpt) always keep variables whose shapes differ.
    "skip_mismatch",
    # TFLite models run the SavedModel's NMS: nms_configs.max_output_size.
    "tflite_max_detections",
})

# automl's drop-connect in an EfficientDet backbone: EfficientNet's default,
# except that the B0 backbone trains without it.
BACKBONE_SURVIVAL_PROB = 0.8
DEFAULT_FPN_NAME = "bifpn"
DEFAULT_FPN_WEIGHT_METHOD = "fastattn"

_LITE_COMMON = {
    "mean_rgb": 127.0,
    "stddev_rgb": 128.0,
    "act_type": "relu6",
    "fpn_weight_method": "sum",
}


def _preset(backbone: str, image_size: int, filters: int, cells: int,
            repeats: int, **extra: Any) -> dict[str, Any]:
    return dict(backbone_name=backbone, image_size=image_size,
                fpn_num_filters=filters, fpn_cell_repeats=cells,
                box_class_repeats=repeats, **extra)


PRESETS: dict[str, dict[str, Any]] = {
    "efficientdet-d0": _preset("efficientnet-b0", 512, 64, 3, 3),
    "efficientdet-d1": _preset("efficientnet-b1", 640, 88, 4, 3),
    "efficientdet-d2": _preset("efficientnet-b2", 768, 112, 5, 3),
    "efficientdet-d3": _preset("efficientnet-b3", 896, 160, 6, 4),
    "efficientdet-d4": _preset("efficientnet-b4", 1024, 224, 7, 4),
    "efficientdet-d5": _preset("efficientnet-b5", 1280, 288, 7, 4),
    "efficientdet-d6": _preset("efficientnet-b6", 1280, 384, 8, 5,
                               fpn_weight_method="sum"),
    "efficientdet-d7": _preset("efficientnet-b6", 1536, 384, 8, 5,
                               anchor_scale=5.0, fpn_weight_method="sum"),
    "efficientdet-d7x": _preset("efficientnet-b7", 1536, 384, 8, 5,
                                max_level=8, fpn_weight_method="sum"),
    "efficientdet-lite0": _preset("efficientnet-lite0", 320, 64, 3, 3,
                                  anchor_scale=3.0, **_LITE_COMMON),
    "efficientdet-lite1": _preset("efficientnet-lite1", 384, 88, 4, 3,
                                  anchor_scale=3.0, **_LITE_COMMON),
    "efficientdet-lite2": _preset("efficientnet-lite2", 448, 112, 5, 3,
                                  anchor_scale=3.0, **_LITE_COMMON),
    "efficientdet-lite3": _preset("efficientnet-lite3", 512, 160, 6, 4,
                                  **_LITE_COMMON),
    "efficientdet-lite3x": _preset("efficientnet-lite3", 640, 200, 6, 4,
                                   anchor_scale=3.0, **_LITE_COMMON),
    "efficientdet-lite4": _preset("efficientnet-lite4", 640, 224, 7, 4,
                                  **_LITE_COMMON),
}

# Keys whose value is a free-form mapping: sub-keys are not validated.
_FREE_FORM_KEYS = frozenset({"label_map", "backbone_config", "fpn_config"})


class ConfigError(EfficientDetError, ValueError):
    """A configuration value or key a user must fix; the message says how."""


def choose(registry: Mapping[str, Any], key: str, name: Any) -> Any:
    """``registry[name]`` for the setting ``key``, or a ConfigError listing
    the known names: the one way a named choice (activation, backbone, FPN
    variant) is looked up, so every such error reads the same."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown {key} {name!r}; known: "
                          f"{', '.join(registry)}") from None


class Config(Mapping[str, Any]):
    """Read-only hyperparameters with attribute access (``config.num_classes``).

    Reading gives the resolved values (see the module docstring);
    ``image_size`` is normalised once to a (height, width) pair so every
    consumer sees the same form.
    """

    def __init__(self, values: Mapping[str, Any]):
        self._settings = _validated(copy.deepcopy(dict(values)))
        self._values = _resolved(self._settings)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_values"][key]
        except KeyError:
            raise AttributeError(_unknown_key_message(key, self.__dict__.get(
                "_values", DEFAULTS))) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config(name={self._values.get('name')!r}, ...)"

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain Python data (lists, not tuples) for YAML:
        ``Config(config.as_dict())`` equals ``config``."""
        out = copy.deepcopy(self._settings)
        out["image_size"] = list(out["image_size"])
        return out

    def override(self, overrides: "Mapping[str, Any] | str | None") -> "Config":
        """Returns a new config with ``overrides`` applied.

        ``overrides`` is a mapping, a path to a ``.yaml``/``.yml`` file, or a
        string ``"a=1,b.c=2"``. Unknown keys raise :class:`ConfigError` naming
        the key and the closest known one.
        """
        if overrides is None or overrides == "":
            return self
        if isinstance(overrides, str):
            overrides = parse_overrides(overrides)
        merged = copy.deepcopy(self._settings)
        _merge(merged, dict(overrides), prefix="")
        if "image_size" in overrides:
            _check_divisible(parse_image_size(merged["image_size"]),
                             merged["max_level"])
        return Config(merged)

    def to_yaml(self, path: str) -> None:
        """Writes the config atomically (temp file + rename)."""
        atomic_write(path, yaml.safe_dump(self.as_dict(), sort_keys=True))


def get_config(model_name: str = "efficientdet-d0",
               overrides: "Mapping[str, Any] | str | None" = None) -> Config:
    """Official defaults + the named preset + optional overrides."""
    if model_name not in PRESETS:
        close = difflib.get_close_matches(model_name, PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model name {model_name!r}.{hint} "
                          f"Known: {', '.join(PRESETS)}")
    values = copy.deepcopy(DEFAULTS)
    values.update(copy.deepcopy(PRESETS[model_name]))
    values["name"] = model_name
    return Config(values).override(overrides)


def parse_overrides(text: str) -> dict[str, Any]:
    """Parses a YAML file path or ``"a=1,b.c=[1,2],d=x"`` into a nested dict.

    Commas inside brackets/braces/quotes do not split, so list values work.
    """
    text = text.strip()
    if text.endswith((".yaml", ".yml")) or os.path.isfile(text):
        if not os.path.isfile(text):
            raise ConfigError(f"hparams file not found: {text}")
        with open(text, encoding="utf-8") as f:
            try:
                loaded = yaml.safe_load(f)
            except yaml.YAMLError as err:
                raise ConfigError(f"{text}: not valid YAML ({err})") from None
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{text}: expected a mapping of key: value, "
                              f"got {type(loaded).__name__}")
        return loaded
    result: dict[str, Any] = {}
    for item in _split_top_level(text):
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = (s.strip() for s in item.split("=", 1))
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_scalar(raw)
    return result


def parse_image_size(value: Any) -> tuple[int, int]:
    """Returns (height, width).

    Accepts an int (square), a (height, width) pair, or automl's string form
    ``"WIDTHxHEIGHT"``: automl's ``parse_image_size`` reads ``"640x384"`` as
    width 640, height 384 and users' YAML files depend on that.
    """
    if isinstance(value, bool):
        raise ConfigError(f"image_size must be an int, [height, width] or "
                          f"'WIDTHxHEIGHT', got {value!r}")
    if isinstance(value, int):
        return value, value
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            width, height = (int(p) for p in parts)
            return height, width
        if value.strip().isdigit():
            return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return int(value[0]), int(value[1])
    raise ConfigError(f"image_size must be an int, [height, width] or "
                      f"'WIDTHxHEIGHT', got {value!r}")


def _validated(values: dict[str, Any]) -> dict[str, Any]:
    height, width = parse_image_size(values["image_size"])
    if height <= 0 or width <= 0:
        raise ConfigError(f"image_size must be positive, got {height}x{width}")
    values["image_size"] = (height, width)
    if not values["min_level"] < values["max_level"]:
        raise ConfigError("min_level must be smaller than max_level")
    if values["num_classes"] < 1:
        raise ConfigError("num_classes must be >= 1")
    label_map = values.get("label_map")
    if label_map:
        values["label_map"] = {int(k): str(v) for k, v in label_map.items()}
        top = max(values["label_map"])
        if min(values["label_map"]) < 1:
            raise ConfigError("label_map ids are 1-based; 0 is never a class")
        if top > values["num_classes"]:
            raise ConfigError(f"label_map has id {top} but num_classes is "
                              f"{values['num_classes']}")
        if top < values["num_classes"]:
            _LOG.warning("num_classes=%d but label_map's highest id is %d: "
                         "channels above it are never trained",
                         values["num_classes"], top)
    _check_architecture_data(values)
    return values


def _check_architecture_data(values: Mapping[str, Any]) -> None:
    """The free-form architecture keys have the shape their readers expect
    (their contents are checked where they are built: a bad block string by
    the backbone, a bad node by the feature network)."""
    backbone = values.get("backbone_config")
    if backbone is not None and not (
            isinstance(backbone, Mapping) and set(backbone) == {"blocks"}
            and isinstance(backbone["blocks"], list) and backbone["blocks"]
            and all(isinstance(b, str) for b in backbone["blocks"])):
        raise ConfigError(f"backbone_config must be {{blocks: [block strings, "
                          f"e.g. 'r1_k3_s11_e1_i32_o16_se0.25']}}, got {backbone!r}")
    fpn = values.get("fpn_config")
    if fpn is not None and not (
            isinstance(fpn, Mapping) and "nodes" in fpn
            and set(fpn) <= {"nodes", "weight_method"}
            and isinstance(fpn["nodes"], list) and fpn["nodes"]):
        raise ConfigError(f"fpn_config must be {{nodes: [{{feat_level: L, "
                          f"inputs_offsets: [ids]}}, ...], weight_method: "
                          f"optional}}, got {fpn!r}")
    survival = values.get("backbone_survival_prob")
    if survival is not None and (isinstance(survival, bool) or not isinstance(
            survival, (int, float)) or not 0.0 < survival <= 1.0):
        raise ConfigError(f"backbone_survival_prob must be in (0, 1] (1.0: "
                          f"no drop-connect) or null, got {survival!r}")


def _resolved(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The values consumers read: automl's rules applied to ``None``s.

    ``.get``: a config written before a key existed (an export's) has none.
    """
    values = copy.deepcopy(dict(settings))
    fpn_config = settings.get("fpn_config") or {}
    values["fpn_name"] = settings.get("fpn_name") or DEFAULT_FPN_NAME
    values["fpn_weight_method"] = (fpn_config.get("weight_method")
                                   or settings.get("fpn_weight_method")
                                   or DEFAULT_FPN_WEIGHT_METHOD)
    survival = settings.get("backbone_survival_prob")
    if survival is None and not settings["backbone_name"].endswith("-b0"):
        survival = BACKBONE_SURVIVAL_PROB
    values["backbone_survival_prob"] = survival
    return values


def _check_divisible(size: tuple[int, int], max_level: int) -> None:
    """A user-chosen image_size must tile every pyramid level exactly, so
    anchors and feature maps line up without rounding.

    Two official presets (lite0 at 320, lite2 at 448) break this rule; the
    network rounds sizes up like automl for them, so presets are not checked.
    """
    height, width = size
    stride = 2 ** max_level
    if height % stride or width % stride:
        raise ConfigError(
            f"image_size {height}x{width} (height x width) must have both "
            f"sides divisible by 2**max_level = {stride}; e.g. "
            f"{max(stride, round(height / stride) * stride)}x"
            f"{max(stride, round(width / stride) * stride)} "
            f"(strings are automl's WIDTHxHEIGHT)")


def _merge(base: dict[str, Any], overrides: dict[str, Any], prefix: str) -> None:
    for key, value in overrides.items():
        key = str(key)
        full = prefix + key
        if key not in base:
            if full in AUTOML_ONLY_KEYS:
                _LOG.warning("hparam %r is an automl setting with no effect "
                             "in efficientdet_tf; ignored", full)
                continue
            raise ConfigError(_unknown_key_message(full, base, prefix))
        if (isinstance(base[key], dict) and isinstance(value, dict)
                and key not in _FREE_FORM_KEYS):
            _merge(base[key], value, prefix=full + ".")
        else:
            base[key] = copy.deepcopy(value)


def _unknown_key_message(key: str, known: Mapping[str, Any],
                         prefix: str = "") -> str:
    names = [prefix + k for k in known]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown hparam {key!r}{hint}"


def _split_top_level(text: str) -> list[str]:
    items, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def _parse_scalar(raw: str) -> Any:
    """Python/YAML literal if it parses (1, 0.5, true, [1,2], None), else str."""
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
