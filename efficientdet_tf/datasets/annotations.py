"""The converters' common middle: pixel-space objects checked against an image.

Both sources (COCO JSON, VOC XML) are read into :class:`SourceObject` lists in
pixels, then :func:`make_record` applies the shared checks against the image's
real size. The :class:`ImageRecord` it returns becomes a TFRecord
(:meth:`ImageRecord.to_example`) and, for the Pascal converter, the matching
COCO ground truth (:func:`coco_ground_truth`): both are made from the same
checked boxes, so evaluation scores exactly what was trained on.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Iterable

from efficientdet_tf.datasets import image_io, validation
from efficientdet_tf.datasets.validation import LabelMap, Report
from efficientdet_tf.utils.boxes import coco_bbox

if TYPE_CHECKING:  # the schema module imports TensorFlow; only types here
    from efficientdet_tf.data.tfrecord import Example


@dataclasses.dataclass
class SourceObject:
    """One annotated object: a pixel box ``(xmin, ymin, xmax, ymax)`` in the
    displayed image, its class, and the optional per-source attributes."""
    box: tuple[float, float, float, float]
    label: int
    name: str
    is_crowd: int = 0
    area: float | None = None  # None: the box's area
    difficult: int = 0
    truncated: int = 0
    view: str = ""
    segmentation: Any = None  # COCO polygons / RLE, for --include_masks


@dataclasses.dataclass
class ImageRecord:
    """One image and its kept objects, boxes in pixels of ``width x height``.

    ``encoded`` is empty when only the COCO ground truth is wanted.
    ``pascal`` adds the VOC keys (difficult, truncated, view) to the record.
    """
    filename: str
    source_id: str
    width: int
    height: int
    objects: list[SourceObject]
    encoded: bytes = b""
    masks: list[bytes] | None = None
    pascal: bool = False

    def to_example(self) -> "Example":
        """The record in the schema of ``tfrecord.py`` (normalised yxyx)."""
        from efficientdet_tf.data.tfrecord import Example
        w, h = float(self.width), float(self.height)
        objects = self.objects
        return Example(
            encoded=self.encoded, height=self.height, width=self.width,
            filename=self.filename, source_id=self.source_id,
            boxes=[(o.box[1] / h, o.box[0] / w, o.box[3] / h, o.box[2] / w)
                   for o in objects],
            labels=[o.label for o in objects],
            texts=[o.name for o in objects],
            is_crowd=[o.is_crowd for o in objects],
            areas=[_area(o) for o in objects],
            difficult=[o.difficult for o in objects] if self.pascal else None,
            truncated=[o.truncated for o in objects] if self.pascal else None,
            views=[o.view for o in objects] if self.pascal else None,
            masks=self.masks)


def _area(obj: SourceObject) -> float:
    if obj.area is not None:
        return float(obj.area)
    xmin, ymin, xmax, ymax = obj.box
    return (xmax - xmin) * (ymax - ymin)


@dataclasses.dataclass(frozen=True)
class Options:
    """The choices a user makes about bad or unwanted annotations."""
    skip_empty: bool = False
    skip_unknown_classes: bool = False
    ignore_difficult: bool = False
    duplicates: str = "error"  # or "skip": keep the first of each file name


def make_record(where: str, filename: str, source_id: str,
                declared_size: tuple[int, int] | None,
                actual_size: tuple[int, int], objects: Iterable[SourceObject],
                options: Options, report: Report,
                pascal: bool = False) -> ImageRecord | None:
    """Checks ``objects`` against the image's real ``(width, height)``.

    ``where`` names the annotation in warnings. Returns ``None`` (counted)
    when ``options.skip_empty`` is set and no object survives the checks;
    otherwise the record, counted in ``report`` as written.
    """
    width, height = actual_size
    validation.check_size(where, declared_size, actual_size, report)
    kept = []
    for obj in objects:
        if options.ignore_difficult and obj.difficult:
            report.skip_box(validation.DIFFICULT)
            continue
        box = validation.clip_box(obj.box, width, height, report)
        if box is not None:
            kept.append(dataclasses.replace(obj, box=box))
    if options.skip_empty and not kept:
        report.skip_image(validation.EMPTY)
        return None
    report.images += 1
    report.boxes.update((o.label, o.name) for o in kept)
    return ImageRecord(filename, source_id, width, height, kept, pascal=pascal)


def record_from_image(image_path: str, where: str, source_id: str,
                      declared_size: tuple[int, int] | None,
                      objects: Iterable[SourceObject], options: Options,
                      pascal: bool = False) -> tuple[ImageRecord | None, Report]:
    """Loads one image and checks ``objects`` against it. Runs on a worker
    thread, so it reports into a fresh :class:`Report` of its own; an
    unreadable image is a counted skip (naming ``where``), not an error."""
    report = Report()
    try:
        loaded = image_io.load_image(image_path)
    except image_io.ImageError as e:
        note = "" if where == image_path else f" (annotated in {where})"
        report.skip_image(e.reason, f"{e}{note}")
        return None, report
    for fix in loaded.fixes:
        report.fix(fix)
    record = make_record(where, os.path.basename(image_path), source_id,
                         declared_size, (loaded.width, loaded.height), objects,
                         options, report, pascal)
    if record is not None:
        record.encoded = loaded.encoded
    return record, report


def coco_ground_truth(records: Iterable[ImageRecord],
                      label_map: LabelMap) -> dict[str, list]:
    """COCO-format ground truth for records whose ``source_id`` is an int.

    Image ids are the records' ``source_id`` (what the evaluator reads back
    from a record), category ids are the label ids, boxes are pixel
    ``[x, y, w, h]``. Every object is ``iscrowd: 0``, as in automl's Pascal
    converter. The result loads with ``pycocotools.coco.COCO``.
    """
    images, annotations = [], []
    for record in records:
        image_id = int(record.source_id)
        images.append({"id": image_id, "file_name": record.filename,
                       "width": record.width, "height": record.height})
        for obj in record.objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": obj.label, "bbox": coco_bbox(*obj.box),
                "area": _area(obj), "iscrowd": 0, "ignore": 0,
                "segmentation": []})
    categories = [{"id": i, "name": name, "supercategory": "none"}
                  for i, name in label_map.id_to_name.items()]
    return {"images": images, "annotations": annotations,
            "categories": categories}
