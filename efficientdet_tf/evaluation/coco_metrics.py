"""COCO box metrics as pure functions: detections and ground truth as COCO
dicts, and pycocotools' 12 numbers plus per-class AP under automl's names.

Conventions (those of automl's ``coco_metric.py``, so numbers and TensorBoard
tags compare with official runs):

* results are COCO detection dicts ``{"image_id", "category_id", "bbox":
  [x, y, w, h], "score"}`` in pixels of the *original* image, category id =
  the 1-based class id;
* metrics are ``AP, AP50, AP75, APs, APm, APl, ARmax1, ARmax10, ARmax100,
  ARs, ARm, ARl`` (``COCOeval.stats`` in that order) and ``AP_/<class
  name>``: the class's AP over IoU 0.50:0.95, all areas, 100 detections;
* ``-1`` means "nothing to measure" (no ground truth of that class or size
  range), exactly as pycocotools reports it.

Image ids: records carry ``image/source_id``; COCO JSON files carry integer
``id`` and ``file_name``. :class:`ImageIdResolver` maps one to the other (the
file name first, then the integer value, then the base name or stem), so
records of datasets whose ids are file names still score against their JSON.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from efficientdet_tf.utils.boxes import coco_bbox

_LOG = logging.getLogger(__name__)

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl")
METRIC_DESCRIPTIONS = {
    "AP": "AP @ IoU 0.50:0.95, all areas",
    "AP50": "AP @ IoU 0.50",
    "AP75": "AP @ IoU 0.75",
    "APs": "AP, small objects (< 32^2 px)",
    "APm": "AP, medium objects (32^2 .. 96^2 px)",
    "APl": "AP, large objects (> 96^2 px)",
    "ARmax1": "AR, 1 detection per image",
    "ARmax10": "AR, 10 detections per image",
    "ARmax100": "AR, 100 detections per image",
    "ARs": "AR, small objects",
    "ARm": "AR, medium objects",
    "ARl": "AR, large objects",
}
PER_CLASS_PREFIX = "AP_/"


class ImageTruth(NamedTuple):
    """One image's ground truth in original pixels (yxyx boxes ``[N, 4]``,
    1-based ``classes`` ``[N]``, 0/1 ``is_crowd`` ``[N]``)."""
    source_id: str
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    is_crowd: np.ndarray


def ground_truth_from_records(images: Iterable[ImageTruth], num_classes: int,
                              label_map: Mapping[int, str] | None = None
                              ) -> dict[str, list]:
    """A COCO instances dict (loads with :func:`coco_from_dict`) for eval
    without a ``val_json_file``, as automl builds it from the eval labels.

    Image ids are the source ids when every one is an integer, otherwise
    1..N; ``file_name`` is the source id either way, so
    :class:`ImageIdResolver` finds every image again. Categories are ids
    ``1..num_classes`` (plus any other id the boxes use) named from
    ``label_map``, so every class gets a per-class AP entry. ``area`` is the
    box's ``w * h``: records keep no segment area after the pipeline.
    """
    images = list(images)
    source_ids = [image.source_id for image in images]
    duplicates = sorted({s for s in source_ids if source_ids.count(s) > 1})
    if duplicates:
        raise ValueError(f"duplicate source ids in the records: "
                         f"{', '.join(duplicates[:5])}")
    numeric = [_as_int(s) for s in source_ids]
    if None in numeric or len(set(numeric)) != len(numeric):
        numeric = list(range(1, len(images) + 1))
    coco_images, annotations, used = [], [], set()
    for image_id, image in zip(numeric, images):
        coco_images.append({"id": image_id, "file_name": image.source_id,
                            "height": int(image.height),
                            "width": int(image.width)})
        for box, label, crowd in zip(np.asarray(image.boxes, np.float64),
                                     image.classes, image.is_crowd):
            ymin, xmin, ymax, xmax = (float(v) for v in box)
            bbox = coco_bbox(xmin, ymin, xmax, ymax)
            used.add(int(label))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": int(label), "bbox": bbox,
                "area": bbox[2] * bbox[3], "iscrowd": int(bool(crowd))})
    names = dict(label_map or {})
    categories = [{"id": i, "name": names.get(i, str(i))}
                  for i in sorted(set(range(1, num_classes + 1)) | used)]
    return {"images": coco_images, "annotations": annotations,
            "categories": categories}


def detections_to_coco(image_ids: Sequence[int], boxes: Sequence[Any],
                       scores: Sequence[Any], classes: Sequence[Any],
                       num_detections: Sequence[int] | None = None
                       ) -> list[dict[str, Any]]:
    """COCO results from per-image detections.

    ``boxes[i]``: yxyx ``[M, 4]`` in original pixels; ``scores[i]``,
    ``classes[i]`` (1-based ids): ``[M]``. Padded batch outputs (as
    :func:`~efficientdet_tf.ops.postprocess.postprocess` returns) are cut to
    ``num_detections[i]``; without it every row counts.
    """
    results = []
    for index, image_id in enumerate(image_ids):
        count = (len(scores[index]) if num_detections is None
                 else int(num_detections[index]))
        image_boxes = np.asarray(boxes[index], np.float64)[:count]
        for box, score, label in zip(image_boxes, scores[index][:count],
                                     classes[index][:count]):
            ymin, xmin, ymax, xmax = (float(v) for v in box)
            results.append({"image_id": int(image_id),
                            "category_id": int(label),
                            "bbox": coco_bbox(xmin, ymin, xmax, ymax),
                            "score": float(score)})
    return results


class ImageIdResolver:
    """Maps a record's ``source_id`` to the image id of a COCO dataset.

    Tried in order: an image whose ``file_name`` is the source id; the
    source id read as an integer id (automl's converters write the COCO id
    there); the source id as a file base name or stem (``0001`` for
    ``images/0001.jpg``). Names shared by several images are not used.
    """

    def __init__(self, dataset: Mapping[str, Any]):
        self._ids = {int(image["id"]) for image in dataset.get("images", [])}
        self._exact: dict[str, int | None] = {}
        self._loose: dict[str, int | None] = {}
        for image in dataset.get("images", []):
            name = str(image.get("file_name", ""))
            if not name:
                continue
            _add_unique(self._exact, name, int(image["id"]))
            base = os.path.basename(name)
            for key in {base, os.path.splitext(base)[0]}:
                _add_unique(self._loose, key, int(image["id"]))

    def __call__(self, source_id: str) -> int:
        if self._exact.get(source_id) is not None:
            return self._exact[source_id]
        number = _as_int(source_id)
        if number is not None and number in self._ids:
            return number
        if self._loose.get(source_id) is not None:
            return self._loose[source_id]
        raise ValueError(
            f"image source_id {source_id!r} is neither an image id nor a "
            f"file_name of the ground truth ({len(self._ids)} images); the "
            f"records and the val_json_file must come from the same "
            f"conversion (with regenerate_source_id the ids are hashes and "
            f"only ground truth from the records matches them)")


def _add_unique(index: dict[str, int | None], key: str, image_id: int) -> None:
    """Records ``key -> image_id``; a key seen for another image maps to
    None, so an ambiguous name never picks one image at random."""
    if key in index and index[key] != image_id:
        index[key] = None
    else:
        index[key] = image_id


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def coco_from_dict(dataset: Mapping[str, Any]) -> COCO:
    """A pycocotools ``COCO`` over an in-memory dict (its chatter logged)."""
    coco = COCO()
    coco.dataset = dict(dataset)
    with _logged_stdout(logging.DEBUG):
        coco.createIndex()
    return coco


def load_coco_json(path: str) -> COCO:
    """A pycocotools ``COCO`` from an instances JSON (its chatter logged)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"val_json_file not found: {path}")
    with _logged_stdout(logging.DEBUG):
        return COCO(path)


