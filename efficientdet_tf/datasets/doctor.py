"""The dataset doctor: what in a dataset will keep the model from learning
it, judged under the config it will be trained with.

Fine-tuning on custom data gives ~0 mAP for reasons no loss curve shows:
class ids the config does not have (ids are 1-based, 0 is the background,
an id above ``num_classes`` has no output channel), a ``label_map`` naming
other classes than the data, objects so small or elongated that no anchor
reaches the labeler's IoU threshold (such a box trains through at most the
one anchor the labeler forces onto it), images holding more objects than
``max_instances_per_image``. :func:`analyze` measures each of these at the
model's input scale (after the resize the pipeline does for this
``image_size``), and :class:`DatasetReport` says it as text, as JSON and as
a one-line verdict, which training prints before step 1.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from efficientdet_tf.config import Config
from efficientdet_tf.datasets.doctor_checks import (MATCH_THRESHOLD,
                                                    MAX_UNCOVERED, data_errors,
                                                    data_warnings, percent)
from efficientdet_tf.datasets.doctor_sources import BoxTable, read_records
from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.ops.anchor_coverage import (best_anchor_iou,
                                                 input_scale_boxes)
from efficientdet_tf.utils.files import atomic_write

# COCO's size ranges, by box area at the network input.
BUCKETS = (("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2),
           ("large", 96.0 ** 2, math.inf))
PERCENTILES = (5, 50, 95)
# Uncovered boxes printed (report.json lists all of them).
SHOWN_UNCOVERED = 10
REPORT_FILE = "report.json"
# Records the start-up verdict reads: it decodes them (image sizes), so a
# large set is judged by its first ones rather than delay step 1.
VERDICT_IMAGES = 2000


class DatasetError(EfficientDetError):
    """The data has errors that would make training learn the wrong thing
    (the report lists them); the CLI exits 1 so scripts can gate on it."""


@dataclasses.dataclass(frozen=True)
class ClassStats:
    """One class id found in the data. Sizes (``sqrt(w * h)``), widths and
    heights are network-input pixels and aspects ``w / h``, each the
    :data:`PERCENTILES`; ``matched`` of the ``measured`` (non-crowd) boxes
    reach :data:`MATCH_THRESHOLD` with their best anchor."""
    id: int
    name: str  # label_map's name, else the data's
    data_name: str  # the name most of its boxes carry in the source
    boxes: int
    images: int
    measured: int
    matched: int
    size: list[float]
    width: list[float]
    height: list[float]
    aspect: list[float]

    @property
    def coverage(self) -> float:
        return self.matched / self.measured if self.measured else 1.0


@dataclasses.dataclass(frozen=True)
class DatasetReport:
    """What :func:`analyze` found. The arrays (non-crowd boxes: yxyx pixels
    at input scale, class ids, best-anchor IoU) stay for the plots and for
    anchor fitting; JSON holds the numbers drawn from them."""
    source: str
    config: Config
    images: int
    objects: int
    crowd: int
    empty_images: int
    most_per_image: int
    over_limit: list[str]  # images with more than max_instances_per_image
    classes: list[ClassStats]
    buckets: dict[str, tuple[int, int]]  # name -> (boxes, matched)
    uncovered: list[dict[str, Any]]
    errors: list[str]
    warnings: list[str]
    advice: str  # what to do about the worst-covered class
    boxes_px: np.ndarray = dataclasses.field(repr=False)
    box_classes: np.ndarray = dataclasses.field(repr=False)
    best_iou: np.ndarray = dataclasses.field(repr=False)

    @property
    def coverage(self) -> float:
        """Share of non-crowd boxes some anchor matches (1 when none)."""
        return float(np.mean(self.best_iou >= MATCH_THRESHOLD)) if len(
            self.best_iou) else 1.0

    def worst_class(self) -> ClassStats | None:
        """The class with the lowest anchor coverage, None without boxes."""
        return _worst(self.classes)

    def verdict(self) -> str:
        """One line a person can act on: the first error, else the class
        anchors cover worst when too many of its boxes match none, else
        "ok" with the coverage."""
        if self.errors:
            return f"error: {self._first_error()}"
        worst = self.worst_class()
        if worst and 1 - worst.coverage > MAX_UNCOVERED:
            return (f"{percent(1 - worst.coverage)} of {worst.name!r} boxes "
                    f"match no anchor: {self.advice}")
        text = (f"ok: {self.objects} objects in {self.images} images, "
                f"{percent(self.coverage)} of the boxes match an anchor")
        if worst and worst.coverage < 1:
            text += f" (worst: {worst.name!r} {percent(worst.coverage)})"
        if self.warnings:
            count = len(self.warnings)
            text += f"; {count} warning{'s' if count > 1 else ''} above"
        return text

    def raise_for_errors(self) -> None:
        """Raises :class:`DatasetError` with the first error when the data
        has any, for a command's exit status."""
        if self.errors:
            raise DatasetError(self._first_error())

    def _first_error(self) -> str:
        more = len(self.errors) - 1
        return self.errors[0] + (f" (and {more} more errors)" if more else "")

    def summary(self) -> str:
        """The multi-line report the CLI prints."""
        c = self.config
        ratios = len(c.aspect_ratios)
        lines = [
            f"dataset: {self.source}",
            f"config: {c.name}, image_size {c.image_size[0]}x{c.image_size[1]}"
            f" (height x width), num_classes {c.num_classes}, anchors: levels "
            f"{c.min_level}-{c.max_level}, {c.num_scales} scales x {ratios} "
            f"aspect ratios, anchor_scale {c.anchor_scale}",
            f"images: {self.images} ({self.empty_images} without objects)",
            f"objects: {self.objects} ({self.crowd} crowd), per image: mean "
            f"{self.objects / self.images:.2f}, max {self.most_per_image}; "
            f"{len(self.over_limit)} images above max_instances_per_image="
            f"{c.max_instances_per_image}",
            "classes (sizes in pixels at input scale, aspect = width / "
            f"height; p{'/p'.join(map(str, PERCENTILES))}):",
            f"  {'id':>4} {'name':<16} {'boxes':>6} {'images':>6} "
            f"{'size':>15} {'aspect':>15} {'anchor match':>12}"]
        for s in self.classes:
            lines.append(
                f"  {s.id:>4} {s.name[:16]:<16} {s.boxes:>6} {s.images:>6} "
                f"{_triple(s.size, '.0f'):>15} {_triple(s.aspect, '.2f'):>15} "
                f"{percent(s.coverage) if s.measured else '-':>12}")
        measured = len(self.best_iou)
        lines.append(f"anchor coverage (best-anchor IoU >= {MATCH_THRESHOLD}): "
                     f"{int(np.sum(self.best_iou >= MATCH_THRESHOLD))} of "
                     f"{measured} non-crowd boxes ({percent(self.coverage)})")
        for name, low, high in BUCKETS:
            boxes, matched = self.buckets[name]
            area = (f"< {math.sqrt(high):.0f}^2" if low == 0 else
                    f">= {math.sqrt(low):.0f}^2" if high == math.inf else
                    f"{math.sqrt(low):.0f}^2 to {math.sqrt(high):.0f}^2")
            share = f", {percent(matched / boxes)} matched" if boxes else ""
            lines.append(f"  {name} (area {area}): {boxes} boxes{share}")
        if self.uncovered:
            shown = (f", the first {SHOWN_UNCOVERED}" if len(self.uncovered)
                     > SHOWN_UNCOVERED else "")
            lines.append(f"boxes matching no anchor ({len(self.uncovered)}"
                         f"{shown}):")
            lines += [f"  {u['file']}: {u['name']!r} {u['width']:.0f}x"
                      f"{u['height']:.0f} px, best IoU {u['best_iou']:.2f}"
                      for u in self.uncovered[:SHOWN_UNCOVERED]]
        for title, items in (("errors", self.errors),
                             ("warnings", self.warnings)):
            if items:
                lines.append(f"{title}:")
                lines += [f"  {item}" for item in items]
        return "\n".join(lines)

    def to_json(self, anchor_fit: dict[str, Any] | None = None
                ) -> dict[str, Any]:
        """Everything in :meth:`summary`, with every uncovered box."""
        c = self.config
        data = {
            "source": self.source,
            "config": {key: c[key] for key in (
                "name", "image_size", "num_classes", "label_map",
                "max_instances_per_image", "min_level", "max_level",
                "num_scales", "aspect_ratios", "anchor_scale")},
            "match_threshold": MATCH_THRESHOLD,
            "images": self.images, "objects": self.objects,
            "crowd": self.crowd, "empty_images": self.empty_images,
            "max_objects_per_image": self.most_per_image,
            "over_max_instances": self.over_limit,
            "classes": [{**dataclasses.asdict(s), "coverage": s.coverage}
                        for s in self.classes],
            "coverage": {"overall": self.coverage, "buckets": {
                name: {"boxes": boxes, "matched": matched}
                for name, (boxes, matched) in self.buckets.items()}},
            "uncovered": self.uncovered,
            "errors": self.errors, "warnings": self.warnings,
            "verdict": self.verdict(),
        }
        if anchor_fit is not None:
            data["anchor_fit"] = anchor_fit
        return data


