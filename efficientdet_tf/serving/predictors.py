"""Any model, one image at a time: uint8 pixels in, NumPy detections out.

Test-time augmentation, tiles and ensembles
(:mod:`efficientdet_tf.fusion`) run a model many times per image, on pixels
they made themselves (flipped, rescaled, cut into tiles), and evaluation
scores whatever file a user ships. So every kind of model sits behind the
same call, :data:`Predict`: a checkpoint (or a training ``model_dir``), a
SavedModel directory, its frozen ``.pb``, a ``.tflite`` or an ``.onnx``
file. Each takes the raw image and returns boxes in its pixels; the TFLite
file, whose graph has a fixed input, is letterboxed here and its boxes
scaled back.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
import yaml

from efficientdet_tf.config import Config
from efficientdet_tf.fusion.merge import Detections
from efficientdet_tf.serving.export import METADATA_DIR, read_metadata
from efficientdet_tf.utils.files import CONFIG_FILE

# uint8 pixels [h, w, 3] -> their detections, boxes yxyx in those pixels.
Predict = Callable[[np.ndarray], Detections]


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready to run, with what fusion needs to know about it."""
    path: str
    predict: Predict
    config: Config  # image_size and mean_rgb: how the model letterboxes
    label_map: dict[int, str]


def first_image(outputs: dict[str, np.ndarray]) -> Detections:
    """The first image's valid rows of the export contract's outputs."""
    count = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    return Detections(
        np.asarray(outputs["detection_boxes"], np.float32)[0, :count],
        np.asarray(outputs["detection_scores"], np.float32)[0, :count],
        np.asarray(outputs["detection_classes"])[0, :count].astype(np.int32))


def images_predictor(function: Callable[..., dict], batch_size: int | None
                     ) -> Predict:
    """A ``serving_default``-like function (uint8 ``[B, h, w, 3]`` -> the
    export's outputs) as a :data:`Predict`; a fixed batch gets the image
    repeated."""
    def predict(pixels: np.ndarray) -> Detections:
        batch = np.repeat(pixels[None], batch_size or 1, axis=0)
        outputs = function(images=batch)
        return first_image({k: np.asarray(v) for k, v in outputs.items()})
    return predict


def is_checkpoint(path: str) -> bool:
    """A checkpoint prefix, or a directory holding one (a ``model_dir``)."""
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "checkpoint"))
    return os.path.isfile(path + ".index")


def model_config(path: str, fallback: Callable[[], Config]) -> Config:
    """The config a model was written with: an export's ``assets.extra/``
    (beside a ``.pb``, ``.tflite`` or ``.onnx`` file too), a ``model_dir``'s
    ``config.yaml``, else ``fallback()`` (the command's --model_name and
    --hparams)."""
    folder = path if os.path.isdir(path) else os.path.dirname(
        os.path.abspath(path))
    if os.path.isdir(os.path.join(folder, METADATA_DIR)):
        return read_metadata(folder)[0]
    saved = os.path.join(folder, CONFIG_FILE)
    if os.path.isfile(saved):
        with open(saved, encoding="utf-8") as f:
            return Config(yaml.safe_load(f))
    return fallback()


def open_model(path: str, fallback: Callable[[], Config]) -> LoadedModel:
    """The model at ``path``, its kind told by the name: ``.tflite``,
    ``.onnx``, ``.pb``, a checkpoint (prefix or ``model_dir``), else a
    SavedModel directory. Its config: :func:`model_config`."""
    if not os.path.exists(path) and not is_checkpoint(path):
        raise FileNotFoundError(f"no model at {path} (a SavedModel directory, "
                                ".pb, .tflite, .onnx or checkpoint)")
    config = model_config(path, fallback)
    label_map = {int(k): str(v) for k, v in (config.label_map or {}).items()}
    if path.endswith(".tflite"):
        predict = _tflite_predictor(path, config)
    elif path.endswith(".onnx"):
        predict = _onnx_predictor(path)
    elif is_checkpoint(path):
        predict = checkpoint_predictor(path, config)
    else:
        from efficientdet_tf.serving.inference import open_export
        exported = open_export(path, config)
        label_map = exported.label_map or label_map
        predict = images_predictor(exported.images_function(),
                                   exported.batch_size)
    return LoadedModel(path, predict, config, label_map)


def checkpoint_predictor(path: str, config: Config) -> Predict:
    """A checkpoint's serving function, in process (EMA weights when the
    checkpoint has them, as the export would use)."""
    from efficientdet_tf.modeling.checkpoint import load_weights
    from efficientdet_tf.modeling.model import build_model
    from efficientdet_tf.serving.export import SERVING_DEFAULT, ServingGraph
    model = build_model(config)
    load_weights(model, path, use_ema=True)
    serving = ServingGraph(model, config)
    return images_predictor(serving.functions()[SERVING_DEFAULT], None)


def _onnx_predictor(path: str) -> Predict:
    from efficientdet_tf.serving.onnx_export import OnnxDetector
    detector = OnnxDetector(path)
    return lambda pixels: first_image(detector.detect(pixels[None]))


def _tflite_predictor(path: str, config: Config) -> Predict:
    """Letterboxed here (the file's input is fixed), boxes scaled back."""
    from efficientdet_tf.serving.tflite_export import TFLiteDetector, letterbox
    detector = TFLiteDetector(path)
    batch, height, width, _ = detector.input_shape

    def predict(pixels: np.ndarray) -> Detections:
        boxed, to_original = letterbox(pixels, (height, width), config.mean_rgb)
        found = first_image(detector.detect(np.repeat(boxed[None], batch,
                                                      axis=0)))
        return found._replace(boxes=found.boxes * np.float32(to_original))
    return predict
