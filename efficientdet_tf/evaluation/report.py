"""What an evaluation writes beside its metrics, to show where the model
fails: curves, a confusion matrix, per-class tables and an error gallery.

Files in the evaluation's output folder (``<model_dir>/eval/`` in training):

============================  ================================================
``per_class.md`` / ``.csv``   AP, AP50, AP75, AP by size, box and detection
                              counts, best F1 and its score threshold, per class
``pr_curves.png``             precision-recall per class, IoU 0.5 and 0.5:0.95
``f1_vs_threshold.png``       F1 against the score threshold, per class and all
``confusion_matrix.png``      classes + background at IoU 0.5 and the score
``confusion_matrix.csv``      threshold that maximises F1 over all classes
``errors/``                   the worst false positives, wrong classes and
                              missed objects, a few per class, drawn
============================  ================================================

The curves and the table come from the same pycocotools evaluator as the
metrics (:mod:`~efficientdet_tf.evaluation.analysis`), so they agree with
the printed AP by construction. The PNGs need matplotlib (the ``plots``
extra); without it the tables and the gallery are still written and the
report says what to install.
"""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from efficientdet_tf.evaluation import analysis, matching
from efficientdet_tf.evaluation.gallery import write_gallery
from efficientdet_tf.utils.files import atomic_write
from efficientdet_tf.utils.plotting import PlotsUnavailable

PER_CLASS_MARKDOWN = "per_class.md"
PER_CLASS_CSV = "per_class.csv"
CONFUSION_CSV = "confusion_matrix.csv"
PR_CURVES_PNG = "pr_curves.png"
F1_PNG = "f1_vs_threshold.png"
CONFUSION_PNG = "confusion_matrix.png"
# The confusion matrix's threshold when F1 is undefined (no detection or no
# ground truth at all): the usual display threshold.
FALLBACK_THRESHOLD = 0.5
ERRORS_PER_CLASS = 3

# COCO image ids -> their uint8 images (those it can find).
ImageReader = Callable[[set[int]], Mapping[int, np.ndarray]]


class Report(NamedTuple):
    """What :func:`write_report` wrote. ``score_threshold``: the pooled
    best-F1 threshold the matrix and gallery use (``best_f1`` there, NaN
    when undefined); ``plots``: PNG paths, for TensorBoard; ``note``: why
    plots are missing, or None."""
    score_threshold: float
    best_f1: float
    plots: list[str]
    gallery: list[str]
    note: str | None

    def summary(self, output_dir: str) -> str:
        """One line for the console."""
        best = ("no F1 (nothing detected or nothing to detect)"
                if math.isnan(self.best_f1) else
                f"best F1 {self.best_f1:.3f} at score >= "
                f"{self.score_threshold:.3f} (all classes)")
        line = (f"{best}; curves, confusion matrix, per-class table and "
                f"{len(self.gallery)} error image"
                f"{'' if len(self.gallery) == 1 else 's'} in {output_dir}")
        return line + (f" ({self.note})" if self.note else "")


def write_report(output_dir: str, evaluator: COCOeval, ground_truth: COCO,
                 results: Sequence[Mapping[str, Any]], names: Sequence[str],
                 read_images: ImageReader | None = None) -> Report:
    """Writes the module docstring's files for an accumulated ``evaluator``
    (``names``: one per ``evaluator.params.catIds``; ``results``: the COCO
    detections it scored). ``read_images`` supplies the gallery's images;
    None skips the gallery."""
    from efficientdet_tf.evaluation import plots

    category_ids = [int(c) for c in evaluator.params.catIds]
    image_ids = [int(i) for i in evaluator.params.imgIds]
    f1 = analysis.f1_curves(evaluator, names)
    best_f1 = float(f1.overall_best_f1)
    threshold = (FALLBACK_THRESHOLD if math.isnan(f1.overall_best_threshold)
                 else float(f1.overall_best_threshold))
    rows = analysis.per_class_table(evaluator, names, f1)
    atomic_write(os.path.join(output_dir, PER_CLASS_MARKDOWN),
                 analysis.table_markdown(rows))
    atomic_write(os.path.join(output_dir, PER_CLASS_CSV),
                 analysis.table_csv(rows))
    matrix = matching.confusion_matrix(ground_truth, results, image_ids,
                                       category_ids, score_threshold=threshold)
    atomic_write(os.path.join(output_dir, CONFUSION_CSV),
                 confusion_csv(matrix, names))

    written, note = [], None
    try:
        written.append(plots.plot_pr_curves(
            analysis.pr_curves(evaluator, names),
            os.path.join(output_dir, PR_CURVES_PNG)))
        written.append(plots.plot_f1_curves(f1, os.path.join(output_dir,
                                                             F1_PNG)))
        written.append(plots.plot_confusion_matrix(
            matrix, names, threshold, os.path.join(output_dir, CONFUSION_PNG)))
    except PlotsUnavailable as err:
        note = f"no plots: {err}"

    gallery: list[str] = []
    if read_images is not None:
        cases = matching.find_errors(ground_truth, results, image_ids,
                                     category_ids, score_threshold=threshold,
                                     per_class=ERRORS_PER_CLASS)
        images = read_images({case.image_id for case in cases})
        gallery = write_gallery(output_dir, cases, ground_truth, results,
                                images, threshold,
                                dict(zip(category_ids, names)))
    return Report(threshold, best_f1, written, gallery, note)


def confusion_csv(matrix: np.ndarray, names: Sequence[str]) -> str:
    """The raw counts with a header row and a first column of labels:
    rows true, columns predicted, ``background`` last in both."""
    labels = [*names, "background"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *labels])
    for label, counts in zip(labels, np.asarray(matrix)):
        writer.writerow([label, *(int(c) for c in counts)])
    return buffer.getvalue()