def analyze(table: BoxTable, config: Config) -> DatasetReport:
    """Counts, class checks, sizes and anchor coverage of ``table`` under
    ``config``. Crowd boxes are counted but not measured: training drops
    them (``skip_crowd_during_training``) or ignores their anchors."""
    per_image = np.bincount(table.image, minlength=len(table.where))
    limit = config.max_instances_per_image
    over = [table.where[i] for i in np.flatnonzero(per_image > limit)]
    measured = ~table.crowd
    boxes_px = input_scale_boxes(table.boxes[measured],
                                 table.sizes[table.image[measured]],
                                 config.image_size)
    best = best_anchor_iou(boxes_px, config).iou
    class_ids = table.classes[measured]
    data_names = _data_names(table)
    classes = [_class_stats(table, config, class_id, data_names[class_id],
                            boxes_px[class_ids == class_id],
                            best[class_ids == class_id])
               for class_id in sorted(data_names)]
    areas = _extent(boxes_px, 3, 1) * _extent(boxes_px, 2, 0)
    buckets = {}
    for name, low, high in BUCKETS:
        inside = (areas >= low) & (areas < high)
        buckets[name] = (int(inside.sum()),
                         int(np.sum(best[inside] >= MATCH_THRESHOLD)))
    names = {s.id: s.name for s in classes}
    images = table.image[measured]
    uncovered = [_uncovered(table.where[images[i]], int(class_ids[i]),
                            names[int(class_ids[i])], boxes_px[i], best[i])
                 for i in np.flatnonzero(best < MATCH_THRESHOLD)]
    worst = _worst(classes)
    advice = "" if worst is None else _advice(table, config, worst, measured)
    return DatasetReport(
        source=table.source, config=config, images=len(table.where),
        objects=len(table.classes), crowd=int(table.crowd.sum()),
        empty_images=int(np.sum(per_image == 0)),
        most_per_image=int(per_image.max()), over_limit=over,
        classes=classes, buckets=buckets, uncovered=uncovered,
        errors=table.errors + data_errors(table, config, classes),
        warnings=table.notes + data_warnings(table, config, classes, over,
                                             per_image),
        advice=advice, boxes_px=boxes_px, box_classes=class_ids,
        best_iou=best)


