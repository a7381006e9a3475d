"""COCO evaluation of a model over validation TFRecords (automl's eval).

:func:`evaluate` makes one pass over the eval pipeline
(:func:`~efficientdet_tf.data.pipeline.build_dataset` with
``training=False``: no augmentation, every image, crowd boxes kept) and runs
the detector (:class:`~efficientdet_tf.modeling.detector.Detector`: the
network in inference mode plus post-processing, the exports' path too) in one
fixed-size ``tf.function``. The pipeline reports ``image_scale`` as network-input pixels
per original pixel, so post-processing gets ``1 / image_scale`` and the
detections come out in pixels of the original image, the frame of COCO
ground truth files.

Ground truth is the ``val_json_file`` (what automl's converters write next
to the records; image ids there are the records' ``source_id``), or without
one, the eval labels themselves mapped back to original pixels, as automl
does. Scoring, id matching and the COCO dicts live in
:mod:`efficientdet_tf.evaluation.coco_metrics`; this module owns the loop and its
outputs (table on stdout, JSON files, TensorBoard).

Weights are used as they are: a training loop that keeps an exponential
moving average swaps the averaged weights in before calling
:func:`evaluate`, as automl evaluates its EMA checkpoints.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO

from efficientdet_tf.utils import summaries, visualize
from efficientdet_tf.evaluation.coco_metrics import (ImageIdResolver, ImageTruth,
                                          coco_evaluation, coco_from_dict,
                                          detections_to_coco, format_metrics,
                                          ground_truth_from_records,
                                          load_coco_json)
from efficientdet_tf.evaluation.gallery import record_images
from efficientdet_tf.evaluation.report import Report, write_report
from efficientdet_tf.config import Config
from efficientdet_tf.data.pipeline import RecordFilter, build_dataset
from efficientdet_tf.modeling.detector import Detector
from efficientdet_tf.ops.geometry import scale_geometry
from efficientdet_tf.ops.postprocess import Detections
from efficientdet_tf.utils.files import atomic_write

_LOG = logging.getLogger(__name__)

RESULTS_FILE = "eval_results.json"
DETECTIONS_FILE = "detections.json"
# Drawn images show what a user would call a detection, not the long tail
# of low scores that AP also counts (which would hide the image).
DRAW_MIN_SCORE = 0.3
DRAW_MAX_BOXES = 30

PredictFn = Callable[[tf.Tensor, tf.Tensor], Detections]


class ImageDetections(NamedTuple):
    """One image's detections in original pixels (yxyx ``[M, 4]``)."""
    source_id: str
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def evaluate(detector: Detector, file_pattern: str, *, val_json_file: str | None = None,
             batch_size: int = 8, max_images: int | None = None,
             output_dir: str | None = None,
             summary_writer: tf.summary.SummaryWriter | None = None,
             step: int | None = None,
             num_images_to_draw: int = 3,
             keep: RecordFilter | None = None) -> dict[str, float]:
    """COCO box metrics of ``detector`` (a model and its config) on the
    records matching ``file_pattern``.

    The detector runs its traced :meth:`~efficientdet_tf.modeling.detector.
    Detector.detect_inputs`; a caller evaluating the same model repeatedly
    (a training loop, every epoch) passes the same detector and traces once.
    ``max_images`` (automl's ``eval_samples``) stops
    after that many images; None reads every record once. ``keep``
    evaluates only the records it keeps (a K-fold run's held-out fold,
    :meth:`~efficientdet_tf.datasets.kfold.Fold.keep`); a ``val_json_file``
    may then be that of all the records, since only the images evaluated
    are scored, as with ``max_images``. Images whose
    ``source_id`` was seen before are skipped with a warning (they would
    count twice).

    Returns :data:`~efficientdet_tf.evaluation.coco_metrics.METRIC_NAMES` and one
    ``AP_/<class name>`` per category (``-1``: nothing to measure), also
    printed as a table. ``output_dir`` gets ``eval_results.json`` (the
    returned dict), ``detections.json`` (COCO results) and the plots,
    tables and error gallery of :mod:`~efficientdet_tf.evaluation.report`.
    ``summary_writer`` gets every metric as a scalar, the report's plots
    and ``num_images_to_draw`` images with their detections, at ``step``
    (or the default summary step).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be at least 1 (or None for every "
                         f"record), got {max_images}")
    if summary_writer is not None and step is None:
        step = tf.summary.experimental.get_step()
        if step is None:
            raise ValueError("evaluate(summary_writer=...) needs step (or a "
                             "default step from tf.summary.experimental."
                             "set_step)")
    # Read the ground truth first: a wrong path fails before the long run.
    ground_truth = load_coco_json(val_json_file) if val_json_file else None

    config = detector.config
    check_id = (ImageIdResolver(ground_truth.dataset) if ground_truth
                else None)
    dataset = build_dataset(file_pattern, config, training=False,
                            batch_size=batch_size, deterministic=True,
                            keep=keep)
    start = time.perf_counter()
    detections, truths, drawings = _run(
        detector.detect_inputs, dataset, config, max_images,
        num_images_to_draw if summary_writer is not None else 0, check_id)
    seconds = time.perf_counter() - start
    _LOG.info("ran %d images in %.1f s (%.1f images/s)", len(detections),
              seconds, len(detections) / max(seconds, 1e-9))

    metrics, report = score(detections, truths, config,
                            ground_truth=ground_truth,
                            val_json_file=val_json_file,
                            file_pattern=file_pattern, output_dir=output_dir)
    if summary_writer is not None:
        write_summaries(summary_writer, step, metrics, drawings,
                        config.label_map, report)
    return metrics


def score(detections: Sequence[ImageDetections], truths: Sequence[ImageTruth],
          config: Config, *, ground_truth: COCO | None,
          val_json_file: str | None, file_pattern: str,
          output_dir: str | None) -> tuple[dict[str, float], Report | None]:
    """COCO metrics of per-image detections (printed as a table) and, with
    ``output_dir``, the JSON files and the report. ``ground_truth``: the
    loaded ``val_json_file``, or None to build it from ``truths`` (read
    from ``file_pattern``'s records, which the error gallery reads again)."""
    if ground_truth is None:
        ground_truth = coco_from_dict(ground_truth_from_records(
            truths, config.num_classes, config.label_map))
    resolve = ImageIdResolver(ground_truth.dataset)
    image_ids = [resolve(d.source_id) for d in detections]
    results = detections_to_coco(image_ids, [d.boxes for d in detections],
                                 [d.scores for d in detections],
                                 [d.classes for d in detections])
    scored = coco_evaluation(ground_truth, results, image_ids=image_ids,
                             label_map=config.label_map)
    metrics = scored.metrics

    source = val_json_file or "ground truth from the records"
    title = (f"COCO box metrics: {len(image_ids)} images, {len(results)} "
             f"detections, against {source}")
    if not results:
        title += "\n  (no detections at all: every measurable AP and AR is 0)"
    print(format_metrics(metrics, title), flush=True)
    report = None
    if output_dir:
        write_outputs(output_dir, metrics, results)
    if output_dir and scored.evaluator.evalImgs:  # else nothing to plot
        source_ids = dict(zip(image_ids, (d.source_id for d in detections)))
        report = write_report(
            output_dir, scored.evaluator, ground_truth, results, scored.names,
            read_images=lambda ids: _images_by_id(file_pattern, config,
                                                  source_ids, ids))
        print(report.summary(output_dir), flush=True)
    return metrics, report


def _images_by_id(file_pattern: str, config: Config,
                  source_ids: Mapping[int, str], image_ids: set[int]
                  ) -> dict[int, np.ndarray]:
    """The gallery's images, read back from the eval records."""
    wanted = {source_ids[i]: i for i in image_ids if i in source_ids}
    return {wanted[source_id]: image for source_id, image in
            record_images(file_pattern, config, set(wanted)).items()}


def _run(predict: PredictFn, dataset: tf.data.Dataset, config: Config,
         max_images: int | None, num_images_to_draw: int,
         check_id: Callable[[str], int] | None
         ) -> tuple[list[ImageDetections], list[ImageTruth],
                    list[tuple[np.ndarray, ImageDetections]]]:
    """The eval loop: per-image detections, the first images to draw with
    theirs, and ground truth from the labels when there is no JSON.

    ``check_id`` (the JSON's id resolver) raises on the first image the JSON
    does not know, before the model runs: mismatched records fail at once,
    not after a long run.
    """
    detections: list[ImageDetections] = []
    truths: list[ImageTruth] = []
    drawings: list[tuple[np.ndarray, ImageDetections]] = []
    seen: set[str] = set()
    for images, labels in dataset:
        source_ids = [s.decode("utf-8", "replace")
                      for s in labels["source_id"].numpy()]
        if check_id is not None:
            for source_id in source_ids:
                check_id(source_id)
        scale = labels["image_scale"]
        output = predict(images, 1.0 / scale)
        boxes, scores, classes, counts = (t.numpy() for t in output)
        scale = scale.numpy()
        sizes = labels["image_size"].numpy()
        for i, source_id in enumerate(source_ids):
            if max_images is not None and len(detections) >= max_images:
                return detections, truths, drawings
            if source_id in seen:
                _LOG.warning("source_id %r appears again in the records: "
                             "skipped (an image must count once)", source_id)
                continue
            seen.add(source_id)
            count = int(counts[i])
            found = ImageDetections(source_id, boxes[i, :count],
                                    scores[i, :count], classes[i, :count])
            detections.append(found)
            if check_id is None:
                truths.append(truth_from_labels(labels, i, source_id, scale[i],
                                                sizes[i]))
            if len(drawings) < num_images_to_draw:
                drawings.append((original_image(
                    images[i].numpy(), tuple(sizes[i]),
                    config.mean_rgb, config.stddev_rgb), found))
    return detections, truths, drawings


def truth_from_labels(labels: Mapping[str, tf.Tensor], index: int,
                      source_id: str, image_scale: float,
                      image_size: np.ndarray) -> ImageTruth:
    """Image ``index``'s eval labels as ground truth in original pixels:
    padding rows (class -1) dropped, boxes divided by ``image_scale``."""
    classes = labels["classes"][index].numpy()
    keep = classes > 0
    boxes = labels["boxes"][index].numpy()[keep] / image_scale
    return ImageTruth(source_id, int(image_size[0]), int(image_size[1]),
                      boxes, classes[keep],
                      labels["is_crowd"][index].numpy()[keep])


def original_image(image: np.ndarray, original_size: tuple[int, int],
                   mean_rgb: Any, stddev_rgb: Any) -> np.ndarray:
    """uint8 ``[h, w, 3]`` from a normalised eval input ``[H, W, 3]``.

    The eval input is ``(pixels - mean) / stddev`` resized into the
    top-left corner by the eval geometry
    (:func:`~efficientdet_tf.ops.geometry.scale_geometry`), then zero
    padding, so this undoes the normalisation, crops the resized region the
    same geometry gives and resizes it back to ``(h, w)``.
    """
    height, width = (int(v) for v in original_size)
    pixels = (np.asarray(image, np.float32) * np.asarray(stddev_rgb, np.float32)
              + np.asarray(mean_rgb, np.float32))
    crop_h, crop_w = scale_geometry((height, width),
                                    pixels.shape[:2]).scaled_size.numpy()
    restored = tf.image.resize(pixels[:crop_h, :crop_w], (height, width),
                               method=tf.image.ResizeMethod.BILINEAR).numpy()
    return np.clip(np.round(restored), 0, 255).astype(np.uint8)


def write_outputs(output_dir: str, metrics: Mapping[str, float],
                  results: list[dict[str, Any]]) -> None:
    """``eval_results.json`` and ``detections.json``, each written to a
    temporary file and renamed, so a reader (or a killed run) never sees
    half a file."""
    atomic_write(os.path.join(output_dir, RESULTS_FILE),
                 json.dumps(dict(metrics), indent=1) + "\n")
    atomic_write(os.path.join(output_dir, DETECTIONS_FILE),
                 json.dumps(results) + "\n")


def write_summaries(writer: tf.summary.SummaryWriter, step: int,
                    metrics: Mapping[str, float],
                    drawings: list[tuple[np.ndarray, ImageDetections]],
                    label_map: Mapping[int, str] | None,
                    report: Report | None = None) -> None:
    """Every metric as a scalar (automl's tag names), each drawn image as
    ``eval_images/<k>`` (the same images every evaluation, so TensorBoard's
    step slider shows how their detections evolve) and the report's plots
    as ``eval_plots/<name>``."""
    with writer.as_default():
        for name, value in metrics.items():
            summaries.scalar(name, value, step)
        for k, (image, found) in enumerate(drawings):
            drawn = visualize.draw_detections(
                image, found.boxes, found.classes, found.scores,
                label_map=label_map, min_score=DRAW_MIN_SCORE,
                max_boxes=DRAW_MAX_BOXES)
            summaries.image(f"eval_images/{k}", drawn, step,
                            f"detections on source_id {found.source_id}")
        for path in report.plots if report is not None else []:
            name = os.path.splitext(os.path.basename(path))[0]
            summaries.png_image(f"eval_plots/{name}", path, step)
    writer.flush()
