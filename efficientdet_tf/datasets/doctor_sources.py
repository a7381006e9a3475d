"""The dataset doctor's input: TFRecords, a COCO JSON or a folder of VOC /
LabelImg XML, read into one table of boxes.

Each source is read by the code that already reads it for training or
conversion, so the doctor judges what training will get: records through
``tfrecord.decode_example`` (what the input pipeline decodes, image sizes
included), a COCO JSON through ``coco.read_coco`` and XML through
``voc.voc_to_coco``, both with the converters' box checks and policy
options, so boxes are clipped, skipped and counted as a conversion would.
What those checks fixed or dropped becomes the table's notes. JSON and XML
sizes come from the annotations: no image is decoded.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Sequence

import numpy as np

from efficientdet_tf.datasets.annotations import Options, make_record
from efficientdet_tf.datasets.validation import CLIPPED, ConversionError, Report
from efficientdet_tf.utils.boxes import coco_corners

# Files named in one message; the count in it is exact.
SHOWN = 3
# A larger share of clipped boxes suggests boxes in another format (corners
# read as [x, y, width, height] stick out of the image).
CLIPPED_HINT_SHARE = 0.1


@dataclasses.dataclass(frozen=True)
class BoxTable:
    """Every image and box of a dataset as arrays, so the statistics over
    tens of thousands of boxes are vector operations.

    Per image ``[I]``: ``where`` names it in messages (the file name, and
    for records the shard and record index) and ``sizes`` is its
    ``(height, width)``. Per box ``[N]``: ``image`` (index into the
    images), ``boxes`` normalised yxyx, ``classes`` (ids as stored),
    ``texts`` (the source's class names, "" where it has none) and
    ``crowd``. ``notes`` say what reading fixed or dropped; ``errors`` name
    stored boxes no training can use (records only: the converters refuse
    or skip such boxes in JSON and XML).
    """
    source: str
    where: list[str]
    sizes: np.ndarray
    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    texts: list[str]
    crowd: np.ndarray
    notes: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


class _Builder:
    """Collects images one by one, up to ``max_images`` (None: all)."""

    def __init__(self, source: str, max_images: int | None) -> None:
        self.source, self.max_images = source, max_images
        self.where: list[str] = []
        self.sizes: list[tuple[int, int]] = []
        self.columns: dict[str, list] = collections.defaultdict(list)

    def full(self) -> bool:
        return (self.max_images is not None
                and len(self.where) >= self.max_images)

    def add(self, where: str, height: int, width: int, boxes: np.ndarray,
            classes: Iterable[int], texts: Sequence[str],
            crowd: Iterable[int]) -> None:
        """One image; ``boxes`` ``[n, 4]`` normalised yxyx."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self.columns["image"] += [len(self.where)] * len(boxes)
        self.columns["boxes"] += list(boxes)
        self.columns["classes"] += [int(c) for c in classes]
        self.columns["texts"] += list(texts)
        self.columns["crowd"] += [bool(c) for c in crowd]
        self.where.append(where)
        self.sizes.append((int(height), int(width)))

    def add_pixels(self, where: str, height: int, width: int,
                   corners: Sequence[Sequence[float]], classes: Iterable[int],
                   texts: Sequence[str], crowd: Iterable[int]) -> None:
        """One image whose boxes are pixel ``(xmin, ymin, xmax, ymax)``, the
        converters' order, normalised as they write them to records."""
        xyxy = np.asarray(corners, np.float64).reshape(-1, 4)
        scale = np.array([height, width, height, width], np.float64)
        self.add(where, height, width, xyxy[:, [1, 0, 3, 2]] / scale, classes,
                 texts, crowd)

    def table(self, notes: list[str], errors: list[str]) -> BoxTable:
        if not self.where:
            raise ConversionError(f"{self.source}: holds no images")
        columns = self.columns
        return BoxTable(
            source=self.source, where=self.where,
            sizes=np.asarray(self.sizes, np.int64).reshape(-1, 2),
            image=np.asarray(columns["image"], np.int64),
            boxes=np.asarray(columns["boxes"], np.float64).reshape(-1, 4),
            classes=np.asarray(columns["classes"], np.int64),
            texts=columns["texts"],
            crowd=np.asarray(columns["crowd"], bool), notes=notes,
            errors=errors)


def read_records(file_pattern: str, max_images: int | None = None) -> BoxTable:
    """The records of ``file_pattern`` (globs joined by commas), decoded as
    training decodes them; stops after ``max_images`` records when given.

    Boxes that are not normalised yxyx inside ``[0, 1]`` with ``min < max``
    (pixel coordinates, xyxy order, a zero-size click) are left out of the
    table and become one error naming the first records that hold them.
    """
    import tensorflow as tf

    from efficientdet_tf.data.pipeline import list_record_files
    from efficientdet_tf.data.tfrecord import decode_example
    from efficientdet_tf.datasets.record_check import tf_error_reason

    def without_pixels(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        decoded = decode_example(serialized)
        del decoded["image"]  # decoded all the same: its shape is the size
        return decoded

    builder = _Builder(file_pattern, max_images)
    bad_boxes, bad_where = 0, []
    for path in list_record_files(file_pattern):
        if builder.full():
            break
        records = tf.data.TFRecordDataset(path).map(
            without_pixels, num_parallel_calls=tf.data.AUTOTUNE)
        if max_images is not None:
            records = records.take(max_images - len(builder.where))
        try:
            for index, example in enumerate(records.as_numpy_iterator()):
                name = example["filename"].decode("utf-8", "replace")
                where = f"{path} record {index}" + (
                    f" ({name})" if name else "")
                boxes = example["boxes"]
                if len(example["classes"]) != len(boxes):
                    raise ConversionError(
                        f"{where}: {len(boxes)} boxes but "
                        f"{len(example['classes'])} class labels")
                ymin, xmin, ymax, xmax = boxes.T
                good = ((boxes >= 0).all(-1) & (boxes <= 1).all(-1)
                        & (ymin < ymax) & (xmin < xmax))
                if not good.all():
                    bad_boxes += int((~good).sum())
                    bad_where.append(where)
                texts = [t.decode("utf-8", "replace") for t in example["texts"]]
                texts = (texts + [""] * len(boxes))[:len(boxes)]
                builder.add(where, example["height"], example["width"],
                            boxes[good], example["classes"][good],
                            [t for t, keep in zip(texts, good) if keep],
                            example["is_crowd"][good])
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise ConversionError(f"{path}: unreadable record or image "
                                  f"({tf_error_reason(e)})") from None
    errors = []
    if bad_boxes:
        errors.append(
            f"{bad_boxes} boxes in {len(bad_where)} records are not normalised "
            f"yxyx boxes inside [0, 1] with min < max (pixels? xyxy order?), "
            f"left out of this report: {first_few(bad_where)}; re-convert the "
            "records with dataset/create_coco_tfrecord.py or "
            "create_pascal_tfrecord.py")
    return builder.table([], errors)


def read_coco_json(path: str, options: Options = Options(),
                   max_images: int | None = None,
                   category_id_offset: int = 0) -> BoxTable:
    """A COCO instances JSON as ``create_coco_tfrecord.py`` with the same
    ``options`` and offset would write it, each image at its JSON size."""
    from efficientdet_tf.datasets.coco import read_coco
    report = Report()
    images, _ = read_coco(path, options, report, category_id_offset)
    builder = _Builder(path, max_images)
    for image in images:
        if builder.full():
            break
        width, height = image.size
        if not (width and height):
            raise ConversionError(
                f"{path}: image {image.file_name!r} (id {image.id}) has no "
                "width and height; the doctor takes image sizes from the JSON")
        record = make_record(f"{path}: image {image.file_name!r}",
                             image.file_name, str(image.id), None, image.size,
                             image.objects, options, report)
        if record is not None:
            objects = record.objects
            builder.add_pixels(record.filename, height, width,
                               [o.box for o in objects],
                               [o.label for o in objects],
                               [o.name for o in objects],
                               [o.is_crowd for o in objects])
    return builder.table(report_notes(report), [])


def read_voc_dir(folder: str, label_map_path: str | None = None,
                 options: Options = Options(),
                 max_images: int | None = None) -> BoxTable:
    """A folder of VOC / LabelImg XML files as ``create_pascal_tfrecord.py
    --annotations_dir`` would convert them (label ids from
    ``label_map_path``, else 1..K for the sorted names)."""
    from efficientdet_tf.datasets.voc import VocSource, voc_to_coco
    data, report = voc_to_coco(VocSource(annotations_dir=folder),
                               label_map_path, options)
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image = collections.defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    builder = _Builder(folder, max_images)
    for image in data["images"]:
        if builder.full():
            break
        anns = by_image[image["id"]]
        builder.add_pixels(image["file_name"], image["height"], image["width"],
                           [coco_corners(a["bbox"]) for a in anns],
                           [a["category_id"] for a in anns],
                           [names[a["category_id"]] for a in anns],
                           [a["iscrowd"] for a in anns])
    return builder.table(report_notes(report), [])


def report_notes(report: Report) -> list[str]:
    """What a conversion's checks fixed and dropped, one line each, then the
    first messages naming files (at most :data:`SHOWN` of each kind)."""
    notes = [f"{count} boxes skipped: {reason}"
             for reason, count in sorted(report.skipped_boxes.items())]
    notes += [f"{count} images skipped: {reason}"
              for reason, count in sorted(report.skipped_images.items())]
    boxes = sum(report.boxes.values())
    for what, count in sorted(report.fixes.items()):
        hint = ""
        if what == CLIPPED and count > CLIPPED_HINT_SHARE * boxes:
            hint = (" (that many suggests boxes in another format: COCO "
                    "'bbox' is [x, y, width, height], VOC corners in pixels)")
        notes.append(f"{what}: {count}{hint}")
    shown: collections.Counter = collections.Counter()
    for kind, message in report.warnings:
        shown[kind] += 1
        if shown[kind] <= SHOWN:
            notes.append(message)
    return notes


def first_few(where: list[str]) -> str:
    """The first :data:`SHOWN` of ``where``, and how many more."""
    more = len(where) - SHOWN
    return ", ".join(where[:SHOWN]) + (f" and {more} more" if more > 0 else "")
