"""SavedModel and frozen-graph export: images in, detections out, one graph.

The serving computation (docs/contracts.md, "Export contract") is the whole
inference path, so a client needs nothing but the exported files:

* ``serving_default``: ``images`` uint8 ``[B, h, w, 3]`` of any size ->
  ``detection_boxes`` float32 ``[B, N, 4]`` (ymin, xmin, ymax, xmax in pixels
  of the input image), ``detection_scores`` float32 ``[B, N]``,
  ``detection_classes`` **int32** ``[B, N]`` (1-based ids; int because an id
  is exact and float ids invite ``== 3.0000001`` bugs) and ``num_detections``
  int32 ``[B]``; ``N = nms_configs.max_output_size``, rows past
  ``num_detections`` are zero. All ``N`` rows are returned, as automl's
  serving graph does: a score threshold is the client's choice.
* ``serving_bytes``: ``image_bytes`` string ``[B]`` (JPEG, PNG, BMP or GIF,
  sizes may differ within a batch) -> the same outputs. This is what TF
  Serving's REST API receives as ``{"b64": ...}``.
* ``predict``: ``images`` as ``serving_default`` -> the raw head outputs
  ``class_outputs_<level>`` / ``box_outputs_<level>`` and ``image_scales``
  (network pixels -> input pixels), to debug pre-NMS differences.

Every signature runs :class:`efficientdet_tf.modeling.detector.Detector`,
the inference path evaluation and the other exports run too (pre-processing,
network, anchor decoding, NMS with the config's ``nms_configs``). The batch
dimension is dynamic unless ``batch_size`` is given
(a fixed batch unrolls the per-image NMS, which some runtimes prefer).

The SavedModel is written with Keras 3's ``ExportArchive``, which saves every
variable the endpoints read: TF Serving and ``saved_model_cli`` load it with
the session-based loader, which a bare ``tf.Module`` around a Keras 3 model
breaks. ``config.yaml`` and ``label_map.yaml`` go to ``assets.extra/``, the
SavedModel directory for files the graph does not read, so the directory is
self-describing and every SavedModel tool still accepts it. Beside them
the export writes ``<model_name>_frozen.pb`` (``serving_default`` frozen), where
automl's ``--runmode=saved_model`` puts it and its users look for it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from typing import Any, Callable, Mapping

import keras
import tensorflow as tf
import yaml
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2)

from efficientdet_tf.modeling.checkpoint import LoadReport, load_weights
from efficientdet_tf.config import Config, get_config
from efficientdet_tf.modeling.model import build_model
from efficientdet_tf.modeling.detector import Detector
from efficientdet_tf.ops.postprocess import Detections
from efficientdet_tf.utils.files import CONFIG_FILE, atomic_write
from efficientdet_tf.errors import EfficientDetError

_LOG = logging.getLogger(__name__)

SERVING_DEFAULT, SERVING_BYTES, PREDICT = ("serving_default", "serving_bytes",
                                           "predict")
METADATA_DIR = "assets.extra"
LABEL_MAP_FILE = "label_map.yaml"
OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes",
               "num_detections")

# An inference export needs no gradients; tracing them for every op of the
# network is about half of the save time.
SAVE_OPTIONS = tf.saved_model.SaveOptions(experimental_custom_gradients=False)

Endpoint = tuple[Callable[..., dict[str, tf.Tensor]], list[tf.TensorSpec]]


class ExportError(EfficientDetError, ValueError):
    """An export that cannot be done as asked; the message says why."""


def load_model(model_name: str, ckpt_path: str | os.PathLike | None,
               hparams: Any = None) -> tuple[keras.Model, Config,
                                             LoadReport | None]:
    """Builds ``model_name`` with ``hparams`` and loads ``ckpt_path`` (EMA
    weights when the checkpoint has them, as automl serves). ``ckpt_path``
    None keeps the random initialisation (benchmarks, ``dry``)."""
    config = get_config(model_name, hparams)
    model = build_model(config)
    report = load_weights(model, ckpt_path, use_ema=True) if ckpt_path else None
    return model, config, report


def detection_outputs(detections: Detections) -> dict[str, tf.Tensor]:
    """The signature's output dict (its keys are the output names)."""
    return dict(zip(OUTPUT_KEYS, (detections.boxes, detections.scores,
                                  detections.classes,
                                  detections.num_detections)))