class CocoEvaluation(NamedTuple):
    """The metrics of :func:`coco_metrics`, with the accumulated evaluator
    they were read from and the class names (one per
    ``evaluator.params.catIds``), for callers that plot its arrays."""
    metrics: dict[str, float]
    evaluator: COCOeval
    names: list[str]


def coco_metrics(ground_truth: COCO | Mapping[str, Any],
                 results: Sequence[Mapping[str, Any]], *,
                 image_ids: Iterable[int] | None = None,
                 label_map: Mapping[int, str] | None = None
                 ) -> dict[str, float]:
    """pycocotools box evaluation of ``results`` against ``ground_truth``
    (:func:`coco_evaluation`'s metrics alone)."""
    return coco_evaluation(ground_truth, results, image_ids=image_ids,
                           label_map=label_map).metrics


def coco_evaluation(ground_truth: COCO | Mapping[str, Any],
                    results: Sequence[Mapping[str, Any]], *,
                    image_ids: Iterable[int] | None = None,
                    label_map: Mapping[int, str] | None = None
                    ) -> CocoEvaluation:
    """pycocotools box evaluation of ``results`` against ``ground_truth``.

    ``image_ids`` restricts the evaluation to the images that were run (a
    ``val_json_file`` may list more than ``max_images``); None evaluates all.
    Per-class names come from ``label_map``, else the ground truth's
    category names. No results at all is a valid answer (pycocotools'
    ``loadRes`` cannot load it, so an empty result set is built directly):
    every measurable metric is then 0. pycocotools' summary goes to this
    module's logger at INFO, its progress lines at DEBUG.
    """
    coco = (ground_truth if isinstance(ground_truth, COCO)
            else coco_from_dict(ground_truth))
    if not results:
        _LOG.warning("no detections at all: every metric that has ground "
                     "truth to measure is 0")
    evaluator = run_cocoeval(coco, results, image_ids)
    names = class_names(coco, evaluator.params.catIds, label_map)
    return CocoEvaluation(metrics_from(evaluator, names), evaluator, names)


