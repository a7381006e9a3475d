"""PNG plots of an evaluation (precision-recall, F1 against the score
threshold, the confusion matrix) and of a run's training curves.

matplotlib is optional (:mod:`efficientdet_tf.utils.plotting`): each plot
function raises :class:`~efficientdet_tf.utils.plotting.PlotsUnavailable`
without it, which a caller reports in one line. The plot functions write
their PNG atomically and return its path.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from efficientdet_tf.evaluation.analysis import F1Curve, F1Curves, PrCurves
from efficientdet_tf.evaluation.matching import normalise_rows
from efficientdet_tf.utils.plotting import require_matplotlib, write_png
from efficientdet_tf.utils.visualize import class_color

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# 16 inches at plotting.DPI: no side of an image above 1600 pixels.
MAX_INCHES = 16.0
# Above this many classes a legend would hide the curves: only the summary
# curve is labelled.
MAX_LEGEND = 20
# Above this many rows the confusion matrix has no numbers in its cells.
MAX_CELL_TEXT = 30
LOSS_KEYS = ("loss", "cls_loss", "box_loss")
AP_KEYS = ("AP", "AP50")


def plot_pr_curves(curves: PrCurves, path: str | os.PathLike) -> str:
    """Precision against recall per class at IoU 0.5 and averaged over IoU
    0.50:0.95, with the mean over classes (its area is the mAP) in black.
    Classes without ground truth have no curve."""
    figure = require_matplotlib()(figsize=(13, 5.5), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    for axes, precision, ap, title in (
            (panels[0], curves.precision_50, curves.ap_50, "IoU 0.50"),
            (panels[1], curves.precision_mean, curves.ap,
             "mean over IoU 0.50:0.95")):
        labelled = len(curves.names) <= MAX_LEGEND
        for k, (name, category_id) in enumerate(zip(curves.names,
                                                    curves.category_ids)):
            if not np.isnan(ap[k]):
                axes.plot(curves.recall, precision[k], linewidth=1,
                          color=_color(category_id),
                          label=f"{name} (AP {ap[k]:.3f})" if labelled
                          else None)
        measured = ~np.isnan(ap)
        if measured.any():
            mean = precision[measured].mean(axis=0)
            axes.plot(curves.recall, mean, color="black", linewidth=2.5,
                      label=f"mean (AP {mean.mean():.3f})")
            axes.legend(fontsize="small", loc="lower left")
        _unit_axes(axes, "recall", "precision", title)
    return write_png(figure, path)


def plot_f1_curves(f1: F1Curves, path: str | os.PathLike) -> str:
    """F1 against the score threshold: per class and pooled over classes
    (thick, black), best points marked; beside it, the pooled precision,
    recall and F1, to read what the best threshold trades."""
    figure = require_matplotlib()(figsize=(13, 5.5), layout="constrained")
    per_class, pooled = figure.subplots(1, 2)
    labelled = len(f1.names) <= MAX_LEGEND
    for curve, name, category_id in zip(f1.classes, f1.names,
                                        f1.category_ids):
        _f1_line(per_class, curve, name if labelled else None,
                 _color(category_id), linewidth=1)
    _f1_line(per_class, f1.overall, "all classes", "black", linewidth=2.5)
    _unit_axes(per_class, "score threshold", "F1", "F1 per class (IoU 0.50)")
    overall = f1.overall
    if overall.thresholds.size:
        for values, label in ((overall.precision, "precision"),
                              (overall.recall, "recall"), (overall.f1, "F1")):
            pooled.plot(overall.thresholds[::-1], values[::-1], label=label,
                        drawstyle="steps-pre")
        pooled.axvline(overall.best_threshold, color="gray", linestyle="--",
                       label=f"best F1 at {overall.best_threshold:.3f}")
    for axes in (per_class, pooled):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small", loc="lower left")
    _unit_axes(pooled, "score threshold", "", "all classes pooled")
    return write_png(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str],
                          score_threshold: float, path: str | os.PathLike,
                          *, iou_threshold: float = 0.5) -> str:
    """The matrix of :func:`~efficientdet_tf.evaluation.matching.
    confusion_matrix` twice, coloured by row share: with the shares, and
    with the counts. Cells that are 0 stay blank."""
    matrix = np.asarray(matrix)
    labels = [*names, "background"]
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"a {matrix.shape} matrix for {len(names)} classes "
                         f"(expected {len(labels)} x {len(labels)})")
    side = min(MAX_INCHES / 2, max(4.5, 2.5 + 0.45 * len(labels)))
    figure = require_matplotlib()(figsize=(2 * side, side + 0.5),
                                  layout="constrained")
    shares = normalise_rows(matrix)
    font = max(4.0, min(9.0, 240 / len(labels)))
    for axes, texts, title in (
            (figure.add_subplot(1, 2, 1),
             [f"{v:.2f}" for v in shares.ravel()], "share of the true class"),
            (figure.add_subplot(1, 2, 2), [str(v) for v in matrix.ravel()],
             "count")):
        image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(labels))
        axes.set_xticks(ticks, labels, rotation=90, fontsize=font)
        axes.set_yticks(ticks, labels, fontsize=font)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        axes.set_title(title)
        if len(labels) <= MAX_CELL_TEXT:
            for (row, column), text in zip(np.ndindex(matrix.shape), texts):
                if matrix[row, column]:
                    axes.text(column, row, text, ha="center", va="center",
                              fontsize=font, color="white"
                              if shares[row, column] > 0.5 else "black")
    figure.colorbar(image, ax=figure.axes, shrink=0.8,
                    label="share of the true class")
    figure.suptitle(f"confusion matrix at IoU {iou_threshold:g}, score >= "
                    f"{score_threshold:g}\nbackground row: false positives; "
                    f"background column: missed")
    return write_png(figure, path)


def plot_training_curves(history: Sequence[Mapping[str, float]],
                         path: str | os.PathLike) -> str:
    """Losses, learning rate and AP against the step, from rows that each
    hold ``"step"`` and some of ``LOSS_KEYS``, ``"learning_rate"`` and
    ``AP_KEYS``. A panel without data is left out; with none at all, the
    image says so (a run plots before its first logged step, too)."""
    panels = []
    for title, keys, log in (("losses", LOSS_KEYS, True),
                             ("learning rate", ("learning_rate",), False),
                             ("COCO AP", AP_KEYS, False)):
        series = [(key, *_series(history, key)) for key in keys]
        series = [(key, steps, values) for key, steps, values in series
                  if steps.size]
        if series:
            panels.append((title, series, log))
    figure = require_matplotlib()(figsize=(5 * max(1, len(panels)), 4.5),
                                  layout="constrained")
    if not panels:
        figure.text(0.5, 0.5, "no training history to plot", ha="center")
        return write_png(figure, path)
    for axes, (title, series, log) in zip(
            figure.subplots(1, len(panels), squeeze=False)[0], panels):
        for key, steps, values in series:
            axes.plot(steps, values, label=key,
                      marker="o" if key in AP_KEYS else None, markersize=4)
        if log and all((values > 0).all() for _, _, values in series):
            axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return write_png(figure, path)


def _series(history: Sequence[Mapping[str, float]], key: str
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of the rows with a finite ``key``, by step."""
    points = sorted((float(row["step"]), float(row[key])) for row in history
                    if key in row and "step" in row
                    and math.isfinite(float(row[key])))
    steps = np.array([step for step, _ in points])
    return steps, np.array([value for _, value in points])


def _f1_line(axes: Axes, curve: F1Curve, name: str | None, color,
             linewidth: float) -> None:
    """One F1 curve as the step function it is, its best point marked."""
    if not curve.thresholds.size:
        return
    label = (None if name is None else f"{name} (F1 {curve.best_f1:.2f} at "
             f"{curve.best_threshold:.2f})")
    axes.plot(curve.thresholds[::-1], curve.f1[::-1], color=color,
              linewidth=linewidth, drawstyle="steps-pre", label=label)
    axes.plot([curve.best_threshold], [curve.best_f1], marker="o",
              color=color, markersize=3 + 2 * linewidth)


def _unit_axes(axes: Axes, xlabel: str, ylabel: str, title: str) -> None:
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)


def _color(category_id: int) -> tuple[float, float, float]:
    """The class's colour in drawn detections, so plots and images agree."""
    return tuple(channel / 255 for channel in class_color(category_id))