class ServingGraph:
    """The three serving signatures of one :class:`~efficientdet_tf.
    modeling.detector.Detector`, as output dicts.

    The same functions back the SavedModel, the frozen graph and in-process
    inference (``model_inspect.py --runmode=infer``), so a checkpoint and its
    export give the same detections.
    """

    def __init__(self, model: keras.Model, config: Config,
                 batch_size: int | None = None, portable_nms: bool = False):
        self.detector = Detector(model, config, batch_size, portable_nms)

    @property
    def config(self) -> Config:
        return self.detector.config

    @property
    def batch_size(self) -> int | None:
        return self.detector.batch_size

    def detect_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 ``[B, h, w, 3]`` -> detections in pixels of the input."""
        return detection_outputs(self.detector.detect_images(images))

    def detect_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Encoded images ``[B]`` -> detections (sizes may differ)."""
        return detection_outputs(self.detector.detect_bytes(image_bytes))

    def endpoints(self) -> dict[str, Endpoint]:
        """Signature name -> (function, input signature); the default first
        (``ExportArchive`` aliases its first endpoint as the default)."""
        images = [tf.TensorSpec([self.batch_size, None, None, 3], tf.uint8,
                                name="images")]
        encoded = [tf.TensorSpec([self.batch_size], tf.string,
                                 name="image_bytes")]
        return {SERVING_DEFAULT: (self.detect_images, images),
                SERVING_BYTES: (self.detect_bytes, encoded),
                PREDICT: (self.detector.head_outputs, images)}

    def functions(self) -> dict[str, tf.types.experimental.PolymorphicFunction]:
        """The endpoints as ``tf.function`` s, traced as the export traces
        them (no autograph), for in-process use."""
        return {name: tf.function(fn, input_signature=spec, autograph=False)
                for name, (fn, spec) in self.endpoints().items()}


def new_archive(model: keras.Model) -> keras.export.ExportArchive:
    """An ``ExportArchive`` holding every variable of ``model``.

    The archive saves every variable its endpoints read (so the
    session-based loader of TF Serving finds them all); listing the model's
    weights as a collection also exposes them as ``.variables`` on the
    reloaded object. ``archive.track(model)`` would do the same but walks
    the whole Keras object graph looking for lookup tables this model does
    not have, a quarter of the export time.
    """
    archive = keras.export.ExportArchive()
    archive.add_variable_collection("variables", list(model.weights))
    return archive


