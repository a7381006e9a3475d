"""Checks shared by the dataset converters, and the report they print.

User-made annotations are rarely clean: boxes dragged past the image edge,
zero-size clicks, typos in class names, the same image listed twice. A
converter that crashes on the ten-thousandth image, or quietly writes bad
records, costs a user hours. So every check lives here once, and both
converters (COCO JSON and Pascal VOC XML) call it: boxes are clipped or
skipped *with a count*, unknown classes stop the run naming the file and the
object, and the final :class:`Report` says what was written, what was fixed
and what was dropped, and why.

This module does not import TensorFlow, so the demo generator and ``--help``
stay instant.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import yaml

from efficientdet_tf.errors import EfficientDetError

T = TypeVar("T")

# Reasons, used as report keys (the summary prints them as they are).
INVERTED = "inverted box (min > max)"
ZERO_AREA = "zero-area box"
OUTSIDE = "box entirely outside the image"
NON_FINITE = "box with non-numeric coordinates"
CLIPPED = "boxes clipped to the image"
SIZE_MISMATCH = "annotated size differs from the image (used the image's)"
DUPLICATE = "duplicate file name"
UNKNOWN_CLASS = "unknown class (--skip_unknown_classes)"
DIFFICULT = "difficult (--ignore_difficult_instances)"
EMPTY = "no objects (--skip_empty)"

# Warnings kept (and printed) per kind; the counts in the summary are exact.
MAX_WARNINGS_PER_KIND = 10


class ConversionError(EfficientDetError):
    """A problem with the user's input; the CLIs print it as one line."""


@dataclasses.dataclass
class Report:
    """What a conversion wrote, fixed and dropped.

    Each worker fills its own small report for one image and the writer
    merges them in order, so no locks are needed and the totals do not
    depend on the number of threads.
    """
    images: int = 0
    boxes: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)  # (label id, name) -> boxes
    skipped_images: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)  # reason -> images
    skipped_boxes: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)  # reason -> boxes
    fixes: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)  # what was repaired -> count
    warnings: list[tuple[str, str]] = dataclasses.field(
        default_factory=list)  # (kind, message naming the file)

    def skip_image(self, reason: str, message: str | None = None) -> None:
        self.skipped_images[reason] += 1
        if message:
            self.warn(reason, message)

    def skip_box(self, reason: str) -> None:
        self.skipped_boxes[reason] += 1

    def fix(self, what: str, count: int = 1) -> None:
        self.fixes[what] += count

    def warn(self, kind: str, message: str) -> None:
        self.warnings.append((kind, message))

    def merge(self, other: "Report") -> list[str]:
        """Adds ``other``'s counts; returns its warnings that were kept (the
        first :data:`MAX_WARNINGS_PER_KIND` of each kind), for printing."""
        self.images += other.images
        for name in ("boxes", "skipped_images", "skipped_boxes", "fixes"):
            getattr(self, name).update(getattr(other, name))
        kept = []
        seen = collections.Counter(kind for kind, _ in self.warnings)
        for kind, message in other.warnings:
            if seen[kind] < MAX_WARNINGS_PER_KIND:
                seen[kind] += 1
                self.warnings.append((kind, message))
                kept.append(message)
        return kept

    def summary(self) -> str:
        """The multi-line summary the converters print at the end."""
        lines = [f"images written: {self.images}",
                 f"boxes per class ({sum(self.boxes.values())} total):"]
        for (label, name), count in sorted(self.boxes.items()):
            lines.append(f"  {label:>4} {name:<20} {count}")
        for title, counter in (("skipped images", self.skipped_images),
                               ("skipped boxes", self.skipped_boxes),
                               ("fixed", self.fixes)):
            if counter:
                lines.append(f"{title}: {sum(counter.values())}")
                lines.extend(f"  {reason}: {count}"
                             for reason, count in sorted(counter.items()))
        return "\n".join(lines)


def clip_box(box: Sequence[float], width: int, height: int,
             report: Report) -> tuple[float, float, float, float] | None:
    """Checks one pixel box ``(xmin, ymin, xmax, ymax)`` against the image.

    Inverted and zero-area boxes are skipped rather than repaired: swapping
    corners or padding a click would invent an object the annotator never
    drew. Boxes that stick out are clipped (annotation tools let users drag
    past the edge); a box left with no area inside the image is skipped.
    Returns the box to keep, or ``None``; every decision is counted.
    """
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
        report.skip_box(NON_FINITE)
        return None
    if xmin > xmax or ymin > ymax:
        report.skip_box(INVERTED)
        return None
    if xmin == xmax or ymin == ymax:
        report.skip_box(ZERO_AREA)
        return None
    clipped = (min(max(xmin, 0.0), width), min(max(ymin, 0.0), height),
               min(max(xmax, 0.0), width), min(max(ymax, 0.0), height))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        report.skip_box(OUTSIDE)
        return None
    if clipped != (xmin, ymin, xmax, ymax):
        report.fix(CLIPPED)
    return clipped


