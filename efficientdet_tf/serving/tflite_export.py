"""TFLite export (FP32, FP16, INT8) with NMS inside, and a runner for it.

TFLite wants static shapes, so its input is not "any size" like the
SavedModel's: it is a uint8 ``[batch, H, W, 3]`` image of exactly the config's
``image_size``, already *letterboxed* (resized keeping the aspect ratio, then
padded bottom/right). :func:`letterbox` does that on the client; it pads with
``round(mean_rgb)``, which the in-graph normalisation maps to ~0, the value
the official pipeline pads with (it pads after normalising). Outputs are the
SavedModel's (``detection_boxes`` ... ``num_detections``), boxes in pixels of
the letterboxed input: multiply by :func:`letterbox`'s scale for pixels of
the original image.

INT8 is post-training quantization with a representative dataset (images or
TFRecords, see :func:`representative_images`): the network's weights and
activations become int8 where TFLite has int8 kernels, the input stays uint8,
and decoding + NMS stay float (selective quantization, see :func:`_int8`;
no Flex ops anywhere). FP16 stores the weights as float16 and computes in
float32 on CPU.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from efficientdet_tf.config import Config
from efficientdet_tf.serving.export import (SAVE_OPTIONS, SERVING_DEFAULT,
                                    ExportError, detection_outputs,
                                    new_archive)
from efficientdet_tf.modeling.detector import POSTPROCESS_SCOPE, Detector
from efficientdet_tf.ops.geometry import scale_geometry
from efficientdet_tf.utils.files import IMAGE_EXTENSIONS, atomic_write

_LOG = logging.getLogger(__name__)

QUANTIZATIONS = ("fp32", "fp16", "int8")
_RECORD_IMAGE_KEY = "image/encoded"


def letterbox(image: np.ndarray | tf.Tensor, image_size: tuple[int, int],
              mean_rgb: float | Sequence[float]) -> tuple[np.ndarray, float]:
    """uint8 ``[h, w, 3]`` -> uint8 ``[H, W, 3]`` TFLite input and the factor
    from its pixels to the original's.

    The geometry is the export's and the pipeline's
    (:func:`efficientdet_tf.ops.geometry.scale_geometry`; bilinear,
    half-pixel centres); the resized pixels are rounded to uint8 and padded
    with the rounded mean colour.
    """
    height, width = image_size
    image = tf.convert_to_tensor(image)
    geometry = scale_geometry(tf.shape(image)[:2], (height, width))
    resized = tf.image.resize(tf.cast(image, tf.float32), geometry.scaled_size)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    fill = np.broadcast_to(np.round(np.asarray(mean_rgb, np.float32)),
                           (3,)).astype(np.uint8)
    out = np.empty((height, width, 3), np.uint8)
    out[...] = fill
    array = resized.numpy()
    out[:array.shape[0], :array.shape[1]] = array
    return out, float(1.0 / geometry.scale.numpy())


def tflite_endpoint(model: keras.Model, config: Config, batch_size: int = 1):
    """The TFLite computation and its static input signature."""
    height, width = config.image_size
    detector = Detector(model, config, batch_size)

    def detect(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return detection_outputs(detector.detect_letterboxed(images))
    return detect, [tf.TensorSpec([batch_size, height, width, 3], tf.uint8,
                                  name="images")]


def check_request(quantizations: Sequence[str],
                  representative_data: str | None) -> None:
    """Raises :class:`ExportError` for quantizations that cannot be made
    (cheap: callers check before building the model)."""
    unknown = [q for q in quantizations if q not in QUANTIZATIONS]
    if unknown or not quantizations:
        raise ExportError(f"unknown TFLite quantization "
                          f"{', '.join(unknown) or '(none)'}; choose from "
                          f"{', '.join(QUANTIZATIONS)}")
    if "int8" in quantizations and not representative_data:
        raise ExportError("int8 quantization needs --representative_data (a "
                          "TFRecord pattern, an image folder, glob or list)")


def export_tflite(model: keras.Model, config: Config, output_dir: str,
                  quantizations: Sequence[str] = ("fp32",),
                  representative_data: str | None = None,
                  num_calibration_steps: int = 100, batch_size: int = 1,
                  basename: str | None = None) -> dict[str, str]:
    """Writes ``<basename>_<quantization>.tflite`` for each quantization
    into ``output_dir``; returns quantization -> path.

    The model goes through a temporary SavedModel so each ``.tflite`` keeps
    the ``serving_default`` signature with named inputs and outputs.
    """
    check_request(quantizations, representative_data)
    basename = basename or config.name
    os.makedirs(output_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix="tflite-", dir=output_dir)
    try:
        archive = new_archive(model)
        fn, spec = tflite_endpoint(model, config, batch_size)
        archive.add_endpoint(SERVING_DEFAULT, fn, spec)
        saved = os.path.join(staging, "saved_model")
        archive.write_out(saved, options=SAVE_OPTIONS, verbose=False)
        written, float_model = {}, None

        def converter() -> tf.lite.TFLiteConverter:
            return tf.lite.TFLiteConverter.from_saved_model(
                saved, signature_keys=[SERVING_DEFAULT])
        for quantization in sorted(quantizations, key=QUANTIZATIONS.index):
            if quantization == "fp32" or (quantization == "int8" and
                                          float_model is None):
                float_model = converter().convert()
            if quantization == "fp32":
                content = float_model
            elif quantization == "fp16":
                fp16 = converter()
                fp16.optimizations = [tf.lite.Optimize.DEFAULT]
                fp16.target_spec.supported_types = [tf.float16]
                content = fp16.convert()
            else:
                content = _int8(converter(), float_model, config,
                                representative_data, num_calibration_steps,
                                batch_size)
            path = os.path.join(output_dir, f"{basename}_{quantization}.tflite")
            atomic_write(path, content)
            written[quantization] = path
            _LOG.info("wrote %s", path)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _int8(converter: tf.lite.TFLiteConverter, float_model: bytes,
          config: Config, representative_data: str, steps: int,
          batch_size: int) -> bytes:
    """Post-training int8 of the network; post-processing stays float.

    Quantized, the decoding and NMS lose everything (box coordinates span
    the image plus the per-class tiles, far beyond 8 bits: on the test model
    no FP32 detection survived), so every op under ``POSTPROCESS_SCOPE``
    is denylisted through TFLite's selective quantization (the quantization
    debugger's options), which also runs the calibration.
    """
    images = list(representative_images(representative_data, config,
                                        steps * batch_size))
    if len(images) < batch_size:
        raise ExportError(f"no readable image in --representative_data "
                          f"{representative_data}")

    def dataset() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(images) - batch_size + 1, batch_size):
            yield {"images": np.stack(images[start:start + batch_size])}
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    # int8 wherever TFLite has an int8 kernel, float builtins elsewhere.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = _interpreter_class()(model_content=float_model)
    denylist = [d["name"] for d in interpreter.get_tensor_details()
                if d["name"].startswith(POSTPROCESS_SCOPE + "/")]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=denylist))
    return debugger.get_nondebug_quantized_model()


def representative_images(source: str, config: Config, count: int
                          ) -> Iterator[np.ndarray]:
    """Up to ``count`` letterboxed uint8 ``[H, W, 3]`` images from
    ``source``: a TFRecord file pattern (records of our schema), or
    an image folder, glob or ``.txt`` list. Unreadable images are skipped."""
    from efficientdet_tf.serving.inference import list_images
    if os.path.isdir(source) or source.endswith(".txt") or any(
            source.lower().endswith(ext) for ext in IMAGE_EXTENSIONS):
        encoded: Iterator[Any] = (_read(path) for path in list_images(source))
    else:
        files = sorted(tf.io.gfile.glob(source))
        if not files:
            raise ExportError(f"--representative_data {source} matches no "
                              "file")
        encoded = (tf.io.parse_single_example(record, {
            _RECORD_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})[
                _RECORD_IMAGE_KEY] for record in tf.data.TFRecordDataset(files))
    produced = 0
    for data in encoded:
        if produced >= count:
            return
        try:
            image = tf.io.decode_image(data, channels=3,
                                       expand_animations=False)
        except (tf.errors.InvalidArgumentError, ValueError):
            continue
        yield letterbox(image, config.image_size, config.mean_rgb)[0]
        produced += 1


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _interpreter_class() -> type:
    """LiteRT's interpreter when installed (TF's is deprecated), else TF's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        return tf.lite.Interpreter


class TFLiteDetector:
    """Runs an exported ``.tflite`` through its ``serving_default``
    signature: letterboxed uint8 ``[B, H, W, 3]`` -> detection dict."""

    def __init__(self, path: str, num_threads: int | None = None):
        self.interpreter = _interpreter_class()(model_path=path,
                                                num_threads=num_threads)
        self._runner = self.interpreter.get_signature_runner(SERVING_DEFAULT)
        details = self._runner.get_input_details()["images"]
        self.input_shape = tuple(int(d) for d in details["shape"])

    def detect(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.asarray(images, np.uint8)
        if images.shape != self.input_shape:
            raise ValueError(f"TFLite input must be {self.input_shape} uint8 "
                             f"(letterboxed), got {images.shape}")
        return dict(self._runner(images=images))
