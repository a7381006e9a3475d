"""COCO evaluation of an exported model (a SavedModel directory, its frozen
``.pb``, a ``.tflite`` or an ``.onnx`` file), a checkpoint, or several of
them fused (ensembles, TTA, tiles: :mod:`efficientdet_tf.fusion`), on
validation records, one image at a time.

The checkpoint's AP says what the network learned; this says what the file
you ship scores, after conversion and quantisation, per class and with the
same report (:mod:`~efficientdet_tf.evaluation.report`) as training's
evaluations, so an INT8 TFLite file and its float32 original can be
compared class by class.

Each record's decoded image is fed to the model as a client would
(:mod:`efficientdet_tf.serving.predictors`): the raw uint8 image, which the
SavedModel, frozen graph, ONNX file and checkpoint letterbox themselves; a
TFLite file's input is letterboxed on the host and its boxes scaled back to
the original pixels. Scoring is
:func:`~efficientdet_tf.evaluation.evaluate.score`, shared with training.
"""
from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from efficientdet_tf.config import Config
from efficientdet_tf.data.pipeline import list_record_files, source_id_of
from efficientdet_tf.data.tfrecord import decode_example
from efficientdet_tf.evaluation.coco_metrics import (ImageIdResolver, ImageTruth,
                                                     load_coco_json)
from efficientdet_tf.evaluation.evaluate import ImageDetections, score
from efficientdet_tf.serving.predictors import Predict, open_model


def evaluate_export(path: str, file_pattern: str, config: Config, *,
                    val_json_file: str | None = None,
                    max_images: int | None = None,
                    output_dir: str | None = None) -> dict[str, float]:
    """COCO metrics of the model at ``path`` (any kind
    :func:`~efficientdet_tf.serving.predictors.open_model` opens; ``config``
    when it carries none): :func:`evaluate_predictor`."""
    model = open_model(path, lambda: config)
    return evaluate_predictor(model.predict, os.path.basename(
        os.path.normpath(path)), file_pattern, model.config,
        val_json_file=val_json_file, max_images=max_images,
        output_dir=output_dir)


def evaluate_predictor(predict: Predict, name: str, file_pattern: str,
                       config: Config, *, val_json_file: str | None = None,
                       max_images: int | None = None,
                       output_dir: str | None = None) -> dict[str, float]:
    """COCO metrics (printed, and with ``output_dir`` the JSON files and the
    report) of ``predict`` (a model, or models fused with TTA and tiles) on
    the records of ``file_pattern``; ground truth from ``val_json_file``,
    else from the records. ``config`` says how records name their images
    and what the classes are."""
    ground_truth = load_coco_json(val_json_file) if val_json_file else None
    check_id = ImageIdResolver(ground_truth.dataset) if ground_truth else None
    detections, truths, seen = [], [], set()
    start = time.perf_counter()
    for data in _records(file_pattern, config):
        if max_images is not None and len(detections) >= max_images:
            break
        source_id = data["source_id"].decode("utf-8", "replace")
        if source_id in seen:
            continue
        seen.add(source_id)
        if check_id is not None:
            check_id(source_id)
        found = predict(data["image"])
        detections.append(ImageDetections(source_id, *found))
        height, width = int(data["height"]), int(data["width"])
        truths.append(ImageTruth(
            source_id, height, width,
            data["boxes"] * np.array([height, width, height, width]),
            data["classes"], data["is_crowd"]))
    seconds = time.perf_counter() - start
    print(f"{name}: {len(detections)} images in {seconds:.1f} s", flush=True)
    metrics, _ = score(detections, truths, config, ground_truth=ground_truth,
                       val_json_file=val_json_file, file_pattern=file_pattern,
                       output_dir=output_dir)
    return metrics


def _records(file_pattern: str, config: Config):
    """Each record decoded (NumPy), with its source id as the eval pipeline
    reports it."""
    def parse(record: tf.Tensor):
        data = decode_example(record)
        data["source_id"] = source_id_of(data, config)
        return data
    dataset = tf.data.TFRecordDataset(list_record_files(file_pattern)).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(4).as_numpy_iterator()