def check_size(where: str, declared: tuple[int, int] | None,
               actual: tuple[int, int], report: Report) -> None:
    """Warns when the annotation's (width, height) is not the image's.

    The decoded image is the truth the model sees, so boxes are normalised by
    its size; rescaling the boxes instead would guess at what went wrong (a
    resized export? a swapped orientation?), so the file is named for the
    user to look at. A missing or zero size (some tools write 0) is no
    mismatch.
    """
    if declared and all(declared) and tuple(declared) != tuple(actual):
        report.fix(SIZE_MISMATCH)
        report.warn(SIZE_MISMATCH,
                    f"{where}: annotation says {declared[0]}x{declared[1]} "
                    f"but the image is {actual[0]}x{actual[1]}; boxes are "
                    "normalised by the image's size")


def drop_duplicates(items: Sequence[T], key: Callable[[T], str],
                    describe: Callable[[T], str], policy: str,
                    report: Report) -> list[T]:
    """Keeps the first item per file name (case-insensitive, so a dataset
    copied to Windows or macOS keeps meaning the same); later ones are an
    error (``policy='error'``) or skipped with a count (``'skip'``)."""
    first: dict[str, T] = {}
    kept = []
    for item in items:
        name = key(item).casefold()
        if name not in first:
            first[name] = item
            kept.append(item)
            continue
        message = (f"duplicate file name {key(item)!r}: {describe(item)} "
                   f"repeats {describe(first[name])}")
        if policy == "error":
            raise ConversionError(
                f"{message} (pass --duplicates=skip to keep the first)")
        report.skip_image(DUPLICATE, message + "; skipped")
    return kept


class LabelMap:
    """1-based class ids <-> names (0 is never a class: docs/contracts.md)."""

    def __init__(self, id_to_name: Mapping[int, str], source: str = "label_map"):
        names = list(id_to_name.values())
        if not id_to_name:
            raise ConversionError(f"{source}: label map is empty")
        if min(id_to_name) < 1:
            raise ConversionError(f"{source}: class ids are 1-based (0 is "
                                  f"background), got id {min(id_to_name)}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConversionError(f"{source}: class name(s) "
                                  f"{', '.join(repeated)} map to several ids")
        self.id_to_name = dict(sorted(id_to_name.items()))
        self.name_to_id = {name: i for i, name in self.id_to_name.items()}

    @classmethod
    def derive(cls, names: Iterable[str]) -> "LabelMap":
        """Ids 1..K for the sorted names: sorting makes the ids independent of
        file order, and gives the standard ids for the 20 VOC classes."""
        unique = sorted(set(names))
        if not unique:
            raise ConversionError("no objects found to derive a label map from "
                                  "(pass --label_map_json_path)")
        return cls({i: name for i, name in enumerate(unique, start=1)},
                   "derived label map")

    @classmethod
    def load(cls, path: str) -> "LabelMap":
        """Reads a JSON or YAML file mapping ids to names (``{1: person}``, as
        in hparams' ``label_map``) or names to ids (``{"person": 1}``, as in
        automl's pascal label maps). A file with a top-level ``label_map``
        key (an hparams YAML) works too. automl's ``background: 0`` entry is
        dropped, since id 0 is never a class."""
        data = load_structured(path)
        if isinstance(data, dict) and isinstance(data.get("label_map"), dict):
            data = data["label_map"]
        if not isinstance(data, dict):
            raise ConversionError(f"{path}: a label map must be a mapping "
                                  "like {1: person} or {person: 1}")
        if all(_as_id(k) is not None for k in data):
            pairs = {_as_id(k): str(v) for k, v in data.items()}
        elif all(_as_id(v) is not None for v in data.values()):
            pairs = {_as_id(v): str(k) for k, v in data.items()}
        else:
            raise ConversionError(f"{path}: a label map must map ids to names "
                                  "({1: person}) or names to ids ({person: 1})")
        if pairs.get(0, "background") == "background":
            pairs.pop(0, None)
        return cls(pairs, path)

    def unknown_message(self, where: str, index: int, name: str) -> str:
        """The error for an unknown class name, naming file and object."""
        return (f"{where}: object {index} {name!r} is not in label_map "
                f"(known: {', '.join(self.id_to_name.values())})")

    def known_ids(self, offset: int = 0) -> str:
        """``"1 person, 2 car"``; with ``offset``, the ids less it, as a
        source read with an id offset writes them."""
        return ", ".join(f"{i - offset} {n}" for i, n in self.id_to_name.items())

    def to_yaml(self) -> str:
        """``{id: name}`` YAML, the form hparams' ``label_map`` takes."""
        return yaml.safe_dump(self.id_to_name, default_flow_style=False,
                              sort_keys=True, allow_unicode=True)


def _as_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def unknown_class(message: str, skip: bool, report: Report) -> None:
    """Rejects an object whose class is unknown (``message`` names the file
    and the object); with ``skip`` the object is dropped and counted."""
    if not skip:
        raise ConversionError(message + "; pass --skip_unknown_classes to "
                              "drop such objects")
    report.skip_box(UNKNOWN_CLASS)


def load_structured(path: str) -> object:
    """Parses a JSON (``.json``) or YAML file; a missing or malformed file is
    a :class:`ConversionError` naming it and the line of the problem."""
    try:
        with open(path, encoding="utf-8") as f:
            if os.path.splitext(path)[1].lower() == ".json":
                return json.load(f)
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConversionError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: malformed JSON (line {e.lineno}, "
                              f"column {e.colno}: {e.msg})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConversionError(f"{path}: malformed YAML ({at}"
                              f"{getattr(e, 'problem', None) or e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read ({e})") from None
