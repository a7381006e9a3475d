"""Pascal VOC / LabelImg XML -> sharded TFRecords and COCO ground truth.

Two layouts are read: the VOC devkit (``VOC2007/ImageSets/Main/{set}.txt``
listing ids, ``Annotations/{id}.xml``, ``JPEGImages/``) and a plain folder
of LabelImg XML files next to (or apart from) their images.

Class names map to ids through a label map file, or one derived from the data
(sorted names, ids 1..K: for the 20 VOC classes that is the standard order).
A derived map is written next to the records, because the next split
converted without it could number the classes differently.

Boxes follow automl's Pascal converter (pixel coordinates divided by the image
size, no 1-pixel offset). Image ids (``source_id``) are 1..N in listing order,
the integers COCO evaluation needs; :func:`voc_to_coco` numbers the same
listing the same way, so its JSON matches the records.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import xml.etree.ElementTree as ElementTree

from efficientdet_tf.datasets import image_io, validation
from efficientdet_tf.datasets.annotations import (ImageRecord, Options, SourceObject,
                                          coco_ground_truth, make_record,
                                          record_from_image)
from efficientdet_tf.datasets.validation import ConversionError, LabelMap, Report
from efficientdet_tf.datasets.writer import Result, write_records
from efficientdet_tf.utils.files import IMAGE_EXTENSIONS, atomic_write


@dataclasses.dataclass(frozen=True)
class VocSource:
    """Where the annotations are: a VOC devkit (``data_dir``, ``year``,
    ``split``) or a folder of XML files (``annotations_dir`` and
    ``image_dir``, which defaults to the XML folder, as LabelImg saves)."""
    data_dir: str | None = None
    year: str = "VOC2007"
    split: str = "train"
    annotations_dir: str | None = None
    image_dir: str | None = None

    def files(self) -> list[tuple[str, str]]:
        """``(xml path, image folder)`` pairs, in a fixed order."""
        if self.annotations_dir:
            if not os.path.isdir(self.annotations_dir):
                raise ConversionError(f"{self.annotations_dir}: no such folder")
            xmls = sorted(glob.glob(os.path.join(
                glob.escape(self.annotations_dir), "*.xml")))
            image_dir = self.image_dir or self.annotations_dir
            return [(path, image_dir) for path in xmls]
        if not self.data_dir:
            raise ConversionError("give --data_dir (VOC devkit) or "
                                  "--annotations_dir (folder of XML files)")
        pairs = []
        for year in _years(self.year):
            root = os.path.join(self.data_dir, year)
            listing = os.path.join(root, "ImageSets", "Main", f"{self.split}.txt")
            try:
                with open(listing, encoding="utf-8") as f:
                    ids = [line.split()[0] for line in f if line.strip()]
            except OSError:
                raise ConversionError(f"{listing}: cannot read the image list "
                                      "(check --data_dir, --year, --set)") from None
            pairs += [(os.path.join(root, "Annotations", f"{i}.xml"),
                       os.path.join(root, "JPEGImages")) for i in ids]
        return pairs


def _years(year: str) -> list[str]:
    """automl's ``--year`` values (VOC2007, VOC2012, merged); bare years too."""
    if year == "merged":
        return ["VOC2007", "VOC2012"]
    return [year if year.startswith("VOC") else f"VOC{year}"]


@dataclasses.dataclass
class VocAnnotation:
    """One XML file, parsed; labels are filled in once the map is known."""
    xml_path: str
    image_path: str
    size: tuple[int, int]  # as annotated; (0, 0) when absent
    objects: list[SourceObject]
    source_id: str = ""

    @property
    def filename(self) -> str:
        return os.path.basename(self.image_path)


