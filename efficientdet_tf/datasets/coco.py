"""COCO instances JSON + image folder -> sharded TFRecords.

Labels are the COCO category ids as they are (automl's convention: the 90-id
COCO space with gaps, so official checkpoints and ``label_map: coco`` line
up); ``image/object/class/text`` holds the category name and
``image/source_id`` the image id, which the evaluator matches against the
same JSON. Crowd annotations are kept with ``is_crowd = 1`` and the JSON's
``area`` (the segment's, which COCO's size ranges use). Images without
annotations are kept as negatives unless ``skip_empty``.

Annotation tools' exports differ from COCO's own in ways that matter here:
labelme2coco and Roboflow list a category 0 that no object uses (dropped,
and reported), Label Studio numbers used categories from 0 (an error unless
the user opts into ``category_id_offset``), ``file_name`` often carries the
export's folder (``JPEGImages/x.jpg``, ``/data/upload/1/x.jpg``), and CVAT
stores a rotated rectangle as its upright box plus ``attributes.rotation``.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Any

import numpy as np

from efficientdet_tf.datasets import image_io, validation
from efficientdet_tf.datasets.annotations import (ImageRecord, Options, SourceObject,
                                          record_from_image)
from efficientdet_tf.datasets.validation import ConversionError, LabelMap, Report
from efficientdet_tf.datasets.writer import Result, write_records
from efficientdet_tf.utils.boxes import coco_corners

NO_SEGMENTATION = "objects without segmentation (empty mask)"
ORPHAN = "annotation of an image not in 'images'"
ROTATED = "rotated boxes replaced by the upright box around them"


@dataclasses.dataclass
class CocoImage:
    """One ``images`` entry and its annotations, read and checked."""
    id: int
    file_name: str
    size: tuple[int, int]  # (width, height) as annotated; 0 when absent
    objects: list[SourceObject] = dataclasses.field(default_factory=list)


def read_coco(path: str, options: Options, report: Report,
              category_id_offset: int = 0) -> tuple[list[CocoImage], LabelMap]:
    """Loads an instances JSON and checks it before any image is read, so a
    bad class id stops the run at once, naming the image and the object.

    ``category_id_offset`` is added to every category id (the returned label
    map and the objects' labels hold the shifted ids).
    """
    data = validation.load_structured(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConversionError(f"{path}: not a COCO instances file (no "
                              "'images' list)")
    try:
        names = {int(c["id"]): str(c["name"])
                 for c in data.get("categories") or []}
        entries = [CocoImage(int(i["id"]), str(i["file_name"]),
                             (int(i.get("width") or 0), int(i.get("height") or 0)))
                   for i in data["images"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ConversionError(f"{path}: malformed 'categories' or 'images' "
                              f"entry ({type(e).__name__}: {e})") from None
    if not entries:
        raise ConversionError(f"{path}: lists no images (empty dataset)")
    annotations = data.get("annotations") or []
    by_image: dict[int, list[dict]] = collections.defaultdict(list)
    for ann in annotations:
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise ConversionError(f"{path}: annotation without 'image_id': "
                                  f"{str(ann)[:80]}")
        by_image[ann["image_id"]].append(ann)
    categories = _label_map(path, names, annotations,
                            {im.id: im.file_name for im in entries},
                            category_id_offset, report)
    seen_ids = set()
    for image in entries:
        if image.id in seen_ids:
            raise ConversionError(f"{path}: image id {image.id} is listed "
                                  "twice in 'images'")
        seen_ids.add(image.id)
        where = f"{path}: {_describe(image.file_name, image.id)}"
        image.objects = _objects(where, by_image.pop(image.id, []), categories,
                                 category_id_offset, options, report)
    orphans = sum(len(a) for a in by_image.values())
    if orphans:
        report.skipped_boxes[ORPHAN] += orphans
    images = validation.drop_duplicates(
        entries, key=lambda im: im.file_name,
        describe=lambda im: f"image id {im.id}", policy=options.duplicates,
        report=report)
    return images, categories


def _describe(file_name: str, image_id: Any) -> str:
    return f"image {file_name!r} (id {image_id})"


def _label_map(path: str, names: dict[int, str], annotations: list[dict],
               file_names: dict[int, str], offset: int,
               report: Report) -> LabelMap:
    """The categories as class ids ``id + offset``, which must be 1-based.

    Some exporters list a category 0 that no object uses (labelme2coco's
    ``_background_``, Roboflow's project name): it must not block the file,
    so it is dropped and reported. A category below 1 that objects do use is
    an error: shifting every id is the user's call (``offset``), since the
    ids must then match everywhere else the dataset is used.
    """
    uses: collections.Counter = collections.Counter()
    first: dict[int, dict] = {}
    for ann in annotations:
        category = ann.get("category_id")
        if isinstance(category, int) and not isinstance(category, bool):
            uses[category] += 1
            first.setdefault(category, ann)
    kept = {}
    for category, name in sorted(names.items()):
        if category + offset >= 1:
            kept[category + offset] = name
        elif not uses[category]:
            report.fix(f"dropped unused category {category} {name!r}")
        else:
            ann = first[category]
            image_id = ann["image_id"]
            image = (_describe(file_names[image_id], image_id)
                     if image_id in file_names else f"image id {image_id}")
            count = uses[category]
            raise ConversionError(
                f"{path}: category {category} {name!r} is used by {count} "
                f"object{'s' if count > 1 else ''} (first: {image}, annotation "
                f"id {ann.get('id')}), but class ids start at 1 (0 is the "
                "background); for an export that numbers categories from "
                f"{category} (e.g. Label Studio's), pass --category_id_offset="
                f"{1 - category} to add {1 - category} to every category id, "
                "or renumber the categories in the JSON")
    return LabelMap(kept, path)


def _objects(where: str, annotations: list[dict], categories: LabelMap,
             offset: int, options: Options,
             report: Report) -> list[SourceObject]:
    objects = []
    for index, ann in enumerate(annotations, start=1):
        category = ann.get("category_id")
        label = category + offset if isinstance(category, int) else None
        name = categories.id_to_name.get(label)
        obj = f"{where}: object {index} (annotation id {ann.get('id')})"
        if name is None:
            validation.unknown_class(
                f"{obj} has category_id {category!r}, not in categories "
                f"(known: {categories.known_ids(offset)})",
                options.skip_unknown_classes, report)
            continue
        try:
            box = coco_corners([float(v) for v in ann["bbox"]])
            area = float(ann["area"]) if "area" in ann else None
        except (KeyError, TypeError, ValueError):
            raise ConversionError(
                f"{obj} needs a 'bbox' of 4 numbers [x, y, width, height] and "
                f"a numeric 'area', got {ann.get('bbox')!r}, "
                f"{ann.get('area')!r}") from None
        degrees = _rotation(ann, obj)
        if degrees:
            box = upright_box(box, degrees)
            report.fix(ROTATED)
        objects.append(SourceObject(
            box=box, label=label, name=name,
            is_crowd=int(bool(ann.get("iscrowd", 0))), area=area,
            segmentation=ann.get("segmentation")))
    return objects


def _rotation(ann: dict, obj: str) -> float:
    """CVAT's ``attributes.rotation`` (degrees about the box centre), in
    [0, 360); 0 when absent."""
    attributes = ann.get("attributes")
    value = attributes.get("rotation", 0) if isinstance(attributes, dict) else 0
    try:
        degrees = float(value)
    except (TypeError, ValueError):
        degrees = math.nan
    if isinstance(value, bool) or not math.isfinite(degrees):
        raise ConversionError(f"{obj} has attributes.rotation {value!r}, not "
                              "a number of degrees")
    return degrees % 360


def upright_box(box: tuple[float, float, float, float],
                degrees: float) -> tuple[float, float, float, float]:
    """The upright box ``(xmin, ymin, xmax, ymax)`` around ``box`` turned by
    ``degrees`` about its centre (either direction gives the same box).

    The detector learns upright boxes, and the rectangle the annotator drew
    lies inside this one; the box as written would cut the object off.
    """
    xmin, ymin, xmax, ymax = box
    turn = math.radians(degrees)
    # Rounded so that quarter turns are exact (cos 90 degrees is 6e-17).
    cos, sin = abs(round(math.cos(turn), 12)), abs(round(math.sin(turn), 12))
    width, height = xmax - xmin, ymax - ymin
    half_w = (width * cos + height * sin) / 2
    half_h = (width * sin + height * cos) / 2
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def image_candidates(image_dir: str, file_name: str,
                     by_name: bool = True) -> list[str]:
    """Where the image named ``file_name`` may be, in the order tried.

    Exporters write ``file_name`` relative to their export folder
    (``JPEGImages/x.jpg``, ``images/x.jpg``), as a server path (Label
    Studio's ``/data/upload/1/x.jpg``) or with Windows backslashes, while
    ``image_dir`` may be the export folder or the image folder itself: so the
    name is tried under ``image_dir`` as a relative path, then (``by_name``)
    by its last component, and an absolute name finally as it is. Pass
    ``by_name=False`` when other images share that last component (CVAT's
    ``video1/frame_000001.jpg``, ``video2/frame_000001.jpg``): one file
    must not stand in for several.
    """
    relative = _relative(file_name)
    candidates = [os.path.join(image_dir, relative)]
    if by_name:
        candidates.append(os.path.join(image_dir, _name_only(file_name)))
    if os.path.isabs(file_name):
        candidates.append(file_name)
    return list(dict.fromkeys(candidates))


def _relative(file_name: str) -> str:
    return file_name.replace("\\", "/").lstrip("/")


def _name_only(file_name: str) -> str:
    return _relative(file_name).rsplit("/", 1)[-1]


def build_record(image: CocoImage, image_dir: str, include_masks: bool,
                 options: Options,
                 by_name: bool = True) -> tuple[ImageRecord | None, Report]:
    """One image's record, with its masks when asked (worker thread);
    ``by_name`` as in :func:`image_candidates`."""
    candidates = image_candidates(image_dir, image.file_name, by_name)
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
        report = Report()
        report.skip_image(image_io.MISSING, (
            f"{_describe(image.file_name, image.id)}: image file not found "
            f"(tried {', '.join(candidates)})"))
        return None, report
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
                 num_threads: int | None = None, *,
                 category_id_offset: int = 0) -> Result:
    """The whole COCO conversion: read and check the JSON, then write
    ``{output_prefix}-0000k-of-0000n.tfrecord`` atomically.

    ``category_id_offset`` shifts every category id (1 for exports that
    number categories from 0); the result's notes then warn that the JSON no
    longer matches the records' labels.
    """
    report = Report()
    images, _ = read_coco(annotations_file, options, report, category_id_offset)
    names = collections.Counter(_name_only(im.file_name).casefold()
                                for im in images)

    def build(image: CocoImage) -> tuple[ImageRecord | None, Report]:
        by_name = names[_name_only(image.file_name).casefold()] == 1
        return build_record(image, image_dir, include_masks, options, by_name)

    paths = write_records(images, build, output_prefix, num_shards, report,
                          num_threads)
    notes = []
    if category_id_offset:
        notes.append(
            f"category ids were shifted by {category_id_offset:+d} "
            "(--category_id_offset), so the labels no longer match "
            f"{annotations_file}: evaluate against ground truth from the "
            "records, or a JSON with the same shift")
    return Result(report, paths, notes)
