"""Generated detection datasets: coloured objects on textured backgrounds.

Two scenes, so that one can pretrain on the first and fine-tune on the other:

* ``shapes`` (the demo): circle, square, triangle; 1-4 objects per image,
  large and mostly apart, so a small EfficientDet learns them in minutes on
  a CPU.
* ``parts``: bar (lying), pin (standing), dot; 1-6 objects per image, small
  and elongated: 1:4 to 1:8 bars and dots a few pixels wide, which the
  default anchors (squares and 1:2 boxes) match badly. Other classes and
  other sizes than ``shapes``: the fine-tuning case the dataset doctor and
  anchor fitting are for.

Colour is drawn independently of the class, so the model has to learn shape.

The same dataset is written in both source formats the converters read:

    output_dir/label_map.yaml            {1: circle, 2: square, 3: triangle}
    output_dir/{train,val}/images/*.jpg
    output_dir/{train,val}/annotations.json   (COCO instances)
    output_dir/{train,val}/xml/*.xml          (LabelImg / VOC)

Every image has its own random generator seeded from ``(seed, split,
index)`` and nothing depends on time, paths or dict order, so the same seed
gives byte-identical files (for the same Pillow/libjpeg).
"""
from __future__ import annotations

import colorsys
import dataclasses
import io
import json
import os
import xml.etree.ElementTree as ElementTree

import numpy as np
from PIL import Image, ImageDraw

from efficientdet_tf.datasets.validation import ConversionError, LabelMap
from efficientdet_tf.utils.boxes import coco_bbox
from efficientdet_tf.utils.files import atomic_write

SPLITS = {"train": 0, "val": 1}  # split -> seed component
REFERENCE_SIZE = 256  # object sizes below are for this image size
MAX_COVER = 0.2  # at most this much of either box may lie under another
JPEG_QUALITY = 95


@dataclasses.dataclass(frozen=True)
class ObjectKind:
    """One class of a scene. ``sides``: range of the box width at
    ``REFERENCE_SIZE`` (scaled with the image). ``height``: range of the
    height as a fraction of the width, None for as tall as wide. ``standing``
    swaps width and height after drawing them."""
    name: str
    draw: str  # "ellipse", "rectangle" or "triangle"
    sides: tuple[int, int]
    height: tuple[float, float] | None = None
    standing: bool = False


@dataclasses.dataclass(frozen=True)
class Scene:
    """What a generated dataset draws: its classes (ids 1.. in order) and how
    many objects an image holds."""
    kinds: tuple[ObjectKind, ...]
    max_objects: int

    @property
    def label_map(self) -> LabelMap:
        return LabelMap({i: k.name for i, k in enumerate(self.kinds, start=1)})


SCENES = {
    "shapes": Scene((ObjectKind("circle", "ellipse", (30, 110)),
                     ObjectKind("square", "rectangle", (30, 110)),
                     ObjectKind("triangle", "triangle", (30, 110), (0.8, 1.1))),
                    max_objects=4),
    "parts": Scene((ObjectKind("bar", "rectangle", (24, 64), (0.12, 0.25)),
                    ObjectKind("pin", "rectangle", (24, 64), (0.12, 0.25),
                               standing=True),
                    ObjectKind("dot", "ellipse", (8, 16))),
                   max_objects=6),
}


@dataclasses.dataclass(frozen=True)
class Shape:
    """One drawn object; ``box`` is ``(xmin, ymin, xmax, ymax)`` in integer
    pixels, the shape's tight extent (xmax/ymax exclusive)."""
    kind: ObjectKind
    label: int
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return self.kind.name


