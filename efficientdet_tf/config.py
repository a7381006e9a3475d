"""One configuration object for every EfficientDet hyperparameter.

The defaults and the named models are data, in :mod:`efficientdet_tf.presets`;
this module builds, validates, resolves and saves configs. Keys use automl's
names so a YAML file written for automl loads unchanged.

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
from efficientdet_tf.presets import (AUTOML_ONLY_KEYS, BACKBONE_SURVIVAL_PROB,
                                     DEFAULT_FPN_NAME,
                                     DEFAULT_FPN_WEIGHT_METHOD, DEFAULTS,
                                     PRESETS)
from efficientdet_tf.utils.files import atomic_write

_LOG = logging.getLogger(__name__)

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
    """Parses ``--hparams``: YAML files and ``key=value`` items, joined by
    commas, into one nested dict; later items win (``wrs.yaml,anchors.yaml,
    learning_rate=0.02``), nested keys merged.

    Commas inside brackets/braces/quotes do not split, so list values work;
    a single existing path is read as a file even if it holds a comma.
    """
    text = text.strip()
    if os.path.isfile(text):
        return _read_yaml(text)
    result: dict[str, Any] = {}
    for item in _split_top_level(text):
        if "=" not in item and _is_yaml_path(item):
            _deep_update(result, _read_yaml(item))
            continue
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value "
                              f"(nor a .yaml file)")
        key, raw = (s.strip() for s in item.split("=", 1))
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_scalar(raw)
    return result


def _is_yaml_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or os.path.isfile(text)


def _read_yaml(path: str) -> dict[str, Any]:
    """A YAML file of ``key: value`` overrides."""
    if not os.path.isfile(path):
        raise ConfigError(f"hparams file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            loaded = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, "
                          f"got {type(loaded).__name__}")
    return loaded


def _deep_update(base: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """``base`` updated in place by ``overrides``, merging nested mappings
    (a later ``nms_configs: {method: hard}`` keeps the other NMS keys)."""
    for key, value in overrides.items():
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            _deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


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