def parse_voc_xml(xml_path: str, image_dir: str) -> VocAnnotation:
    """Reads one VOC/LabelImg file; anything malformed is a
    :class:`ConversionError` naming the file (and the object)."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as e:
        raise ConversionError(f"{xml_path}: malformed XML ({e})") from None
    except OSError as e:
        raise ConversionError(f"{xml_path}: cannot read ({e.strerror})") from None
    if root.tag != "annotation":
        raise ConversionError(f"{xml_path}: not a VOC annotation (root element "
                              f"<{root.tag}>, expected <annotation>)")
    size = (_number(root, "size/width", xml_path, default=0),
            _number(root, "size/height", xml_path, default=0))
    objects = []
    for index, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ConversionError(f"{xml_path}: object {index} has no <name>")
        where = f"{xml_path}: object {index} {name!r}"
        if obj.find("bndbox") is None:
            raise ConversionError(f"{where} has no <bndbox>")
        box = tuple(_number(obj, f"bndbox/{key}", where, as_int=False)
                    for key in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(SourceObject(
            box=box, label=0, name=name,
            difficult=int(_number(obj, "difficult", where, default=0) != 0),
            truncated=int(_number(obj, "truncated", where, default=0) != 0),
            view=(obj.findtext("pose") or "").strip()))
    filename = (root.findtext("filename") or "").strip()
    return VocAnnotation(xml_path, _image_path(xml_path, image_dir, filename),
                         size, objects)


def _number(element: ElementTree.Element, tag: str, where: str,
            default: float | None = None, as_int: bool = True) -> float:
    text = element.findtext(tag)
    if text is None or not text.strip():
        if default is None:
            raise ConversionError(f"{where} has no <{tag}>")
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConversionError(f"{where}: <{tag}> is not a number "
                              f"({text.strip()!r})") from None
    return int(value) if as_int else value


def _image_path(xml_path: str, image_dir: str, filename: str) -> str:
    """The image an XML file describes: its ``<filename>`` in ``image_dir``,
    else the XML's own name with an image extension (``<filename>`` is often
    stale after files are renamed). A missing image is reported later, as a
    skipped image, by the loader."""
    # Tools on Windows may write a path with backslashes.
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    candidates = [os.path.join(image_dir, name)] if name else []
    stem = os.path.splitext(os.path.basename(xml_path))[0]
    for ext in IMAGE_EXTENSIONS:
        candidates += [os.path.join(image_dir, stem + ext),
                       os.path.join(image_dir, stem + ext.upper())]
    return next((c for c in candidates if os.path.isfile(c)), candidates[0])


def read_annotations(source: VocSource, label_map_path: str | None,
                     options: Options,
                     report: Report) -> tuple[list[VocAnnotation], LabelMap]:
    """Parses every XML file up front (cheap), so malformed files, duplicates
    and unknown classes stop the run before any image is decoded."""
    files = source.files()
    if not files:
        raise ConversionError("no annotation files found (empty dataset)")
    annotations = [parse_voc_xml(path, image_dir) for path, image_dir in files]
    annotations = validation.drop_duplicates(
        annotations, key=lambda a: a.filename,
        describe=lambda a: f"{a.xml_path} -> {a.image_path}",
        policy=options.duplicates, report=report)
    if label_map_path:
        label_map = LabelMap.load(label_map_path)
    else:
        label_map = LabelMap.derive(o.name for a in annotations for o in a.objects)
    for image_id, annotation in enumerate(annotations, start=1):
        annotation.source_id = str(image_id)
        kept = []
        for index, obj in enumerate(annotation.objects, start=1):
            obj.label = label_map.name_to_id.get(obj.name, 0)
            if obj.label:
                kept.append(obj)
            else:
                validation.unknown_class(
                    label_map.unknown_message(annotation.xml_path, index, obj.name),
                    options.skip_unknown_classes, report)
        annotation.objects = kept
    return annotations, label_map


def convert_pascal(source: VocSource, output_path: str, num_shards: int = 1,
                   label_map_path: str | None = None,
                   options: Options = Options(),
                   num_threads: int | None = None,
                   json_path: str | None = None) -> Result:
    """Writes ``{output_path}-0000k-of-0000n.tfrecord``, the matching COCO
    ground truth (``json_path``, default ``{output_path}.json`` as automl)
    and, when derived, the label map ``{output_path}.label_map.yaml``."""
    report = Report()
    annotations, label_map = read_annotations(source, label_map_path, options,
                                              report)
    written: list[ImageRecord] = []
    paths = write_records(annotations, lambda a: record_from_image(
                              a.image_path, a.xml_path, a.source_id, a.size,
                              a.objects, options, pascal=True),
                          output_path, num_shards, report, num_threads,
                          on_written=written.append)
    json_path = json_path or f"{output_path}.json"
    atomic_write(json_path, json.dumps(coco_ground_truth(written, label_map)))
    result = Result(report, paths + [json_path])
    if not label_map_path:
        map_path = f"{output_path}.label_map.yaml"
        atomic_write(map_path, label_map.to_yaml())
        result.outputs.append(map_path)
        result.notes.append(
            f"label map derived from the data ({label_map.known_ids()}); "
            f"convert other splits with --label_map_json_path={map_path} so "
            "their ids match, and use it as label_map in hparams")
    return result


def voc_to_coco(source: VocSource, label_map_path: str | None = None,
                options: Options = Options()) -> tuple[dict, Report]:
    """COCO ground truth straight from the XML files, without decoding any
    image: sizes come from ``<size>`` (or the image's header when the XML
    has none). Boxes get the same checks as in the records; the converter's
    own JSON also reflects images it had to skip or whose size differed."""
    report = Report()
    annotations, label_map = read_annotations(source, label_map_path, options,
                                              report)
    records = []
    for annotation in annotations:
        size = annotation.size
        if not all(size):
            try:
                size = image_io.image_size(annotation.image_path)
            except image_io.ImageError as e:
                report.skip_image(e.reason, f"{e} (no <size> in "
                                  f"{annotation.xml_path})")
                continue
        record = make_record(annotation.xml_path, annotation.filename,
                             annotation.source_id, None, size,
                             annotation.objects, options, report)
        if record is not None:
            records.append(record)
    if not records:
        raise ConversionError("no images left to write (empty dataset)")
    return coco_ground_truth(records, label_map), report


def write_voc_coco_json(source: VocSource, output_json_path: str,
                        label_map_path: str | None = None,
                        options: Options = Options()) -> Result:
    """:func:`voc_to_coco`, written atomically to ``output_json_path``."""
    data, report = voc_to_coco(source, label_map_path, options)
    atomic_write(output_json_path, json.dumps(data))
    return Result(report, [output_json_path])
