"""COCO evaluation of an exported model: a SavedModel directory, its frozen
``.pb``, a ``.tflite`` or an ``.onnx`` file, on validation records.

The checkpoint's AP says what the network learned; this says what the file
you ship scores, after conversion and quantisation, per class and with the
same report (:mod:`~efficientdet_tf.evaluation.report`) as training's
evaluations, so an INT8 TFLite file and its float32 original can be
compared class by class.

Each record's decoded image is fed to the export as a client would: the
SavedModel, the frozen graph and the ONNX file take the raw uint8 image and
letterbox it themselves; a TFLite file takes a letterboxed image
(:func:`~efficientdet_tf.serving.tflite_export.letterbox`) and its boxes
are scaled back to the original pixels. Scoring is
:func:`~efficientdet_tf.evaluation.evaluate.score`, shared with training.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import tensorflow as tf

from efficientdet_tf.config import Config
from efficientdet_tf.data.pipeline import list_record_files, source_id_of
from efficientdet_tf.data.tfrecord import IMAGE_ID_FEATURES, decode_example
from efficientdet_tf.evaluation.coco_metrics import (ImageIdResolver, ImageTruth,
                                                     load_coco_json)
from efficientdet_tf.evaluation.evaluate import ImageDetections, score

# (uint8 pixels [h, w, 3], encoded bytes) -> boxes yxyx in its pixels [N, 4],
# scores [N], classes [N].
Predict = Callable[[np.ndarray, bytes],
                   tuple[np.ndarray, np.ndarray, np.ndarray]]


def export_predictor(path: str, config: Config) -> Predict:
    """One image at a time through the export at ``path`` (kind by name:
    ``.tflite``, ``.onnx``, ``.pb``, else a SavedModel directory)."""
    if path.endswith(".tflite"):
        return _tflite_predictor(path, config)
    if path.endswith(".onnx"):
        from efficientdet_tf.serving.onnx_export import OnnxDetector
        detector = OnnxDetector(path)
        return lambda pixels, _: _first(detector.detect(pixels[None]))
    from efficientdet_tf.serving.inference import DecodedImage, open_export
    exported = open_export(path, config)
    copies = exported.batch_size or 1  # a fixed batch gets the image repeated

    def predict(pixels: np.ndarray, data: bytes):
        return _first(exported.detect([DecodedImage(data, pixels)] * copies))
    return predict


def _tflite_predictor(path: str, config: Config) -> Predict:
    from efficientdet_tf.serving.tflite_export import TFLiteDetector, letterbox
    detector = TFLiteDetector(path)
    batch, height, width, _ = detector.input_shape

    def predict(pixels: np.ndarray, _: bytes):
        boxed, to_original = letterbox(pixels, (height, width), config.mean_rgb)
        boxes, scores, classes = _first(detector.detect(
            np.repeat(boxed[None], batch, axis=0)))
        return boxes * to_original, scores, classes
    return predict


def _first(outputs: dict[str, np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first image's valid rows of the export contract's outputs."""
    count = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
    return (np.asarray(outputs["detection_boxes"])[0, :count],
            np.asarray(outputs["detection_scores"])[0, :count],
            np.asarray(outputs["detection_classes"])[0, :count].astype(int))


def evaluate_export(path: str, file_pattern: str, config: Config, *,
                    val_json_file: str | None = None,
                    max_images: int | None = None,
                    output_dir: str | None = None) -> dict[str, float]:
    """COCO metrics (printed, and with ``output_dir`` the JSON files and the
    report) of the export at ``path`` on the records of ``file_pattern``;
    ground truth from ``val_json_file``, else from the records."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no exported model at {path}")
    ground_truth = load_coco_json(val_json_file) if val_json_file else None
    check_id = ImageIdResolver(ground_truth.dataset) if ground_truth else None
    predict = export_predictor(path, config)
    detections, truths, seen = [], [], set()
    start = time.perf_counter()
    for data, encoded in _records(file_pattern, config):
        if max_images is not None and len(detections) >= max_images:
            break
        source_id = data["source_id"].decode("utf-8", "replace")
        if source_id in seen:
            continue
        seen.add(source_id)
        if check_id is not None:
            check_id(source_id)
        boxes, scores, classes = predict(data["image"], encoded)
        detections.append(ImageDetections(source_id, boxes, scores, classes))
        height, width = int(data["height"]), int(data["width"])
        truths.append(ImageTruth(
            source_id, height, width,
            data["boxes"] * np.array([height, width, height, width]),
            data["classes"], data["is_crowd"]))
    seconds = time.perf_counter() - start
    print(f"{os.path.basename(os.path.normpath(path))}: {len(detections)} "
          f"images in {seconds:.1f} s", flush=True)
    metrics, _ = score(detections, truths, config, ground_truth=ground_truth,
                       val_json_file=val_json_file, file_pattern=file_pattern,
                       output_dir=output_dir)
    return metrics


def _records(file_pattern: str, config: Config):
    """Each record decoded (NumPy), with its source id as the eval pipeline
    reports it and its encoded image bytes."""
    def parse(record: tf.Tensor):
        data = decode_example(record)
        data["source_id"] = source_id_of(data, config)
        encoded = tf.io.parse_single_example(
            record, IMAGE_ID_FEATURES)["image/encoded"]
        return data, encoded
    dataset = tf.data.TFRecordDataset(list_record_files(file_pattern)).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(4).as_numpy_iterator()
