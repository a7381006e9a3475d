"""Load official automl checkpoints and native ones; save native ones.

Everything is keyed by the *official* variable names
(``efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel``) that
:func:`official_variable_map` derives from the layer structure. Two containers
carry such names; :func:`load_weights` tells them apart by itself:

* **official**: TF1 name-based, as automl's archives. The key
  ``<name>/ExponentialMovingAverage`` is a variable's EMA shadow (batch-norm
  moving statistics have one too); ``global_step`` and optimizer slots are
  ignored. Only ``efficientnet-*`` keys (an ImageNet backbone, maybe with its
  ``head/`` classifier) fill the backbone and leave BiFPN and heads as built.
* **native** (our choice): TF2 object-based, root children ``model`` (and
  optionally ``ema``) each mapping official names to variables, written by
  :func:`save_native`. Object-based so training can add ``optimizer=...`` to
  the same root (loading ignores it); keyed by names, not by the Keras object
  graph, because Keras 3 does not track the layer lists this network is made
  of (``tf.train.Checkpoint(model=model)`` saves 17 of D0's 709 variables) and
  so both containers share one matching, one set of checks and one report.

Nothing is assigned until every check passed, so a failed load leaves the
model as it was, and no variable silently keeps its random initialisation.
Between pyramids of other levels (an official 3..7 checkpoint, a
``min_level: 2`` model) equal names are not always the same variable; those
are held back (:mod:`efficientdet_tf.modeling.level_names` says which).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from efficientdet_tf.modeling.efficientnet import EfficientNet
from efficientdet_tf.modeling.level_names import (layer_scopes, level_span,
                                                  pyramid_levels,
                                                  tied_to_other_levels)
from efficientdet_tf.config import get_config
from efficientdet_tf.modeling.model import build_model
from efficientdet_tf.utils.files import CONFIG_FILE, atomic_write
from efficientdet_tf.errors import EfficientDetError

_LOG = logging.getLogger(__name__)

EMA_SUFFIX = "/ExponentialMovingAverage"
NATIVE_MODEL_KEY, NATIVE_EMA_KEY = "model", "ema"
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
STATE_FILE = "checkpoint"
# TF1 optimizer slots and training counters in official archives.
_SLOT_NAMES = frozenset({"Momentum", "Adam", "Adam_1", "RMSProp", "RMSProp_1",
                         "Adagrad", "Ftrl", "Ftrl_1"})
_BOOKKEEPING = frozenset({"global_step", "beta1_power", "beta2_power",
                          "current_loss_scale", "good_steps"})
# More shape mismatches than this fraction means another model, not a
# fine-tuning head change (a new num_classes touches 2 of 500+ variables).
_MISMATCH_FRACTION = 0.1
# Keras attribute -> official leaf, where Keras 3 names a weight differently.
_OFFICIAL_WEIGHT_NAMES: dict[type, dict[str, str]] = {
    keras.layers.DepthwiseConv2D: {"kernel": "depthwise_kernel"},
}
_SHOWN = 5  # names quoted in an error message

Shape = tuple[int, ...]


class CheckpointError(EfficientDetError, ValueError):
    """A checkpoint that cannot be loaded as asked; the message says why."""


class ModelMismatchError(CheckpointError):
    """The checkpoint was made for a different model configuration."""


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_weights` did, by official variable name."""
    path: str
    format: str  # "official" or "native"
    backbone_only: bool
    used_ema: bool
    loaded: list[str]
    skipped: dict[str, tuple[Shape, Shape]]  # name -> (checkpoint, model) shape
    missing: list[str]  # model variables the checkpoint does not have
    unused: list[str]  # checkpoint variables the model does not have
    ignored: list[str]  # optimizer slots, counters, other roots
    # Pyramid levels of the checkpoint and the model (from their heads), and
    # the model variables held back because those differ.
    checkpoint_levels: tuple[int, ...] = ()
    model_levels: tuple[int, ...] = ()
    other_levels: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        kind = self.format + (" backbone-only" if self.backbone_only else "")
        text = (f"{self.path} ({kind}, {'EMA' if self.used_ema else 'raw'} "
                f"weights): loaded {len(self.loaded)}, skipped "
                f"{len(self.skipped)}, missing {len(self.missing)}, unused "
                f"{len(self.unused)}, ignored {len(self.ignored)}")
        if self.skipped:
            text += "; skipped " + ", ".join(
                f"{n} {c}->{m}" for n, (c, m) in self.skipped.items())
        if self.backbone_only and self.missing:
            text += "; BiFPN and heads keep their initial values"
        if self.other_levels:
            text += (f"; {self.levels_text()}, so {len(self.other_levels)} "
                     "variables keep their initial values: "
                     + ", ".join(layer_scopes(self.other_levels)))
        return text

    def levels_text(self) -> str:
        """Both pyramids' levels, for messages about what they hold back."""
        return (f"the checkpoint's pyramid has levels "
                f"{level_span(self.checkpoint_levels)}, the model's "
                f"{level_span(self.model_levels)}")


