"""What the dataset doctor calls an error and what a warning, and the
thresholds it judges by.

An error is data the config would train wrongly without a word: a class id
with no output channel (outside ``1..num_classes``) or missing from the
``label_map``, a label_map class without a name, no object at all. The CLI
exits 1 on any, so scripts can gate on it. A warning is legal data likely to
cost accuracy: classes with almost no examples, names that disagree with
the label_map, crowded images, boxes no anchor matches.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from efficientdet_tf.config import Config
from efficientdet_tf.datasets.doctor_sources import BoxTable, first_few

if TYPE_CHECKING:  # doctor imports this module
    from efficientdet_tf.datasets.doctor import ClassStats

# The anchor labeler's match_threshold (label_anchors' default): a box trains
# through the anchors whose IoU with it reaches this.
MATCH_THRESHOLD = 0.5
# Fewer boxes than this are too few to learn a class from, or to measure its
# AP on.
MIN_EXAMPLES = 10
# A class is flagged when more than this share of its boxes match no anchor.
MAX_UNCOVERED = 0.10
# label_map entries quoted in a message; a 90-class map would bury the point.
SHOWN_LABELS = 10


def percent(share: float) -> str:
    return f"{100 * share:.1f} %"


def _files_with(table: BoxTable, mask: np.ndarray) -> str:
    """The first files holding a box of ``mask``, and how many more."""
    images = np.unique(table.image[mask])
    return first_few([table.where[i] for i in images])


def data_errors(table: BoxTable, config: Config,
                classes: list[ClassStats]) -> list[str]:
    """Class ids the config cannot train, label_map entries without a name,
    and data with nothing to learn."""
    errors = []
    label_map = config.label_map
    for s in classes:
        about = (f"class id {s.id} ({s.boxes} boxes"
                 + (f", {s.data_name!r}" if s.data_name else "") + ")")
        files = _files_with(table, table.classes == s.id)
        if not 1 <= s.id <= config.num_classes:
            fix = ("re-convert with a label map whose ids start at 1"
                   if s.id < 1 else
                   f"set num_classes={s.id} and a label_map naming ids "
                   f"1..{s.id} in --hparams if it is a real class, or "
                   "re-convert with the label map you meant")
            errors.append(f"{about} is outside 1..num_classes="
                          f"{config.num_classes} (ids are 1-based, 0 is the "
                          f"background): {files}; {fix}")
        elif label_map and s.id not in label_map:
            errors.append(f"{about} is not in label_map ({_known(label_map)}):"
                          f" {files}; add it to label_map in --hparams or "
                          "re-convert with the config's label map")
    for class_id, name in sorted((label_map or {}).items()):
        if not name.strip():
            errors.append(f"label_map id {class_id} has an empty name: name "
                          "it in --hparams' label_map (evaluation and "
                          "drawings show classes by name)")
    if not len(table.classes):
        errors.append(f"no image of the {len(table.where)} holds an object: "
                      "nothing to learn (were the objects dropped in "
                      "conversion, e.g. as unknown classes?)")
    return errors


def _known(label_map: dict[int, str]) -> str:
    """``ids 1 'cat', 2 'dog'``: what an id missing from it could have been."""
    items = sorted(label_map.items())
    shown = ", ".join(f"{i} {n!r}" for i, n in items[:SHOWN_LABELS])
    more = len(items) - SHOWN_LABELS
    return f"ids {shown}" + (f" and {more} more" if more > 0 else "")


def data_warnings(table: BoxTable, config: Config,
                  classes: list[ClassStats], over: list[str],
                  per_image: np.ndarray) -> list[str]:
    """What is legal but likely to cost accuracy."""
    warnings = []
    label_map = config.label_map or {}
    for s in classes:
        if s.id in label_map and s.data_name and s.data_name != label_map[s.id]:
            warnings.append(f"class id {s.id} is {s.data_name!r} in the data "
                            f"but {label_map[s.id]!r} in label_map: was the "
                            "data converted with another label map?")
    few = [f"{s.id} {s.name!r} ({s.boxes})" for s in classes
           if s.boxes < MIN_EXAMPLES]
    if few:
        warnings.append(f"classes with fewer than {MIN_EXAMPLES} boxes, too "
                        f"few to learn or to measure: {', '.join(few)}")
    found = {s.id for s in classes}
    missing = [f"{i} {n!r}" for i, n in sorted(label_map.items())
               if i not in found]
    if missing:
        warnings.append(f"label_map classes with no boxes here: "
                        f"{', '.join(missing)}")
    if not label_map and found and 0 < max(found) < config.num_classes:
        warnings.append(f"num_classes={config.num_classes} but the highest "
                        f"class id here is {max(found)}: the channels above "
                        "it are never trained (set num_classes and a "
                        "label_map in --hparams)")
    if over:
        warnings.append(
            f"{len(over)} images hold more than max_instances_per_image="
            f"{config.max_instances_per_image} objects (up to "
            f"{per_image.max()}): {first_few(over)}; evaluation keeps only "
            "the first ones of their ground truth: raise "
            "max_instances_per_image in --hparams")
    empty = int(np.sum(per_image == 0))
    if 2 * empty > len(per_image):
        warnings.append(f"{empty} of {len(per_image)} images hold no object")
    for s in classes:
        if s.measured and 1 - s.coverage > MAX_UNCOVERED:
            warnings.append(
                f"{percent(1 - s.coverage)} of {s.name!r} boxes "
                f"({s.measured - s.matched} of {s.measured}) match no anchor "
                f"(best-anchor IoU < {MATCH_THRESHOLD})")
    return warnings
