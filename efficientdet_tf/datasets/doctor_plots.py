"""The dataset doctor's plots: box sizes and aspect ratios at the network
input, and the boxes' shapes against the anchors'.

Histograms show what percentiles hide (two populations in one class, a spike
of one-pixel clicks); the scatter of width against height with every anchor
shape (level x octave scale x aspect ratio) drawn over it shows which boxes
fall between the anchors, and whether fitted anchors reach them.

matplotlib is optional (:mod:`efficientdet_tf.utils.plotting`).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from efficientdet_tf.config import Config
from efficientdet_tf.datasets.doctor import BUCKETS, DatasetReport
from efficientdet_tf.datasets.doctor_checks import MATCH_THRESHOLD
from efficientdet_tf.ops.anchors import aspect_ratio_pairs, level_anchors
from efficientdet_tf.utils.plotting import (PlotsUnavailable, require_matplotlib,
                                            write_png)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SKIPPED = ("plots skipped: matplotlib is not installed (pip install "
           "matplotlib, or pip install 'efficientdet_tf[plots]')")
SIZES_PLOT = "box_sizes.png"
ASPECTS_PLOT = "aspect_ratios.png"
SHAPES_PLOT = "box_shapes.png"
FIGURE_INCHES = (7.0, 4.5)
# Above this many classes a legend would cover the plot.
MAX_LEGEND = 12
BINS = 40


def write_plots(report: DatasetReport, output_dir: str,
                fitted: Config | None = None) -> list[str] | None:
    """Writes the three PNGs into ``output_dir`` (atomically) and returns
    their paths: none when the report has no measured box, None when
    matplotlib is missing. ``fitted``: a config with fitted anchors, drawn
    beside the report's own in the shapes plot."""
    try:
        new_figure = require_matplotlib()
    except PlotsUnavailable:
        return None
    px = report.boxes_px
    width, height = px[:, 3] - px[:, 1], px[:, 2] - px[:, 0]
    keep = (width > 0) & (height > 0)
    if not keep.any():
        return []
    width, height = width[keep], height[keep]
    classes = report.box_classes[keep]
    matched = report.best_iou[keep] >= MATCH_THRESHOLD
    groups = [(s.name or str(s.id), classes == s.id) for s in report.classes
              if np.any(classes == s.id)]
    figures = {
        SIZES_PLOT: _sizes(new_figure(FIGURE_INCHES), np.sqrt(width * height),
                           groups),
        ASPECTS_PLOT: _aspects(new_figure(FIGURE_INCHES), width / height, groups,
                               report.config),
        SHAPES_PLOT: _shapes(new_figure(FIGURE_INCHES), width, height, matched,
                             report.config, fitted),
    }
    return [write_png(figure, os.path.join(output_dir, name))
            for name, figure in figures.items()]


def _sizes(figure: Figure, sizes: np.ndarray,
           groups: list[tuple[str, np.ndarray]]) -> Figure:
    """Stacked histogram of sqrt(w * h) per class, log bins, with COCO's
    small / medium / large limits."""
    axes = figure.subplots()
    bins = np.geomspace(sizes.min() * 0.95, sizes.max() * 1.05, BINS)
    axes.hist([sizes[mask] for _, mask in groups], bins=bins, stacked=True,
              label=[name for name, _ in groups])
    for _, low, _ in BUCKETS[1:]:
        if bins[0] < np.sqrt(low) < bins[-1]:
            axes.axvline(np.sqrt(low), color="gray", linestyle="--",
                         linewidth=1)
    axes.set_xscale("log")
    axes.set_xlabel("sqrt(width x height), pixels at input scale (dashed: "
                    "COCO's small / medium / large limits)")
    axes.set_ylabel("boxes")
    _legend(axes, groups)
    figure.tight_layout()
    return figure


def _aspects(figure: Figure, aspects: np.ndarray,
             groups: list[tuple[str, np.ndarray]], config: Config) -> Figure:
    """Stacked histogram of log2(w / h) per class, with the anchors'
    aspect ratios."""
    axes = figure.subplots()
    logs = np.log2(aspects)
    bins = np.linspace(min(logs.min(), -1.0) - 0.1, max(logs.max(), 1.0) + 0.1,
                       BINS)
    axes.hist([logs[mask] for _, mask in groups], bins=bins, stacked=True,
              label=[name for name, _ in groups])
    for w_ratio, h_ratio in aspect_ratio_pairs(config.aspect_ratios):
        axes.axvline(np.log2(w_ratio / h_ratio), color="black",
                     linestyle="--", linewidth=1)
    axes.set_xlabel("log2(width / height) (dashed: the anchors' aspect "
                    "ratios)")
    axes.set_ylabel("boxes")
    _legend(axes, groups)
    figure.tight_layout()
    return figure


def _shapes(figure: Figure, width: np.ndarray, height: np.ndarray,
            matched: np.ndarray, config: Config,
            fitted: Config | None) -> Figure:
    """Width against height (log axes), boxes matched and not, under every
    anchor shape of the config (and of ``fitted``)."""
    axes = figure.subplots()
    axes.scatter(width[matched], height[matched], s=4, alpha=0.4,
                 color="tab:blue", label=f"box, best-anchor IoU >= "
                 f"{MATCH_THRESHOLD}")
    axes.scatter(width[~matched], height[~matched], s=6, alpha=0.6,
                 color="tab:red", label="box matching no anchor")
    for anchors_of, marker, color, label in (
            (config, "x", "black", "anchor shapes"),
            (fitted, "+", "tab:green", "fitted anchor shapes")):
        if anchors_of is not None:
            shapes = _anchor_shapes(anchors_of)
            axes.scatter(shapes[:, 0], shapes[:, 1], s=40, marker=marker,
                         color=color, label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("width, pixels at input scale")
    axes.set_ylabel("height, pixels at input scale")
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def _anchor_shapes(config: Config) -> np.ndarray:
    """``[levels * A, 2]`` (width, height) of every anchor shape: those of
    one location per level (every location of a level has the same)."""
    shapes = [level[0, 0] for level in level_anchors(config)]  # [A, 4] yxyx
    boxes = np.concatenate(shapes).astype(np.float64)
    return np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], -1)


def _legend(axes, groups: list[tuple[str, np.ndarray]]) -> None:
    if len(groups) <= MAX_LEGEND:
        axes.legend(fontsize="small")
