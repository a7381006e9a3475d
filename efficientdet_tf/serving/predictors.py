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
from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.fusion.merge import Detections
from efficientdet_tf.serving.export import METADATA_DIR, read_metadata
from efficientdet_tf.utils.files import CONFIG_FILE

class ModelFileError(EfficientDetError):
    """A model file that cannot be used as it is; the message says why."""


# uint8 pixels [h, w, 3] -> their detections, boxes yxyx in those pixels.
Predict = Callable[[np.ndarray], Detections]
# uint8 images of one size [B, h, w, 3] -> each one's detections.
PredictBatch = Callable[[np.ndarray], list[Detections]]

# Images per call when a model takes any batch: tiles and views of one
# image share a size, and small inputs run several times faster per image
# in one call than one by one.
MAX_BATCH = 16


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready to run, with what fusion needs to know about it."""
    path: str
    run: PredictBatch
    config: Config  # image_size and mean_rgb: how the model letterboxes
    label_map: dict[int, str]

    def predict(self, pixels: np.ndarray) -> Detections:
        """One image (a :data:`Predict`)."""
        return self.run(pixels[None])[0]


def image_rows(outputs: dict[str, np.ndarray], count: int | None = None
               ) -> list[Detections]:
    """Each image's valid rows of the export contract's outputs (the first
    ``count`` images; default all)."""
    counts = np.asarray(outputs["num_detections"]).reshape(-1)[:count]
    boxes = np.asarray(outputs["detection_boxes"], np.float32)
    scores = np.asarray(outputs["detection_scores"], np.float32)
    classes = np.asarray(outputs["detection_classes"]).astype(np.int32)
    return [Detections(boxes[i, :n], scores[i, :n], classes[i, :n])
            for i, n in enumerate(int(c) for c in counts)]


def images_predictor(function: Callable[..., dict], batch_size: int | None
                     ) -> PredictBatch:
    """A ``serving_default``-like function (uint8 ``[B, h, w, 3]`` -> the
    export's outputs) as a :data:`PredictBatch`: up to :data:`MAX_BATCH`
    images per call, or a fixed batch filled up with the last image."""
    def run(images: np.ndarray) -> list[Detections]:
        found: list[Detections] = []
        step = batch_size or MAX_BATCH
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            if batch_size:
                chunk = np.concatenate([chunk, np.repeat(
                    chunk[-1:], batch_size - len(chunk), axis=0)])
            outputs = function(images=chunk)
            found += image_rows({k: np.asarray(v) for k, v in outputs.items()},
                                min(step, len(images) - start))
        return found
    return run


def is_checkpoint(path: str) -> bool:
    """A checkpoint prefix, or a directory holding one (a ``model_dir``)."""
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "checkpoint"))
    return os.path.isfile(path + ".index")


def model_config(path: str, fallback: Callable[[], Config] | None = None
                 ) -> Config:
    """The config a model was written with: an export's ``assets.extra/``
    (beside a ``.pb``, ``.tflite`` or ``.onnx`` file too), a ``model_dir``'s
    ``config.yaml`` (for a checkpoint in ``<model_dir>/archive/``, the best
    one, its ``model_dir``'s), else ``fallback()`` (the command's
    --model_name and --hparams)."""
    folder = path if os.path.isdir(path) else os.path.dirname(
        os.path.abspath(path))
    if os.path.isdir(os.path.join(folder, METADATA_DIR)):
        return read_metadata(folder)[0]
    folders = [folder]
    if is_checkpoint(path):
        folders.append(os.path.dirname(os.path.abspath(folder)))
    for candidate in folders:
        saved = os.path.join(candidate, CONFIG_FILE)
        if os.path.isfile(saved):
            with open(saved, encoding="utf-8") as f:
                return Config(yaml.safe_load(f))
    if fallback is None:
        raise ModelFileError(
            f"{path} carries no config (no {METADATA_DIR}/ or {CONFIG_FILE} "
            "beside it): give the one it was made with (--model_name and "
            "--hparams, or open_model's fallback)")
    return fallback()


def open_model(path: str, fallback: Callable[[], Config] | None = None
               ) -> LoadedModel:
    """The model at ``path``, its kind told by the name: ``.tflite``,
    ``.onnx``, ``.pb``, a checkpoint (prefix or ``model_dir``), else a
    SavedModel directory. Its config: :func:`model_config`."""
    if not os.path.exists(path) and not is_checkpoint(path):
        raise FileNotFoundError(f"no model at {path} (a SavedModel directory, "
                                ".pb, .tflite, .onnx or checkpoint)")
    config = model_config(path, fallback)
    label_map = {int(k): str(v) for k, v in (config.label_map or {}).items()}
    if path.endswith(".tflite"):
        run = _tflite_predictor(path, config)
    elif path.endswith(".onnx"):
        run = _onnx_predictor(path)
    elif is_checkpoint(path):
        run = checkpoint_predictor(path, config)
    else:
        from efficientdet_tf.serving.inference import open_export
        exported = open_export(path, config)
        label_map = exported.label_map or label_map
        run = images_predictor(exported.images_function(), exported.batch_size)
    return LoadedModel(path, run, config, label_map)


def checkpoint_predictor(path: str, config: Config) -> PredictBatch:
    """A checkpoint's serving function, in process (EMA weights when the
    checkpoint has them, as the export would use)."""
    from efficientdet_tf.modeling.checkpoint import load_weights
    from efficientdet_tf.modeling.model import build_model
    from efficientdet_tf.serving.export import SERVING_DEFAULT, ServingGraph
    model = build_model(config)
    load_weights(model, path, use_ema=True)
    serving = ServingGraph(model, config)
    return images_predictor(serving.functions()[SERVING_DEFAULT], None)


def _onnx_predictor(path: str) -> PredictBatch:
    """The file's batch is dynamic unless exported with --batch_size."""
    from efficientdet_tf.serving.onnx_export import OnnxDetector
    detector = OnnxDetector(path)
    fixed = detector.session.get_inputs()[0].shape[0]
    return images_predictor(lambda images: detector.detect(images),
                            fixed if isinstance(fixed, int) else None)


def _tflite_predictor(path: str, config: Config) -> PredictBatch:
    """Letterboxed here (the file's input is fixed), boxes scaled back."""
    from efficientdet_tf.serving.tflite_export import TFLiteDetector, letterbox
    detector = TFLiteDetector(path)
    batch, height, width, _ = detector.input_shape
    size = (height, width)

    def run(images: np.ndarray) -> list[Detections]:
        boxed = [letterbox(pixels, size, config.mean_rgb) for pixels in images]
        found = images_predictor(lambda images: detector.detect(images),
                                 batch)(np.stack([b for b, _ in boxed]))
        return [f._replace(boxes=f.boxes * np.float32(scale))
                for f, (_, scale) in zip(found, boxed)]
    return run
