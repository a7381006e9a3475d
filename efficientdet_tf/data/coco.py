"""COCO instances JSON + image folder -> sharded TFRecords.

Labels are the COCO category ids as they are (automl's convention: the 90-id
COCO space with gaps, so official checkpoints and ``label_map: coco`` line
up); ``image/object/class/text`` holds the category name and
``image/source_id`` the image id, which the evaluator matches against the
same JSON. Crowd annotations are kept with ``is_crowd = 1`` and the JSON's
``area`` (the segment's, which COCO's size ranges use). Images without
annotations are kept as negatives unless ``skip_empty``.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any

import numpy as np

from efficientdet_tf.data import image_io, validation
from efficientdet_tf.data.records import (ImageRecord, Options, SourceObject,
                                          record_from_image)
from efficientdet_tf.data.validation import ConversionError, LabelMap, Report
from efficientdet_tf.data.writer import Result, write_records

NO_SEGMENTATION = "objects without segmentation (empty mask)"
ORPHAN = "annotation of an image not in 'images'"


@dataclasses.dataclass
class CocoImage:
    """One ``images`` entry and its annotations, read and checked."""
    id: int
    file_name: str
    size: tuple[int, int]  # (width, height) as annotated; 0 when absent
    objects: list[SourceObject] = dataclasses.field(default_factory=list)


def read_coco(path: str, options: Options,
              report: Report) -> tuple[list[CocoImage], LabelMap]:
    """Loads an instances JSON and checks it before any image is read, so a
    bad class id stops the run at once, naming the image and the object."""
    data = validation.load_structured(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConversionError(f"{path}: not a COCO instances file (no "
                              "'images' list)")
    try:
        categories = LabelMap({int(c["id"]): str(c["name"])
                               for c in data.get("categories") or []}, path)
        entries = [CocoImage(int(i["id"]), str(i["file_name"]),
                             (int(i.get("width") or 0), int(i.get("height") or 0)))
                   for i in data["images"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ConversionError(f"{path}: malformed 'categories' or 'images' "
                              f"entry ({type(e).__name__}: {e})") from None
    if not entries:
        raise ConversionError(f"{path}: lists no images (empty dataset)")
    by_image: dict[int, list[dict]] = collections.defaultdict(list)
    for ann in data.get("annotations") or []:
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise ConversionError(f"{path}: annotation without 'image_id': "
                                  f"{str(ann)[:80]}")
        by_image[ann["image_id"]].append(ann)
    seen_ids = set()
    for image in entries:
        if image.id in seen_ids:
            raise ConversionError(f"{path}: image id {image.id} is listed "
                                  "twice in 'images'")
        seen_ids.add(image.id)
        where = f"{path}: image {image.file_name!r} (id {image.id})"
        image.objects = _objects(where, by_image.pop(image.id, []), categories,
                                 options, report)
    orphans = sum(len(a) for a in by_image.values())
    if orphans:
        report.skipped_boxes[ORPHAN] += orphans
    images = validation.drop_duplicates(
        entries, key=lambda im: im.file_name,
        describe=lambda im: f"image id {im.id}", policy=options.duplicates,
        report=report)
    return images, categories


def _objects(where: str, annotations: list[dict], categories: LabelMap,
             options: Options, report: Report) -> list[SourceObject]:
    objects = []
    for index, ann in enumerate(annotations, start=1):
        category = ann.get("category_id")
        name = categories.id_to_name.get(category) if isinstance(
            category, int) else None
        if name is None:
            validation.unknown_class(
                f"{where}: object {index} (annotation id {ann.get('id')}) "
                f"has category_id {category!r}, not in "
                f"categories (known: {categories.known_ids()})",
                options.skip_unknown_classes, report)
            continue
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            area = float(ann["area"]) if "area" in ann else None
        except (KeyError, TypeError, ValueError):
            raise ConversionError(
                f"{where}: object {index} (annotation id {ann.get('id')}) needs "
                f"a 'bbox' of 4 numbers [x, y, width, height] and a numeric "
                f"'area', got {ann.get('bbox')!r}, {ann.get('area')!r}") from None
        objects.append(SourceObject(
            box=(x, y, x + w, y + h), label=category, name=name,
            is_crowd=int(bool(ann.get("iscrowd", 0))), area=area,
            segmentation=ann.get("segmentation")))
    return objects


def build_record(image: CocoImage, image_dir: str, include_masks: bool,
                 options: Options) -> tuple[ImageRecord | None, Report]:
    """One image's record, with its masks when asked (worker thread)."""
    path = os.path.join(image_dir, image.file_name)
    record, report = record_from_image(path, path, str(image.id), image.size,
                                       image.objects, options)
    if record is not None:
        record.filename = image.file_name  # as in the JSON, subfolders and all
        if include_masks:
            record.masks = [_mask_png(o.segmentation, record.width,
                                      record.height, path, report)
                            for o in record.objects]
    return record, report


def _mask_png(segmentation: Any, width: int, height: int, where: str,
              report: Report) -> bytes:
    """A 0/1 PNG mask (automl's encoding) from polygons or RLE.

    Coordinates stay in pixels, like the boxes: when the image's real size
    differs from the annotation, an RLE mask is cropped or padded, never
    rescaled.
    """
    from pycocotools import mask as mask_util
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            report.fix(NO_SEGMENTATION)
            return image_io.encode_png(np.zeros((height, width), np.uint8))
        rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        rle = segmentation
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            rle = mask_util.frPyObjects(segmentation, *segmentation["size"])
    elif not segmentation:
        report.fix(NO_SEGMENTATION)
        return image_io.encode_png(np.zeros((height, width), np.uint8))
    else:
        raise ConversionError(f"{where}: unsupported segmentation "
                              f"{str(segmentation)[:60]}")
    decoded = mask_util.decode(rle)[:height, :width]
    mask = np.zeros((height, width), np.uint8)
    mask[:decoded.shape[0], :decoded.shape[1]] = decoded
    return image_io.encode_png(mask)


def convert_coco(image_dir: str, annotations_file: str, output_prefix: str,
                 num_shards: int = 1, include_masks: bool = False,
                 options: Options = Options(),
                 num_threads: int | None = None) -> Result:
    """The whole COCO conversion: read and check the JSON, then write
    ``{output_prefix}-0000k-of-0000n.tfrecord`` atomically."""
    report = Report()
    images, _ = read_coco(annotations_file, options, report)
    paths = write_records(
        images, lambda im: build_record(im, image_dir, include_masks, options),
        output_prefix, num_shards, report, num_threads)
    return Result(report, paths)