def metrics_from(evaluator: COCOeval, names: Sequence[str]) -> dict[str, float]:
    """The metrics of :func:`coco_metrics` from an accumulated evaluator
    (``names``: one per ``evaluator.params.catIds``), for callers that also
    read the evaluator's arrays (:mod:`~efficientdet_tf.evaluation.analysis`)."""
    if not evaluator.evalImgs:  # no image or no category: nothing to measure
        _LOG.warning("no images or no categories to evaluate: metrics are -1")
        return {**dict.fromkeys(METRIC_NAMES, -1.0),
                **{PER_CLASS_PREFIX + n: -1.0 for n in names}}
    with _logged_stdout(logging.INFO):
        evaluator.summarize()
    metrics = {name: float(value)
               for name, value in zip(METRIC_NAMES, evaluator.stats)}
    # precision: [IoU thresholds, recall points, categories, areas, max
    # detections]; area 0 is "all", the last max-detections entry is 100.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    for index, name in enumerate(names):
        values = precision[:, :, index]
        values = values[values > -1]
        metrics[PER_CLASS_PREFIX + name] = (float(np.mean(values))
                                            if values.size else -1.0)
    return metrics


def run_cocoeval(ground_truth: COCO, results: Sequence[Mapping[str, Any]],
                 image_ids: Iterable[int] | None = None) -> COCOeval:
    """pycocotools' box evaluation, evaluated and accumulated.

    ``image_ids`` restricts it to the images that were run (None: every
    image of the ground truth). An empty ``results`` is valid (every class
    with ground truth then has precision 0). Results for images the ground
    truth lacks raise ``ValueError``: pycocotools would only assert.
    pycocotools' printing goes to this module's logger at DEBUG.
    """
    unknown = sorted({int(r["image_id"]) for r in results}
                     - set(ground_truth.getImgIds()))
    if unknown:
        raise ValueError(f"results for {len(unknown)} image ids that are not "
                         f"in the ground truth, e.g. {unknown[:5]}")
    evaluator = COCOeval(ground_truth, _load_results(ground_truth, results),
                         iouType="bbox")
    if image_ids is not None:
        evaluator.params.imgIds = sorted({int(i) for i in image_ids})
    with _logged_stdout(logging.DEBUG):
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _load_results(coco: COCO, results: Sequence[Mapping[str, Any]]) -> COCO:
    """``coco.loadRes`` on copies (it adds keys to the dicts it gets), or an
    empty result set, which ``loadRes`` fails on."""
    if results:
        with _logged_stdout(logging.DEBUG):
            return coco.loadRes([dict(r) for r in results])
    empty = COCO()
    empty.dataset = {"images": list(coco.dataset.get("images", [])),
                     "categories": list(coco.dataset.get("categories", [])),
                     "annotations": []}
    with _logged_stdout(logging.DEBUG):
        empty.createIndex()
    return empty


def class_names(coco: COCO, category_ids: Sequence[int],
                 label_map: Mapping[int, str] | None) -> list[str]:
    """One unique name per category: the label map's, else the ground
    truth's, else the id; a repeated name gets its id appended."""
    names: list[str] = []
    for category_id in category_ids:
        name = str((label_map or {}).get(category_id)
                   or coco.cats.get(category_id, {}).get("name")
                   or category_id)
        names.append(f"{name}_{category_id}" if name in names else name)
    return names


@contextlib.contextmanager
def _logged_stdout(level: int):
    """pycocotools prints; this sends each captured line to the logger, so
    a caller's log configuration decides what is shown."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                _LOG.log(level, "%s", line)


def format_metrics(metrics: Mapping[str, float], title: str = "") -> str:
    """A readable table of the metrics: the 12 COCO numbers with what each
    measures, then per-class AP; ``-1`` shows as "n/a"."""
    def value(v: float) -> str:
        return "   n/a" if v < 0 else f"{v:6.4f}"
    lines = [title] if title else []
    for name in METRIC_NAMES:
        if name in metrics:
            lines.append(f"  {name:<9} {value(metrics[name])}  "
                         f"{METRIC_DESCRIPTIONS[name]}")
    per_class = [(k[len(PER_CLASS_PREFIX):], v) for k, v in metrics.items()
                 if k.startswith(PER_CLASS_PREFIX)]
    if per_class:
        width = max(len(name) for name, _ in per_class)
        lines.append("  per-class AP (IoU 0.50:0.95):")
        lines.extend(f"    {name:<{width}} {value(v)}" for name, v in per_class)
    if any(v < 0 for v in metrics.values()):
        lines.append("  (n/a: no ground truth to measure)")
    return "\n".join(lines)