def diagnose_records(file_pattern: str, config: Config,
                     max_images: int | None = None) -> DatasetReport:
    """The report on training records (``max_images`` of them when given),
    for a run to print its :meth:`DatasetReport.verdict` before step 1."""
    return analyze(read_records(file_pattern, max_images), config)


def training_verdict(file_pattern: str, config: Config) -> str:
    """The line training prints before step 1: the doctor's verdict on the
    first :data:`VERDICT_IMAGES` training records under the run's config,
    so a dataset its anchors cannot learn shows before hours of training."""
    report = diagnose_records(file_pattern, config, VERDICT_IMAGES)
    first = "first " if report.images >= VERDICT_IMAGES else ""
    return (f"dataset doctor ({first}{report.images} training images): "
            f"{report.verdict()}")


def write_report(report: DatasetReport, output_dir: str,
                 anchor_fit: dict[str, Any] | None = None) -> str:
    """Writes ``output_dir/report.json`` atomically; returns its path."""
    path = os.path.join(output_dir, REPORT_FILE)
    atomic_write(path, json.dumps(report.to_json(anchor_fit), indent=1,
                                  default=_plain) + "\n")
    return path


def _extent(boxes: np.ndarray, high: int, low: int) -> np.ndarray:
    return boxes[:, high] - boxes[:, low]