@dataclasses.dataclass(frozen=True)
class _Source:
    """What one checkpoint offers: official name -> checkpoint key."""
    format: str
    raw: dict[str, str]
    ema: dict[str, str]
    ignored: list[str]


def all_layers(model: keras.Layer) -> list[keras.Layer]:
    """``model`` and every nested layer (Keras 3 has no public walk)."""
    return list(model._flatten_layers(include_self=True, recursive=True))


def official_variable_map(model: keras.Layer) -> dict[str, keras.Variable]:
    """Official checkpoint name -> variable, for every weight of ``model``.

    Layer names already follow the official scopes, so a name is the Keras
    variable path, except for the weights ``_OFFICIAL_WEIGHT_NAMES`` renames.
    """
    renamed: dict[int, str] = {}
    for layer in all_layers(model):
        for cls, table in _OFFICIAL_WEIGHT_NAMES.items():
            if isinstance(layer, cls):
                for attr, official in table.items():
                    renamed[id(getattr(layer, attr, None))] = official
    names: dict[str, keras.Variable] = {}
    for variable in model.weights:
        scope = variable.path.rpartition("/")[0]
        name = "/".join(filter(None, [scope, renamed.get(id(variable),
                                                         variable.name)]))
        if name in names:
            raise ValueError(f"two variables of {model.name} map to {name!r}")
        names[name] = variable
    return names


def resolve_checkpoint(path: str | os.PathLike) -> str:
    """The checkpoint prefix for a prefix, an ``.index``/``.data`` file, or a
    directory (its ``checkpoint`` state file, else its single ``*.index``:
    downloaded archives often carry a state file naming the author's disk)."""
    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        return _prefix_in_directory(path)
    prefix = re.sub(r"\.(index|data-\d+-of-\d+)$", "", path)
    if tf.io.gfile.exists(prefix + ".index"):
        return prefix
    raise CheckpointError(f"no checkpoint at {path}: expected a directory "
                          "holding one, or a prefix P with a P.index file")


def _prefix_in_directory(directory: str) -> str:
    # get_checkpoint_state already joins a relative entry onto ``directory``
    # (joining it again breaks every relative model_dir); an absolute entry
    # names the disk it was written on, so its file name is tried here too.
    state = tf.train.get_checkpoint_state(directory)
    stale = ""
    if state and state.model_checkpoint_path:
        named = state.model_checkpoint_path
        for prefix in (named, os.path.join(directory, os.path.basename(named))):
            if tf.io.gfile.exists(prefix + ".index"):
                return prefix
        stale = (f" (its '{STATE_FILE}' file names {named}, which does "
                 "not exist)")
    found = sorted(tf.io.gfile.glob(os.path.join(directory, "*.index")))
    if len(found) == 1:
        if stale:
            _LOG.warning("%s%s; using %s", directory, stale, found[0])
        return found[0][:-len(".index")]
    if not found:
        raise CheckpointError(f"no checkpoint in directory {directory}{stale}")
    raise CheckpointError(
        f"{directory} holds {len(found)} checkpoints "
        f"({', '.join(os.path.basename(c)[:-6] for c in found)}) and no "
        f"'{STATE_FILE}' file selecting one{stale}; pass a prefix instead")