def _cover(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """The fraction of the smaller box that the other one overlaps: unlike
    IoU it also stops a small shape from hiding under a large one."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((r[2] - r[0]) * (r[3] - r[1]) for r in (a, b))
    return w * h / smaller


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted colour field + stripes + noise: texture the detector must learn
    to ignore, desaturated so that the vivid shapes stay distinct."""
    coarse = rng.uniform(40, 210, size=(4, 4, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize(
        (size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    gray = field.mean(axis=-1, keepdims=True)
    field = gray + 0.35 * (field - gray)
    yy, xx = np.mgrid[0:size, 0:size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    field += rng.uniform(0, 18) * stripes[..., None]
    field += rng.normal(0, 8, size=field.shape)
    return np.clip(field, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.65, 1),
                                  rng.uniform(0.7, 1))
    return int(r * 255), int(g * 255), int(b * 255)


def _shapes(rng: np.random.Generator, size: int, scene: Scene,
            scale: float | None = None, count: int | None = None
            ) -> list[Shape]:
    """Random shapes on a ``size`` image: ``count`` of them (default 1 to
    the scene's maximum), sized for ``size`` (or by ``scale`` relative to
    ``REFERENCE_SIZE``)."""
    scale = size / REFERENCE_SIZE if scale is None else scale
    shapes: list[Shape] = []
    wanted = int(rng.integers(1, scene.max_objects + 1)) if count is None else count
    for _ in range(wanted):
        label = int(rng.integers(1, len(scene.kinds) + 1))
        kind = scene.kinds[label - 1]
        lo = max(4, round(kind.sides[0] * scale))
        hi = max(5, round(kind.sides[1] * scale))
        for _attempt in range(30):
            w = int(rng.integers(lo, hi + 1))
            h = w if kind.height is None else max(2, int(w * rng.uniform(*kind.height)))
            w, h = (h, w) if kind.standing else (w, h)
            h = min(h, size)
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = (x, y, x + w, y + h)
            if all(_cover(box, s.box) <= MAX_COVER for s in shapes):
                shapes.append(Shape(kind, label, box))
                break
    return shapes


def _draw(rng: np.random.Generator, size: int, scene: Scene,
          scale: float | None = None, count: int | None = None
          ) -> tuple[bytes, list[Shape]]:
    """A JPEG of :func:`_shapes` on :func:`_background`, and the shapes."""
    image = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(image)
    shapes = _shapes(rng, size, scene, scale, count)
    for shape in shapes:
        x0, y0, x1, y1 = shape.box
        corners = (x0, y0, x1 - 1, y1 - 1)  # PIL's boxes include the end pixel
        fill = _colour(rng)
        if shape.kind.draw == "ellipse":
            draw.ellipse(corners, fill=fill)
        elif shape.kind.draw == "rectangle":
            draw.rectangle(corners, fill=fill)
        else:
            apex = int(rng.integers(x0, x1))
            draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), (apex, y0)], fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), shapes


def large_image(seed: int, size: int, num_objects: int,
                object_image_size: int, scene: str = "shapes"
                ) -> tuple[bytes, list[Shape]]:
    """A ``size`` x ``size`` JPEG with ``num_objects`` shapes as large as in
    a ``object_image_size`` dataset of ``scene``: e.g. 2048 px holding the
    15-55 px objects of the 128 px demo, the case tiled inference is for
    (resized to 128 px whole, they shrink to 1-3 px)."""
    rng = np.random.default_rng([seed, size, num_objects])
    return _draw(rng, size, SCENES[scene], object_image_size / REFERENCE_SIZE,
                 num_objects)


def _labelimg_xml(filename: str, size: int, shapes: list[Shape]) -> str:
    """The XML LabelImg saves (without its absolute <path>, which would make
    the files depend on where they were generated)."""
    root = ElementTree.Element("annotation")
    for tag, text in (("folder", "images"), ("filename", filename)):
        ElementTree.SubElement(root, tag).text = text
    ElementTree.SubElement(ElementTree.SubElement(root, "source"),
                           "database").text = "efficientdet_tf demo"
    size_node = ElementTree.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ElementTree.SubElement(size_node, tag).text = str(value)
    ElementTree.SubElement(root, "segmented").text = "0"
    for shape in shapes:
        obj = ElementTree.SubElement(root, "object")
        for tag, text in (("name", shape.name), ("pose", "Unspecified"),
                          ("truncated", "0"), ("difficult", "0")):
            ElementTree.SubElement(obj, tag).text = text
        box = ElementTree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), shape.box):
            ElementTree.SubElement(box, tag).text = str(value)
    ElementTree.indent(root, space="\t")
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def write_split(output_dir: str, split: str, count: int, seed: int,
                image_size: int, scene: Scene) -> dict[str, int]:
    """Writes one split's images, COCO JSON and XML; returns per-class box
    counts."""
    folder = os.path.join(output_dir, split)
    images, annotations = [], []
    counts = {kind.name: 0 for kind in scene.kinds}
    for index in range(count):
        rng = np.random.default_rng([seed, SPLITS[split], index])
        encoded, shapes = _draw(rng, image_size, scene)
        filename = f"{split}_{index:05d}.jpg"
        stem = os.path.splitext(filename)[0]
        atomic_write(os.path.join(folder, "images", filename), encoded)
        atomic_write(os.path.join(folder, "xml", f"{stem}.xml"),
                     _labelimg_xml(filename, image_size, shapes))
        images.append({"id": index + 1, "file_name": filename,
                       "width": image_size, "height": image_size})
        for shape in shapes:
            x, y, width, height = coco_bbox(*shape.box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 1,
                "category_id": shape.label, "bbox": [x, y, width, height],
                "area": width * height, "iscrowd": 0, "segmentation": []})
            counts[shape.name] += 1
    categories = [{"id": i, "name": n, "supercategory": "shape"}
                  for i, n in scene.label_map.id_to_name.items()]
    atomic_write(os.path.join(folder, "annotations.json"), json.dumps(
        {"images": images, "annotations": annotations,
         "categories": categories}, indent=1) + "\n")
    return counts


def make_demo_dataset(output_dir: str, num_train: int = 320, num_val: int = 64,
                      seed: int = 0, image_size: int = 256,
                      scene: str = "shapes") -> str:
    """Generates both splits and the label map of ``scene`` (a name in
    ``SCENES``); returns a summary."""
    if scene not in SCENES:
        raise ConversionError(f"--scene {scene!r}: known scenes are "
                              f"{', '.join(SCENES)}")
    if image_size < 64:
        raise ConversionError(f"--image_size must be at least 64, got {image_size}")
    if num_train < 1 or num_val < 0:
        raise ConversionError("--num_train must be at least 1 and --num_val at least 0")
    chosen = SCENES[scene]
    atomic_write(os.path.join(output_dir, "label_map.yaml"),
                 chosen.label_map.to_yaml())
    lines = [f"{scene} dataset in {output_dir} (seed {seed}, "
             f"{image_size}x{image_size})"]
    for split, count in (("train", num_train), ("val", num_val)):
        if count:
            counts = write_split(output_dir, split, count, seed, image_size,
                                 chosen)
            boxes = ", ".join(f"{n} {name}s" for name, n in counts.items())
            lines.append(f"  {split}: {count} images, {boxes}")
    return "\n".join(lines)