def _data_names(table: BoxTable) -> dict[int, str]:
    """Each class id in the data -> the name most of its boxes carry in the
    source ("" when none carries one)."""
    counts = collections.Counter(zip(table.classes.tolist(), table.texts))
    names: dict[int, str] = {}
    for (class_id, text), _ in counts.most_common():
        if text and not names.get(class_id):
            names[class_id] = text
        names.setdefault(class_id, "")
    return names


def _class_stats(table: BoxTable, config: Config, class_id: int,
                 data_name: str, boxes_px: np.ndarray,
                 best: np.ndarray) -> ClassStats:
    """One class's stats; ``boxes_px`` and ``best`` are its measured boxes
    and their best-anchor IoU."""
    mine = table.classes == class_id
    width, height = _extent(boxes_px, 3, 1), _extent(boxes_px, 2, 0)
    return ClassStats(
        id=class_id, name=(config.label_map or {}).get(class_id, data_name),
        data_name=data_name, boxes=int(mine.sum()),
        images=len(np.unique(table.image[mine])), measured=len(boxes_px),
        matched=int(np.sum(best >= MATCH_THRESHOLD)),
        size=_percentiles(np.sqrt(width * height)), width=_percentiles(width),
        height=_percentiles(height),
        aspect=_percentiles(np.divide(width, height, out=np.zeros_like(width),
                                      where=height > 0)))


def _percentiles(values: np.ndarray) -> list[float]:
    if not len(values):
        return []
    return [round(float(v), 3) for v in np.percentile(values, PERCENTILES)]


def _uncovered(where: str, class_id: int, name: str, box: np.ndarray,
               iou: float) -> dict[str, Any]:
    return {"file": where, "class": class_id, "name": name,
            "box": [round(float(v), 1) for v in box],
            "width": round(float(box[3] - box[1]), 1),
            "height": round(float(box[2] - box[0]), 1),
            "best_iou": round(float(iou), 3)}


def _worst(classes: list[ClassStats]) -> ClassStats | None:
    """The class with the lowest anchor coverage (of two, the larger)."""
    return min((s for s in classes if s.measured),
               key=lambda s: (s.coverage, -s.measured), default=None)


def _advice(table: BoxTable, config: Config, worst: ClassStats,
            measured: np.ndarray) -> str:
    """What to do about the worst-covered class: fit the anchors; add a
    level-2 pyramid when most of its boxes are narrower than the finest
    level's stride (a box sits up to half a stride from the nearest anchor
    centre, which a thin box cannot overlap by half, whatever the anchor's
    shape); use the next larger image size when that at least halves the
    share of its boxes matching no anchor (boxes too small for the smallest
    anchors)."""
    advice = "run analyze_dataset.py --fit_anchors"
    mine = measured & (table.classes == worst.id)
    boxes = input_scale_boxes(table.boxes[mine], table.sizes[table.image[mine]],
                              config.image_size)
    short = np.minimum(_extent(boxes, 3, 1), _extent(boxes, 2, 0))
    stride = 2 ** config.min_level
    if config.min_level > 2 and len(short) and np.median(short) < stride:
        advice += (f" with min_level: 2 (most boxes are narrower than the "
                   f"level-{config.min_level} stride, {stride} px)")
    top = 2 ** config.max_level
    larger = [int(math.ceil(1.5 * side / top)) * top
              for side in config.image_size]
    boxes = input_scale_boxes(table.boxes[mine], table.sizes[table.image[mine]],
                              larger)
    there = np.mean(best_anchor_iou(
        boxes, config.override({"image_size": larger})).iou >= MATCH_THRESHOLD)
    if 1 - there <= (1 - worst.coverage) / 2:
        size = (str(larger[0]) if larger[0] == larger[1]
                else f"{larger[1]}x{larger[0]}")  # automl's WIDTHxHEIGHT
        advice += f" or use image_size {size} ({percent(there)} match there)"
    return advice


def _triple(values: list[float], spec: str) -> str:
    return "/".join(format(v, spec) for v in values) if values else "-"


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and tuples the config holds."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
