"""``<model_dir>/training_curves.png``: losses, learning rate and eval AP
against the step, redrawn after every evaluation.

The numbers are read back from the run's own TensorBoard event files
(``train/`` and ``eval/``), so the picture shows exactly what TensorBoard
shows, survives resumed runs (later values win), and needs no second log
that could disagree with the first.
"""
from __future__ import annotations

import os

from efficientdet_tf.utils.summaries import read_scalars

CURVES_FILE = "training_curves.png"
# Event-file tag -> the key plots.plot_training_curves reads.
TRAIN_TAGS = {"loss/loss": "loss", "loss/cls_loss": "cls_loss",
              "loss/box_loss": "box_loss", "learning_rate": "learning_rate"}
EVAL_TAGS = {"AP": "AP", "AP50": "AP50"}


def training_history(model_dir: str, train_dir: str = "train",
                     eval_dir: str = "eval") -> list[dict[str, float]]:
    """One row per (folder, step): ``{"step": s, key: value, ...}`` with the
    keys of ``TRAIN_TAGS`` / ``EVAL_TAGS``, in step order."""
    rows = []
    for folder, tags in ((train_dir, TRAIN_TAGS), (eval_dir, EVAL_TAGS)):
        by_step: dict[int, dict[str, float]] = {}
        for tag, points in read_scalars(os.path.join(model_dir, folder)).items():
            if tag in tags:
                for step, value in points.items():
                    by_step.setdefault(step, {"step": step})[tags[tag]] = value
        rows.extend(by_step.values())
    return sorted(rows, key=lambda row: row["step"])


def write_training_curves(model_dir: str) -> str:
    """Draws the history into ``model_dir``; returns the PNG's path. Raises
    :class:`~efficientdet_tf.evaluation.plots.PlotsUnavailable` without
    matplotlib."""
    from efficientdet_tf.evaluation.plots import plot_training_curves
    return plot_training_curves(training_history(model_dir),
                                os.path.join(model_dir, CURVES_FILE))