def with_constant_weights(fn: Callable[..., dict[str, tf.Tensor]],
                          spec: list[tf.TensorSpec]
                          ) -> Callable[..., dict[str, tf.Tensor]]:
    """``fn`` traced once with its variables folded into constants.

    oneDNN keeps a convolution's reordered weights only when they are graph
    constants, and grappler folds a batch norm into the convolution before
    it (and fuses the swish after it) only then; read from variables, every
    call reorders every kernel and runs the batch norms apart. Measured on
    the D0 ``serving_default``, batch 1, 512x512, 2 cores: 83 ms with
    variables, 72 ms with constants. The export is a snapshot of the
    weights anyway.
    """
    concrete = tf.function(fn, input_signature=spec,
                           autograph=False).get_concrete_function()
    # Control flow stays functional: the result is called inside a function.
    frozen = convert_variables_to_constants_v2(concrete,
                                               lower_control_flow=False)

    def call(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        return tf.nest.pack_sequence_as(concrete.structured_outputs,
                                        frozen(*args))
    return call


def export_saved_model(model: keras.Model, config: Config,
                       export_dir: str | os.PathLike,
                       batch_size: int | None = None) -> str:
    """Writes the SavedModel (all three signatures) plus ``config.yaml`` and
    ``label_map.yaml`` in ``assets.extra/`` and the frozen ``serving_default``
    as ``<model_name>_frozen.pb`` to ``export_dir``.

    Written to a sibling temporary directory and renamed into place, so an
    interrupted export never leaves a half-written model where a server
    looks. An existing SavedModel at ``export_dir`` is replaced; any other
    non-empty directory is refused rather than deleted.
    """
    target = os.path.abspath(os.fspath(export_dir))
    _check_replaceable(target)
    archive = new_archive(model)
    serving = ServingGraph(model, config, batch_size)
    for name, (fn, spec) in serving.endpoints().items():
        archive.add_endpoint(name, with_constant_weights(fn, spec), spec)
    staging = f"{target}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        archive.write_out(staging, options=SAVE_OPTIONS, verbose=False)
        write_metadata(config, os.path.join(staging, METADATA_DIR))
        _write_frozen(serving, os.path.join(staging, frozen_graph_name(config)))
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _LOG.info("exported SavedModel to %s", target)
    return target


def write_metadata(config: Config, directory: str) -> None:
    """``config.yaml`` (the full config, loadable with ``--hparams``) and
    ``label_map.yaml`` (id: name, empty when the config has no label map)."""
    os.makedirs(directory, exist_ok=True)
    config.to_yaml(os.path.join(directory, CONFIG_FILE))
    with open(os.path.join(directory, LABEL_MAP_FILE), "w",
              encoding="utf-8") as f:
        yaml.safe_dump(dict(config.label_map or {}), f, sort_keys=True)


def read_metadata(export_dir: str | os.PathLike
                  ) -> tuple[Config, dict[int, str]]:
    """The config and label map an export was written with."""
    directory = os.path.join(os.fspath(export_dir), METADATA_DIR)
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ExportError(f"{export_dir}: no {METADATA_DIR}/{CONFIG_FILE}; "
                          "not a SavedModel written by efficientdet_tf")
    with open(path, encoding="utf-8") as f:
        config = Config(yaml.safe_load(f))
    label_map: Mapping[Any, Any] = {}
    label_path = os.path.join(directory, LABEL_MAP_FILE)
    if os.path.isfile(label_path):
        with open(label_path, encoding="utf-8") as f:
            label_map = yaml.safe_load(f) or {}
    return config, {int(k): str(v) for k, v in label_map.items()}


def _is_saved_model(directory: str) -> bool:
    return any(os.path.isfile(os.path.join(directory, name))
               for name in ("saved_model.pb", "saved_model.pbtxt"))


def _check_replaceable(target: str) -> None:
    if os.path.isdir(target) and os.listdir(target) and not _is_saved_model(
            target):
        raise ExportError(f"{target} exists, is not empty and holds no "
                          "SavedModel; choose another --saved_model_dir")
    if os.path.exists(target) and not os.path.isdir(target):
        raise ExportError(f"{target} exists and is not a directory")


def _publish(staging: str, target: str) -> None:
    """Moves ``staging`` to ``target``, replacing an old export."""
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        os.replace(staging, target)
        return
    old = f"{target}.old-{os.getpid()}"
    os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class FrozenGraph:
    """A written frozen GraphDef and how to feed and fetch it."""
    path: str
    inputs: dict[str, str]   # signature input name -> graph tensor name
    outputs: dict[str, str]  # signature output name -> graph tensor name


def frozen_graph_name(config: Config) -> str:
    """automl's file name for a frozen graph: ``<model_name>_frozen.pb``."""
    return f"{config.name}_frozen.pb"


def freeze_graph(model: keras.Model, config: Config,
                 path: str | os.PathLike, batch_size: int | None = None,
                 signature: str = SERVING_DEFAULT) -> FrozenGraph:
    """Writes ``signature``'s computation as a frozen GraphDef (variables
    folded into constants, control flow lowered to TF1 ops) for runtimes
    that take a ``.pb`` (TF1 ``Session``, TF-TRT, older converters)."""
    return _write_frozen(ServingGraph(model, config, batch_size), path,
                         signature)


def _write_frozen(serving: ServingGraph, path: str | os.PathLike,
                  signature: str = SERVING_DEFAULT) -> FrozenGraph:
    functions = serving.functions()
    if signature not in functions:
        raise ExportError(f"unknown signature {signature!r}; one of "
                          f"{', '.join(functions)}")
    concrete = functions[signature].get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    taken = {node.name for node in graph_def.node}
    # The function's outputs are anonymous Identity ops; an extra Identity
    # per output, named after it, lets a client fetch "detection_boxes:0"
    # without knowing the order. Both sides list outputs in tf.nest order:
    # the dict's sorted keys.
    outputs = {}
    for name, tensor in zip(sorted(concrete.structured_outputs), frozen.outputs):
        if name in taken:
            raise ExportError(f"cannot name the frozen output {name!r}: the "
                              "graph already has a node of that name")
        node = graph_def.node.add(name=name, op="Identity")
        node.input.append(tensor.op.name if tensor.value_index == 0
                          else f"{tensor.op.name}:{tensor.value_index}")
        node.attr["T"].type = tensor.dtype.as_datatype_enum
        outputs[name] = f"{name}:0"
    inputs = {spec.name: tensor.name for spec, tensor in zip(
        concrete.structured_input_signature[0], frozen.inputs)}
    target = os.fspath(path)
    atomic_write(target, graph_def.SerializeToString())
    return FrozenGraph(target, inputs, outputs)


def load_frozen_graph(path: str | os.PathLike
                      ) -> tuple[Callable[[Any], dict[str, tf.Tensor]], int | None]:
    """A frozen ``serving_default`` (:func:`freeze_graph`) as a function
    (uint8 images ``[B, h, w, 3]`` -> the :data:`OUTPUT_KEYS` tensors) and
    its fixed batch size (None when dynamic)."""
    graph_def = tf.compat.v1.GraphDef()
    try:
        with open(path, "rb") as f:
            graph_def.ParseFromString(f.read())
    except Exception as err:  # protobuf's DecodeError has no public home
        raise ExportError(f"{path} is not a frozen GraphDef ({err})") from err
    names = {node.name for node in graph_def.node}
    absent = [name for name in ("images", *OUTPUT_KEYS) if name not in names]
    if absent:
        raise ExportError(
            f"{path} has no node(s) {', '.join(absent)}: not a frozen "
            "serving_default written by efficientdet_tf (re-export it with "
            "--runmode=saved_model or --runmode=freeze)")

    def imported() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")
    wrapped = tf.compat.v1.wrap_function(imported, [])
    element = wrapped.graph.as_graph_element
    images = element("images:0")
    pruned = wrapped.prune(images,
                           {name: element(f"{name}:0") for name in OUTPUT_KEYS})
    return (lambda images: pruned(tf.convert_to_tensor(images, tf.uint8)),
            images.shape[0])
