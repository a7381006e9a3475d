"""The error gallery: the worst mistakes of an evaluation, drawn.

Each :class:`~efficientdet_tf.evaluation.matching.ErrorCase` becomes one
JPEG of its whole image: every ground-truth box in green, every detection
kept at the report's score threshold in red (with its score), and the box
the case is about outlined again in yellow. Numbers say *how often* a model
fails; these pictures say *how* (a confusing background, a truncated
object, two look-alike classes, a label that is wrong).

The images are read back from the evaluation's records after the metrics
(the eval loop cannot know which ones will be needed), decoding only the
records whose ``source_id`` is wanted.
"""
from __future__ import annotations

import io
import os
import re
import shutil
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from efficientdet_tf.evaluation.matching import ErrorCase
from efficientdet_tf.utils.boxes import coco_corners
from efficientdet_tf.utils.files import atomic_write
from efficientdet_tf.utils.visualize import draw_detections

GALLERY_DIR = "errors"
TRUTH_COLOR = (40, 200, 40)
PREDICTION_COLOR = (230, 40, 40)
FOCUS_COLOR = (255, 220, 0)
JPEG_QUALITY = 90
# Small images are enlarged to this shorter side before drawing, so that
# captions (a fixed-size font) do not cover the objects they name.
MIN_SIDE = 384


def record_images(file_pattern: str, config: Any,
                  source_ids: set[str]) -> dict[str, np.ndarray]:
    """uint8 images of the records whose source id (as the eval pipeline
    reports it, so ``regenerate_source_id`` is honoured) is in
    ``source_ids``; the others are parsed but not decoded."""
    import tensorflow as tf

    from efficientdet_tf.data.pipeline import list_record_files, source_id_of
    from efficientdet_tf.data.tfrecord import IMAGE_ID_FEATURES

    if not source_ids:
        return {}
    wanted = tf.constant(sorted(source_ids))

    def identify(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_single_example(record, IMAGE_ID_FEATURES)
        source_id = source_id_of({"filename": features["image/filename"],
                                  "source_id": features["image/source_id"]},
                                 config)
        return source_id, features["image/encoded"]

    dataset = (tf.data.TFRecordDataset(list_record_files(file_pattern))
               .map(identify, num_parallel_calls=tf.data.AUTOTUNE)
               .filter(lambda source_id, _: tf.reduce_any(
                   tf.equal(source_id, wanted)))
               .map(lambda source_id, encoded: (source_id, tf.io.decode_image(
                   encoded, channels=3, expand_animations=False)),
                    num_parallel_calls=tf.data.AUTOTUNE))
    return {source_id.decode("utf-8", "replace"): image
            for source_id, image in dataset.as_numpy_iterator()}


def write_gallery(output_dir: str, cases: Sequence[ErrorCase],
                  ground_truth: Any, results: Sequence[Mapping[str, Any]],
                  images: Mapping[int, np.ndarray], score_threshold: float,
                  names: Mapping[int, str]) -> list[str]:
    """Draws each case whose image is in ``images`` (by COCO image id) into
    ``<output_dir>/errors/``, replacing the previous evaluation's gallery
    whole; returns the files written."""
    folder = os.path.join(output_dir, GALLERY_DIR)
    staging = folder + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    # One pass over the results (a COCO eval holds ~10^5), not one per case.
    wanted = {case.image_id for case in cases}
    kept: dict[int, list[Mapping[str, Any]]] = {}
    for result in results:
        image_id = int(result["image_id"])
        if image_id in wanted and result["score"] >= score_threshold:
            kept.setdefault(image_id, []).append(result)
    rank: dict[tuple[str, int], int] = {}
    written = []
    for case in cases:
        if case.image_id not in images:
            continue
        key = (case.kind, case.category_id)
        rank[key] = rank.get(key, 0) + 1
        picture = draw_case(case, images[case.image_id], ground_truth,
                            kept.get(case.image_id, []), names)
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="JPEG",
                                      quality=JPEG_QUALITY)
        name = (f"{case.kind}_{_safe(names.get(case.category_id, str(case.category_id)))}"
                f"_{rank[key]}_image{case.image_id}.jpg")
        atomic_write(os.path.join(staging, name), buffer.getvalue())
        written.append(os.path.join(folder, name))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return written


def draw_case(case: ErrorCase, image: np.ndarray, ground_truth: Any,
              detections: Sequence[Mapping[str, Any]],
              names: Mapping[int, str]) -> np.ndarray:
    """``image`` with its ground truth, ``detections`` (the image's, at or
    above the report's threshold) and the case's box highlighted."""
    truths = ground_truth.imgToAnns.get(case.image_id, [])
    zoom = max(1.0, MIN_SIDE / max(1, min(image.shape[:2])))
    if zoom > 1:
        height, width = image.shape[:2]
        image = np.asarray(Image.fromarray(image).resize(
            (round(width * zoom), round(height * zoom)), Image.BILINEAR))

    def _yxyx(bbox: Sequence[float]) -> tuple[float, ...]:
        xmin, ymin, xmax, ymax = coco_corners(bbox)
        return tuple(v * zoom for v in (ymin, xmin, ymax, xmax))

    width = max(1, round(min(image.shape[:2]) / 250))
    drawn = draw_detections(
        image, [_yxyx(a["bbox"]) for a in truths],
        [a["category_id"] for a in truths],
        label_map={k: f"true {v}" for k, v in names.items()},
        max_boxes=len(truths), line_width=width, color=TRUTH_COLOR)
    drawn = draw_detections(
        drawn, [_yxyx(r["bbox"]) for r in detections],
        [r["category_id"] for r in detections],
        [r["score"] for r in detections], label_map=names,
        max_boxes=len(detections), line_width=width, color=PREDICTION_COLOR)
    return draw_detections(drawn, [_yxyx(case.box_xywh)], [case.category_id],
                           label_map={case.category_id: case_caption(case,
                                                                     names)},
                           line_width=2 * width + 1, color=FOCUS_COLOR)


def case_caption(case: ErrorCase, names: Mapping[int, str]) -> str:
    """What went wrong, in a few words: ``missed circle``, ``false
    positive square 87%``, ``circle taken for square 62%``."""
    def name(category_id: int | None) -> str:
        return names.get(category_id, str(category_id))
    score = "" if case.score is None else f" {case.score:.0%}"
    if case.kind == "missed":
        return f"missed {name(case.category_id)}"
    if case.kind == "false_positive":
        return f"false positive {name(case.category_id)}{score}"
    return (f"{name(case.category_id)} taken for "
            f"{name(case.other_category_id)}{score}")


def _safe(text: str) -> str:
    """A class name as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "class"
