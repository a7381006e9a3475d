"""Class-agnostic matching of detections to ground truth: the confusion
matrix and the error cases of an evaluation.

COCO matches each class on its own, so it never says that a detection was a
box of *another* class. These match each image once, class-agnostically
(:func:`match_image`), with COCO's IoU (pycocotools' ``maskUtils.iou``,
crowd regions included), and both the matrix and the error cases read that
one match. Conventions as in :mod:`efficientdet_tf.evaluation.analysis`.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

ERROR_KINDS = ("false_positive", "wrong_class", "missed")


class ImageMatch(NamedTuple):
    """One image's match: ``pairs`` of (truth index, detection index),
    the non-crowd truths ``missed``, the detections ``unmatched`` (those on
    a crowd region are in neither list)."""
    pairs: list[tuple[int, int]]
    missed: list[int]
    unmatched: list[int]


def match_image(truth_boxes: np.ndarray, truth_crowd: np.ndarray,
                detection_boxes: np.ndarray, iou_threshold: float
                ) -> ImageMatch:
    """Greedy class-agnostic matching of one image's boxes (COCO xywh).

    Pairs of a non-crowd truth and a detection with IoU >= ``iou_threshold``
    are taken highest IoU first, each box at most once; on equal IoU the
    earlier detection wins, so callers pass detections by descending score.
    A detection left over whose overlap with a crowd region (COCO's crowd
    IoU: intersection over the detection's area) reaches the threshold is
    dropped, as COCO ignores it: a crowd box only absorbs detections no
    single object claims.
    """
    crowd = np.asarray(truth_crowd, bool)
    regular, crowds = np.flatnonzero(~crowd), np.flatnonzero(crowd)
    ious = _box_iou(detection_boxes, truth_boxes[regular], crowd=False)
    detection_of, truth_of = np.nonzero(ious >= iou_threshold)
    order = np.argsort(-ious[detection_of, truth_of], kind="stable")
    pairs, used_truths, used_detections = [], set(), set()
    for d, g in zip(detection_of[order].tolist(),
                    regular[truth_of[order]].tolist()):
        if d not in used_detections and g not in used_truths:
            pairs.append((g, d))
            used_truths.add(g)
            used_detections.add(d)
    unmatched = [d for d in range(len(detection_boxes))
                 if d not in used_detections]
    if unmatched and crowds.size:
        overlap = _box_iou(detection_boxes[unmatched], truth_boxes[crowds],
                           crowd=True).max(axis=1)
        unmatched = [d for d, o in zip(unmatched, overlap)
                     if o < iou_threshold]
    missed = [g for g in regular.tolist() if g not in used_truths]
    return ImageMatch(pairs, missed, unmatched)


def _box_iou(detections: np.ndarray, truths: np.ndarray, crowd: bool
             ) -> np.ndarray:
    """``[D, G]`` COCO IoU of xywh boxes (``maskUtils.iou`` returns a bare
    list when either side is empty)."""
    if len(detections) == 0 or len(truths) == 0:
        return np.zeros((len(detections), len(truths)))
    return np.asarray(mask_utils.iou(np.asarray(detections, np.float64),
                                     np.asarray(truths, np.float64),
                                     [int(crowd)] * len(truths)))


class _MatchedImage(NamedTuple):
    image_id: int
    truths: list[dict]
    detections: list[dict]
    match: ImageMatch


def _matched_images(ground_truth: COCO, results: Sequence[Mapping[str, Any]],
                    image_ids: Iterable[int] | None,
                    category_ids: Sequence[int], iou_threshold: float,
                    score_threshold: float) -> Iterator[_MatchedImage]:
    """Each image's boxes of ``category_ids`` (detections scoring at least
    ``score_threshold``, by descending score) and their match. Boxes of
    other categories are left out, as COCO leaves out categories it does
    not evaluate."""
    wanted = set(category_ids)
    by_image = defaultdict(list)
    for result in results:
        if (result["category_id"] in wanted
                and result["score"] >= score_threshold):
            by_image[int(result["image_id"])].append(result)
    ids = ground_truth.getImgIds() if image_ids is None else image_ids
    for image_id in sorted({int(i) for i in ids}):
        truths = [a for a in ground_truth.imgToAnns[image_id]
                  if a["category_id"] in wanted]
        detections = sorted(by_image[image_id], key=lambda r: -r["score"])
        match = match_image(_boxes(truths),
                            np.array([bool(a.get("iscrowd", 0))
                                      for a in truths], bool),
                            _boxes(detections), iou_threshold)
        yield _MatchedImage(image_id, truths, detections, match)


def _boxes(items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.array([item["bbox"] for item in items],
                    np.float64).reshape(-1, 4)


def confusion_matrix(ground_truth: COCO, results: Sequence[Mapping[str, Any]],
                     image_ids: Iterable[int] | None,
                     category_ids: Sequence[int], *,
                     iou_threshold: float = 0.5,
                     score_threshold: float) -> np.ndarray:
    """int64 ``[K + 1, K + 1]`` counts: row = true class, column = predicted
    class, in the order of ``category_ids``; the last row and column are
    background (row: false positives, column: missed objects).

    Crowd boxes and detections on them count nowhere (see
    :func:`match_image`). ``image_ids`` None: every ground-truth image.
    """
    position = {c: i for i, c in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), np.int64)
    for image in _matched_images(ground_truth, results, image_ids,
                                 category_ids, iou_threshold, score_threshold):
        true = [position[a["category_id"]] for a in image.truths]
        predicted = [position[r["category_id"]] for r in image.detections]
        for g, d in image.match.pairs:
            matrix[true[g], predicted[d]] += 1
        for g in image.match.missed:
            matrix[true[g], background] += 1
        for d in image.match.unmatched:
            matrix[background, predicted[d]] += 1
    return matrix


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a true class's boxes that
    went to each prediction; for the background row, the share of false
    positives by predicted class); an empty row stays 0."""
    values = np.asarray(matrix, np.float64)
    sums = values.sum(axis=1, keepdims=True)
    return np.divide(values, sums, out=np.zeros_like(values), where=sums > 0)