def _read_source(reader: Any) -> _Source:
    keys = reader.get_variable_to_shape_map()
    if _OBJECT_GRAPH_KEY in keys:
        return _native_source(reader, keys)
    raw, ema, ignored = {}, {}, []
    for key in keys:
        if key.endswith(EMA_SUFFIX):
            ema[key[:-len(EMA_SUFFIX)]] = key
        elif key in _BOOKKEEPING or key.rpartition("/")[2] in _SLOT_NAMES:
            ignored.append(key)
        else:
            raw[key] = key
    return _Source("official", raw, ema, sorted(ignored))


def _native_source(reader: Any, keys: Mapping[str, Any]) -> _Source:
    """Reads the name -> key tables of the ``model`` and ``ema`` roots from
    the object graph that TF2 stores in the checkpoint."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH_KEY))
    roots = {c.local_name: c.node_id for c in graph.nodes[0].children}

    def named(root: str) -> dict[str, str]:
        children = graph.nodes[roots[root]].children if root in roots else []
        return {child.local_name: attribute.checkpoint_key
                for child in children
                for attribute in graph.nodes[child.node_id].attributes
                if attribute.name == "VARIABLE_VALUE"}

    raw, ema = named(NATIVE_MODEL_KEY), named(NATIVE_EMA_KEY)
    if not raw:
        raise CheckpointError(
            f"object-based checkpoint without named variables under "
            f"'{NATIVE_MODEL_KEY}' (its roots: {', '.join(sorted(roots))}); "
            "only official TF1 checkpoints and save_native ones load")
    used = {*raw.values(), *ema.values(), _OBJECT_GRAPH_KEY}
    return _Source("native", raw, ema, sorted(k for k in keys if k not in used))


def _backbone_scope(model: keras.Layer) -> str | None:
    for layer in all_layers(model):
        if isinstance(layer, EfficientNet):
            return layer.name
    return None


def _names_text(names: list[str]) -> str:
    more = len(names) - _SHOWN
    return ", ".join(names[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _match(variables: Mapping[str, keras.Variable], source: _Source,
           shapes: Mapping[str, list[int]], prefix: str, use_ema: bool
           ) -> tuple[LoadReport, list[tuple[keras.Variable, str]]]:
    """Pairs each model variable with a checkpoint key (its EMA shadow first
    when asked); reports what would be loaded, skipped, missing and held
    back for belonging to pyramid levels the checkpoint does not have."""
    offered = {*source.raw, *source.ema}
    backbone_only = all(n.startswith("efficientnet-") for n in offered)
    report = LoadReport(
        prefix, source.format, backbone_only, used_ema=False, loaded=[],
        skipped={}, missing=[], unused=[], ignored=source.ignored,
        checkpoint_levels=pyramid_levels(offered),
        model_levels=pyramid_levels(variables))
    relevelled = bool(report.checkpoint_levels and report.model_levels and
                      report.checkpoint_levels != report.model_levels)
    plan = []
    for name, variable in variables.items():
        if relevelled and tied_to_other_levels(name, report.checkpoint_levels):
            report.other_levels.append(name)
            continue
        key = source.ema.get(name) if use_ema else None
        report.used_ema |= key is not None
        key = key or source.raw.get(name)
        if key is None:
            report.missing.append(name)
        elif tuple(shapes[key]) != tuple(variable.shape):
            report.skipped[name] = (tuple(shapes[key]), tuple(variable.shape))
        else:
            plan.append((variable, key))
            report.loaded.append(name)
    report.unused = sorted(offered - {*report.loaded, *report.skipped})
    return report, plan


def _check(report: LoadReport, model: keras.Layer, skip_mismatch: bool) -> None:
    """Refuses another model's checkpoint, unasked-for shape changes, and any
    variable that would silently keep its random initialisation."""
    # A D1 checkpoint in a D0 model shows first in the backbone scope.
    ours = _backbone_scope(model)
    found = sorted({n.split("/")[0] for n in [*report.loaded, *report.skipped,
                                              *report.unused]
                    if n.startswith("efficientnet-")})
    if ours and found and ours not in found:
        raise ModelMismatchError(
            f"model mismatch: the checkpoint's backbone is {', '.join(found)} "
            f"but model {model.name} uses {ours}; build the model whose "
            "model_name matches the checkpoint")
    matched = len(report.loaded) + len(report.skipped)
    if not matched:
        raise ModelMismatchError(f"model mismatch: the checkpoint has none "
                                 f"of model {model.name}'s variables")
    shapes = [f"{n} (checkpoint {c}, model {m})"
              for n, (c, m) in report.skipped.items()]
    if len(shapes) > _MISMATCH_FRACTION * matched:
        raise ModelMismatchError(
            f"model mismatch: {len(shapes)} of {matched} variables of model "
            f"{model.name} differ in shape, so the checkpoint was made for "
            f"another configuration: {_names_text(shapes)}")
    if shapes and not skip_mismatch:
        raise CheckpointError(f"shape mismatch for {_names_text(shapes)}; "
                              "pass skip_mismatch=True to keep them "
                              "initialised (fine-tuning)")
    if report.other_levels and not skip_mismatch:
        raise CheckpointError(
            f"{report.levels_text()} ({model.name}): "
            f"{len(report.other_levels)} of the model's variables have no "
            "counterpart in the checkpoint, whose BiFPN names stand for other "
            f"nodes ({', '.join(layer_scopes(report.other_levels))}); pass "
            "skip_mismatch=True (main.py --ckpt does) to load the rest and "
            "keep those initialised (fine-tuning)")
    required = [n for n in report.missing
                if not report.backbone_only or n.split("/")[0] == ours]
    if required:
        raise CheckpointError(f"{len(required)} variable(s) of model "
                              f"{model.name} are not in the checkpoint: "
                              f"{_names_text(required)}")


def load_weights(model: keras.Layer, path: str | os.PathLike, *,
                 use_ema: bool = True, skip_mismatch: bool = False) -> LoadReport:
    """Loads an official or native checkpoint into a built ``model``.

    ``use_ema`` prefers each variable's EMA shadow when the checkpoint has one
    (what automl does for inference). ``skip_mismatch`` keeps the variables
    whose shape differs at their initial values (fine-tuning with another
    ``num_classes``), and those tied to pyramid levels that differ between
    checkpoint and model (``min_level: 2`` from an official checkpoint: its
    BiFPN and the new level's head batch norms); without it either is an
    error. Raises
    :class:`CheckpointError` (:class:`ModelMismatchError` for a checkpoint of
    another model), naming the checkpoint, before changing any variable.
    """
    prefix = resolve_checkpoint(path)
    variables = official_variable_map(model)
    if not variables:
        raise CheckpointError(f"model {model.name} has no variables yet; "
                              "build it before loading weights")
    try:
        reader = tf.train.load_checkpoint(prefix)
        report, plan = _match(variables, _read_source(reader),
                              reader.get_variable_to_shape_map(), prefix,
                              use_ema)
        _check(report, model, skip_mismatch)
        values = [reader.get_tensor(key) for _, key in plan]
    except CheckpointError as err:
        raise type(err)(f"{prefix}: {err}") from None
    except tf.errors.OpError as err:
        raise CheckpointError(f"{prefix}: unreadable checkpoint "
                              f"({err.message})") from None
    for (variable, _), value in zip(plan, values):
        variable.assign(np.asarray(value, variable.dtype))
    _LOG.info("%s", report.summary())
    return report


def save_native(model: keras.Layer, path: str | os.PathLike, *,
                ema: Mapping[str, keras.Variable] | None = None,
                extras: Mapping[str, Any] | None = None,
                max_to_keep: int | None = None) -> str:
    """Writes the next ``ckpt-N`` native checkpoint into directory ``path``
    and returns its prefix.

    ``ema`` (official name -> shadow variable) is what ``use_ema`` loads;
    ``extras`` (e.g. ``optimizer=...``) are saved beside the model in the same
    root and ignored by :func:`load_weights`. The checkpoint is written under
    a temporary directory, moved in data-first/index-last, and only then named
    in the ``checkpoint`` state file (replaced atomically), so a process killed
    at any point leaves the previous checkpoint as the one that loads.

    ``max_to_keep`` keeps only the newest that many checkpoints: the state
    file drops the older ones first, then their files (and any ``ckpt-N``
    files the state file does not name, e.g. left by a killed run) are
    deleted, index first, so no half-deleted checkpoint ever looks loadable.
    """
    if max_to_keep is not None and max_to_keep < 1:
        raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
    directory = os.fspath(path)
    roots = dict(extras or {})
    if {NATIVE_MODEL_KEY, NATIVE_EMA_KEY} & set(roots):
        raise ValueError(f"extras may not be named {NATIVE_MODEL_KEY!r} or "
                         f"{NATIVE_EMA_KEY!r}")
    # A Checkpoint of name -> variable is the simplest named container.
    roots[NATIVE_MODEL_KEY] = tf.train.Checkpoint(
        **official_variable_map(model))
    if ema:
        roots[NATIVE_EMA_KEY] = tf.train.Checkpoint(**ema)
    tf.io.gfile.makedirs(directory)
    name = f"ckpt-{_next_number(directory)}"
    staging = os.path.join(directory, f".{name}.partial-{os.getpid()}")
    try:
        tf.train.Checkpoint(**roots).write(os.path.join(staging, name))
        files = tf.io.gfile.glob(os.path.join(staging, name + ".*"))
        for src in sorted(files, key=lambda f: f.endswith(".index")):
            target = os.path.join(directory, os.path.basename(src))
            tf.io.gfile.rename(src, target, overwrite=True)
        kept = _write_state_file(directory, name, max_to_keep)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
    if max_to_keep is not None:
        _delete_checkpoints_except(directory, kept)
    prefix = os.path.join(directory, name)
    _LOG.info("saved native checkpoint %s", prefix)
    return prefix


def _next_number(directory: str) -> int:
    pattern = re.compile(r"^ckpt-(\d+)\.")
    numbers = [int(m.group(1)) for f in tf.io.gfile.listdir(directory)
               if (m := pattern.match(f))]
    return max(numbers, default=0) + 1


def _write_state_file(directory: str, name: str,
                      max_to_keep: int | None = None) -> list[str]:
    """Points the ``checkpoint`` state file at ``name`` (relative, so the
    directory can be moved), keeping the earlier entries that still exist
    (the newest ``max_to_keep`` in all); returns the names it lists."""
    state = tf.train.get_checkpoint_state(directory)
    kept = [os.path.basename(p)
            for p in (state.all_model_checkpoint_paths if state else [])
            if tf.io.gfile.exists(p + ".index") and os.path.basename(p) != name]
    names = [*kept, name][-max_to_keep if max_to_keep else 0:]
    lines = [f'model_checkpoint_path: "{name}"'] + [
        f'all_model_checkpoint_paths: "{n}"' for n in names]
    atomic_write(os.path.join(directory, STATE_FILE), "\n".join(lines) + "\n")
    return names


def _delete_checkpoints_except(directory: str, kept: list[str]) -> None:
    pattern = re.compile(r"^(ckpt-\d+)\.(index|data-\d+-of-\d+)$")
    doomed = sorted((f for f in tf.io.gfile.listdir(directory)
                     if (m := pattern.match(f)) and m.group(1) not in kept),
                    key=lambda f: not f.endswith(".index"))
    for filename in doomed:
        tf.io.gfile.remove(os.path.join(directory, filename))


def convert_checkpoint(model_name: str, ckpt_path: str | os.PathLike,
                       model_dir: str | os.PathLike, hparams: Any = None
                       ) -> tuple[str, LoadReport]:
    """Official checkpoint -> native one (EMA applied) plus ``config.yaml``
    in ``model_dir``; returns the native prefix and the load report.
    ``hparams`` are config overrides as :func:`get_config` takes them."""
    config = get_config(model_name, hparams)
    model = build_model(config)
    report = load_weights(model, ckpt_path)
    prefix = save_native(model, model_dir)
    config.to_yaml(os.path.join(os.fspath(model_dir), CONFIG_FILE))
    return prefix, report
