"""Where a detector fails: curves, a confusion matrix, error cases and a
per-class table, from the same COCO evaluation that gives the metrics.

The precision-recall curves and the table are read from pycocotools' own
``eval["precision"]`` array, and the F1 curves from its per-image matches
(``evalImgs``), so a plot and the AP reported beside it agree by
construction rather than by a second implementation of COCO's rules.

The confusion matrix and the error cases, which need a detection matched
to a box of *another* class, are in :mod:`efficientdet_tf.evaluation.
matching`.

Conventions: results are COCO detection dicts in original-image pixels (as
in :mod:`~efficientdet_tf.evaluation.coco_metrics`); class ``k`` is the
``k``-th of ``evaluator.params.catIds`` (sorted category ids); NaN marks
"nothing to measure" where pycocotools writes ``-1``. NumPy and pycocotools
only, so analysing a saved ``detections.json`` needs no TensorFlow.
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval


TABLE_COLUMNS = ("class", "category_id", "AP", "AP50", "AP75", "APs", "APm",
                 "APl", "gt_boxes", "detections", "best_f1", "f1_threshold")
# Table column -> (IoU threshold or None for the mean over 0.50:0.95, area).
_TABLE_AP = {"AP": (None, "all"), "AP50": (0.5, "all"), "AP75": (0.75, "all"),
             "APs": (None, "small"), "APm": (None, "medium"),
             "APl": (None, "large")}


# --- precision-recall and F1 curves ----------------------------------------

class PrCurves(NamedTuple):
    """Interpolated precision at COCO's recall points, per class (area
    "all", the last ``maxDets``): the curves whose means are the APs.

    ``recall`` ``[R]`` (101 points); ``precision_50`` and ``precision_mean``
    (the mean over IoU 0.50:0.95) ``[K, R]``; ``ap_50``, ``ap`` ``[K]``.
    A class without ground truth has NaN curves and APs.
    """
    recall: np.ndarray
    precision_50: np.ndarray
    precision_mean: np.ndarray
    ap_50: np.ndarray
    ap: np.ndarray
    names: tuple[str, ...]
    category_ids: tuple[int, ...]


def pr_curves(evaluator: COCOeval, names: Sequence[str]) -> PrCurves:
    """The curves of an accumulated ``evaluator``; ``names[k]`` names class
    ``k``. ``ap`` is computed as ``coco_metrics`` computes ``AP_/<name>``."""
    precision = _precision(evaluator, names)  # [T, R, K, A]
    params = evaluator.params
    everything = params.areaRngLbl.index("all")
    at_50 = _iou_index(evaluator, 0.5)
    valid = np.where(precision > -1, precision, np.nan)[:, :, :, everything]
    return PrCurves(
        recall=np.asarray(params.recThrs, np.float64),
        precision_50=valid[at_50].T,
        precision_mean=valid.mean(axis=0).T,
        ap_50=np.array([_mean_valid(precision[at_50, :, k, everything])
                        for k in range(len(names))]),
        ap=np.array([_mean_valid(precision[:, :, k, everything])
                     for k in range(len(names))]),
        names=tuple(names), category_ids=tuple(params.catIds))


class F1Curve(NamedTuple):
    """Precision, recall and F1 of keeping the detections scoring at least
    ``thresholds[i]`` (each distinct score once, highest first).

    ``best_threshold`` is the highest threshold reaching ``best_f1``. With
    no ground truth F1 is undefined: empty curve, NaN best threshold and
    F1. With ground truth but no detection: empty curve, NaN threshold,
    best F1 0.
    """
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    best_threshold: float
    best_f1: float


class F1Curves(NamedTuple):
    """One :class:`F1Curve` per class and ``overall``: every class's
    detections and ground truth pooled (a micro-average), which picks one
    score threshold for a whole deployment."""
    classes: tuple[F1Curve, ...]
    overall: F1Curve
    names: tuple[str, ...]
    category_ids: tuple[int, ...]

    @property
    def best_threshold(self) -> np.ndarray:
        return np.array([curve.best_threshold for curve in self.classes])

    @property
    def best_f1(self) -> np.ndarray:
        return np.array([curve.best_f1 for curve in self.classes])

    @property
    def overall_best_threshold(self) -> float:
        return self.overall.best_threshold

    @property
    def overall_best_f1(self) -> float:
        return self.overall.best_f1


def f1_curves(evaluator: COCOeval, names: Sequence[str]) -> F1Curves:
    """Exact F1 curves at IoU 0.5, area "all", the last ``maxDets``.

    Read from ``evaluator.evalImgs`` as ``accumulate`` reads them: the same
    detections (each image's best ``maxDets``), matches and ignore flags
    (detections on crowd regions or outside the area range do not count,
    nor do crowd boxes as positives), and the same stable score order; but
    evaluated at every score instead of interpolated at recall points.
    """
    _precision(evaluator, names)  # checks that the evaluator accumulated
    per_class = [_class_detections(evaluator, k) for k in range(len(names))]
    pooled_scores = np.concatenate([d[0] for d in per_class])
    order = np.argsort(-pooled_scores, kind="mergesort")
    overall = _f1_curve(pooled_scores[order],
                        np.concatenate([d[1] for d in per_class])[order],
                        sum(d[2] for d in per_class))
    return F1Curves(classes=tuple(_f1_curve(*d) for d in per_class),
                    overall=overall, names=tuple(names),
                    category_ids=tuple(evaluator.params.catIds))


def _class_detections(evaluator: COCOeval, k: int
                      ) -> tuple[np.ndarray, np.ndarray, int]:
    """Class ``k``'s counted detections at IoU 0.5, area "all": scores in
    descending order, whether each is a true positive, and the number of
    positives (ground truth not ignored)."""
    params = evaluator.params
    images, areas = len(params.imgIds), len(params.areaRng)
    # evalImgs is ordered category, then area range, then image.
    start = (k * areas + params.areaRngLbl.index("all")) * images
    entries = [e for e in evaluator.evalImgs[start:start + images]
               if e is not None]
    if not entries:
        return np.zeros(0), np.zeros(0, bool), 0
    at_50, most = _iou_index(evaluator, 0.5), params.maxDets[-1]
    scores = np.concatenate([np.asarray(e["dtScores"][:most], np.float64)
                             for e in entries])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e["dtMatches"][at_50, :most]
                              for e in entries])[order] > 0
    ignored = np.concatenate([e["dtIgnore"][at_50, :most]
                              for e in entries])[order].astype(bool)
    positives = sum(int(np.count_nonzero(e["gtIgnore"] == 0))
                    for e in entries)
    return scores[order][~ignored], matched[~ignored], positives


def _f1_curve(scores: np.ndarray, true_positive: np.ndarray,
              positives: int) -> F1Curve:
    """The curve of detections sorted by descending score."""
    empty = np.zeros(0)
    if positives == 0 or scores.size == 0:
        return F1Curve(empty, empty, empty, empty, float("nan"),
                       float("nan") if positives == 0 else 0.0)
    # A threshold keeps every detection tied with it: evaluate at the last
    # detection of each run of equal scores.
    last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    hits = np.cumsum(true_positive)[last].astype(np.float64)
    precision = hits / (last + 1)
    recall = hits / positives
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total),
                   where=total > 0)
    best = int(np.argmax(f1))
    return F1Curve(scores[last], precision, recall, f1, float(scores[last][best]),
                   float(f1[best]))


# --- per-class table --------------------------------------------------------

def per_class_table(evaluator: COCOeval, names: Sequence[str],
                    f1: F1Curves | None = None) -> list[dict[str, Any]]:
    """One row per class (keys ``TABLE_COLUMNS``): its APs from the
    evaluator's precision array (NaN: nothing to measure), its non-crowd
    ground-truth boxes and its detections in the evaluated images, and
    from ``f1`` (NaN without) its best F1 at IoU 0.5 and the score
    threshold reaching it (a per-class ``--min_score_thresh``)."""
    precision = _precision(evaluator, names)
    params = evaluator.params
    truths, detections = Counter(), Counter()
    for image_id in params.imgIds:
        truths.update(a["category_id"]
                      for a in evaluator.cocoGt.imgToAnns[image_id]
                      if not a.get("iscrowd", 0))
        detections.update(a["category_id"]
                          for a in evaluator.cocoDt.imgToAnns[image_id])
    rows = []
    for k, (name, category_id) in enumerate(zip(names, params.catIds)):
        row: dict[str, Any] = {"class": name, "category_id": int(category_id)}
        for column, (iou, area) in _TABLE_AP.items():
            values = precision[:, :, k, params.areaRngLbl.index(area)]
            if iou is not None:
                values = values[_iou_index(evaluator, iou)]
            row[column] = _mean_valid(values)
        row["gt_boxes"] = truths[category_id]
        row["detections"] = detections[category_id]
        row["best_f1"] = float("nan") if f1 is None else float(f1.best_f1[k])
        row["f1_threshold"] = (float("nan") if f1 is None
                               else float(f1.best_threshold[k]))
        rows.append(row)
    return rows


def table_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of :func:`per_class_table` rows; NaN shows "n/a"."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "n/a" if np.isnan(value) else f"{value:.4f}"
        return str(value).replace("|", "\\|")
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(TABLE_COLUMNS) - 1))
             + "|"]
    lines += ["| " + " | ".join(cell(row[c]) for c in TABLE_COLUMNS) + " |"
              for row in rows]
    return "\n".join(lines) + "\n"


def table_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV of :func:`per_class_table` rows; NaN is an empty field."""
    def cell(value: Any) -> Any:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.6f}"
        return value
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    writer.writerows([cell(row[c]) for c in TABLE_COLUMNS] for row in rows)
    return buffer.getvalue()


# --- reading the evaluator --------------------------------------------------

def _precision(evaluator: COCOeval, names: Sequence[str]) -> np.ndarray:
    """``eval["precision"]`` at the last ``maxDets``: ``[T, R, K, A]``."""
    if not getattr(evaluator, "eval", None):
        raise ValueError("the evaluator has not accumulated: use "
                         "coco_metrics.run_cocoeval, or call evaluate() and accumulate()")
    precision = evaluator.eval["precision"][..., -1]
    if len(names) != precision.shape[2]:
        raise ValueError(f"{len(names)} class names for "
                         f"{precision.shape[2]} evaluated categories")
    return precision


def _iou_index(evaluator: COCOeval, iou: float) -> int:
    found = np.flatnonzero(np.isclose(evaluator.params.iouThrs, iou))
    if not found.size:
        raise ValueError(f"IoU {iou} is not among the evaluated thresholds "
                         f"{list(evaluator.params.iouThrs)}")
    return int(found[0])


def _mean_valid(values: np.ndarray) -> float:
    """The mean of the entries pycocotools filled (not -1), NaN if none."""
    values = values[values > -1]
    return float(np.mean(values)) if values.size else float("nan")