class ErrorCase(NamedTuple):
    """One mistake to look at. ``category_id``: the predicted class of a
    false positive, the true class of a miss or a wrong class (whose
    predicted class is ``other_category_id``). ``box_xywh``: the
    detection's box, or the missed truth's; ``score`` None for a miss."""
    kind: str
    image_id: int
    category_id: int
    box_xywh: tuple[float, float, float, float]
    score: float | None
    other_category_id: int | None


def find_errors(ground_truth: COCO, results: Sequence[Mapping[str, Any]],
                image_ids: Iterable[int] | None, category_ids: Sequence[int],
                *, iou_threshold: float = 0.5, score_threshold: float,
                per_class: int = 3) -> list[ErrorCase]:
    """The worst ``per_class`` cases of each kind and class, matched as in
    :func:`confusion_matrix`: confident false positives and wrong classes
    (highest score first), and missed objects (largest first: a large
    object missed is the worse miss). Sorted by kind (``ERROR_KINDS``
    order), class (``category_ids`` order), rank, then image and box.
    """
    position = {c: i for i, c in enumerate(category_ids)}
    cases: list[tuple[tuple, ErrorCase]] = []

    def add(kind: str, image_id: int, category_id: int, item: Mapping,
            score: float | None, other: int | None = None) -> None:
        box = tuple(float(v) for v in item["bbox"])
        badness = -score if score is not None else -box[2] * box[3]
        key = (ERROR_KINDS.index(kind), position[category_id],
               badness, image_id, box)
        cases.append((key, ErrorCase(kind, image_id, category_id, box, score,
                                     other)))

    for image in _matched_images(ground_truth, results, image_ids,
                                 category_ids, iou_threshold, score_threshold):
        truths, detections = image.truths, image.detections
        for d in image.match.unmatched:
            add("false_positive", image.image_id,
                detections[d]["category_id"], detections[d],
                float(detections[d]["score"]))
        for g, d in image.match.pairs:
            true, predicted = (truths[g]["category_id"],
                               detections[d]["category_id"])
            if true != predicted:
                add("wrong_class", image.image_id, true, detections[d],
                    float(detections[d]["score"]), predicted)
        for g in image.match.missed:
            add("missed", image.image_id, truths[g]["category_id"],
                truths[g], None)
    kept, counts = [], Counter()
    for _, case in sorted(cases, key=lambda pair: pair[0]):
        counts[case.kind, case.category_id] += 1
        if counts[case.kind, case.category_id] <= per_class:
            kept.append(case)
    return kept
