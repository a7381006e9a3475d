"""``--fit_anchors``: anchors fitted to a report's boxes, measured as
training will use them.

:func:`~efficientdet_tf.ops.anchor_fit.fit_anchors` does the fitting. Here
its YAML snippet is applied to the config the way ``--hparams`` applies a
file (parsed YAML -> ``Config.override``), and the coverage is measured
again under that config, overall and per class: what is printed is what a
user gets by adding ``anchors.yaml`` to their hparams, not the fitter's own
account of it.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from efficientdet_tf.config import Config
from efficientdet_tf.datasets.doctor import DatasetReport
from efficientdet_tf.datasets.doctor_checks import MATCH_THRESHOLD, percent
from efficientdet_tf.ops.anchor_coverage import best_anchor_iou
from efficientdet_tf.utils.files import atomic_write

if TYPE_CHECKING:
    from efficientdet_tf.ops.anchor_fit import AnchorFit

ANCHORS_FILE = "anchors.yaml"


@dataclasses.dataclass(frozen=True)
class ClassCoverage:
    """One class's share of boxes matched, with the config's anchors and
    with the fitted ones."""
    id: int
    name: str
    before: float
    after: float


@dataclasses.dataclass(frozen=True)
class FittedAnchors:
    """The fit, the config it gives and the coverages under both."""
    fit: AnchorFit
    original: Config  # the report's
    config: Config  # the report's with the fitted anchors
    before: float
    after: float
    per_class: list[ClassCoverage]

    def summary(self, anchors_path: str | None) -> str:
        """What changed, the snippet and how to use it."""
        lines = [f"anchor fit (--fit_anchors): {percent(self.before)} -> "
                 f"{percent(self.after)} of the boxes match an anchor"]
        lines += [f"  {c.id:>4} {c.name[:16]:<16} {percent(c.before):>8} -> "
                  f"{percent(c.after)}" for c in self.per_class]
        path = anchors_path or ANCHORS_FILE
        written = "" if anchors_path else " (give --output_dir to write it)"
        lines.append(f"  {path}{written}; train with it after your own "
                     f"hparams: --hparams=<your hparams.yaml>,{path}")
        lines += [f"    {line}" for line in self.fit.yaml().splitlines()]
        if self.fit.anchors_per_location_changed:
            lines.append(
                f"  note: anchors per location change from "
                f"{_per_location(self.original)} to "
                f"{_per_location(self.config)}: fine-tuning from "
                "an official checkpoint then re-initialises the heads' last "
                "layers (class and box outputs), which learn from scratch")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"overrides": self.fit.overrides(), "coverage_before":
                self.before, "coverage_after": self.after,
                "anchors_per_location_changed":
                    self.fit.anchors_per_location_changed,
                "classes": [dataclasses.asdict(c) for c in self.per_class]}


def fit_report_anchors(report: DatasetReport, num_ratios: int | None = None,
                       num_scales: int | None = None) -> FittedAnchors:
    """Fits anchors to the report's (non-crowd, input-scale) boxes;
    ``num_ratios`` / ``num_scales`` None keep the config's counts."""
    from efficientdet_tf.ops.anchor_fit import fit_anchors
    fit = fit_anchors(report.boxes_px, report.config,
                      match_threshold=MATCH_THRESHOLD, num_ratios=num_ratios,
                      num_scales=num_scales)
    fitted = report.config.override(yaml.safe_load(fit.yaml()))
    matched = best_anchor_iou(report.boxes_px, fitted).iou >= MATCH_THRESHOLD
    matched_before = report.best_iou >= MATCH_THRESHOLD
    per_class = []
    for stats in report.classes:
        mine = report.box_classes == stats.id
        if mine.any():
            per_class.append(ClassCoverage(
                stats.id, stats.name, float(np.mean(matched_before[mine])),
                float(np.mean(matched[mine]))))
    return FittedAnchors(fit, report.config, fitted, report.coverage,
                         float(np.mean(matched)), per_class)


def _per_location(config: Config) -> int:
    return config.num_scales * len(config.aspect_ratios)


def write_anchors(fitted: FittedAnchors, output_dir: str) -> str:
    """Writes ``output_dir/anchors.yaml`` atomically; returns its path."""
    path = os.path.join(output_dir, ANCHORS_FILE)
    atomic_write(path, fitted.fit.yaml())
    return path
