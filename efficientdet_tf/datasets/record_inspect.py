"""Summarise TFRecord files and draw a few of them, to check a conversion.

Reads the records exactly as training does (``tfrecord.decode_example``), so
what it shows is what the input pipeline will get: decoded image sizes, the
boxes per class, images without boxes, and any box that is not a valid
normalised box. Drawing a few samples with their boxes catches what numbers
do not (a rotated image, x and y swapped, the wrong label map).
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os

import numpy as np
from PIL import Image

from efficientdet_tf.datasets.validation import ConversionError
from efficientdet_tf.utils.files import atomic_write
from efficientdet_tf.utils.visualize import draw_detections


@dataclasses.dataclass
class RecordStats:
    """Counts over the records read."""
    files: list[str]
    images: int = 0
    empty_images: int = 0
    crowd: int = 0
    invalid_boxes: int = 0  # outside [0, 1] or min > max
    boxes: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)  # (label, text) -> count
    sizes: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)  # (height, width) -> images
    per_image: list[int] = dataclasses.field(default_factory=list)
    keys: list[str] = dataclasses.field(default_factory=list)
    samples: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        counts = np.asarray(self.per_image or [0])
        lines = [f"files: {len(self.files)} ({', '.join(self.files[:3])}"
                 f"{', ...' if len(self.files) > 3 else ''})",
                 f"images: {self.images} ({self.empty_images} without boxes)",
                 f"boxes: {int(counts.sum())} ({counts.min()}-{counts.max()} "
                 f"per image, mean {counts.mean():.2f}); crowd: {self.crowd}"]
        if self.invalid_boxes:
            lines.append(f"INVALID boxes (outside [0, 1] or min > max): "
                         f"{self.invalid_boxes}")
        lines.append("boxes per class:")
        lines += [f"  {label:>4} {text:<20} {n}"
                  for (label, text), n in sorted(self.boxes.items())]
        lines.append("image sizes (height x width):")
        lines += [f"  {h}x{w}: {n}" for (h, w), n in self.sizes.most_common(10)]
        if len(self.sizes) > 10:
            lines.append(f"  ... {len(self.sizes) - 10} more sizes")
        lines.append(f"features: {', '.join(self.keys)}")
        lines += [f"sample: {path}" for path in self.samples]
        return "\n".join(lines)


def inspect_records(file_pattern: str, output_dir: str | None = None,
                    num_samples: int = 4, max_records: int = 0) -> RecordStats:
    """Reads the records matching ``file_pattern`` (a glob, or several joined
    by commas); draws the first ``num_samples`` to PNGs in ``output_dir``.
    ``max_records`` > 0 stops early on big sets."""
    import tensorflow as tf

    from efficientdet_tf.datasets.record_check import tf_error_reason
    from efficientdet_tf.data.tfrecord import decode_example
    files = sorted({f for p in file_pattern.split(",") if p
                    for f in tf.io.gfile.glob(p)})
    if not files:
        raise ConversionError(f"{file_pattern}: no files match")
    stats = RecordStats(files)
    for path in files:
        dataset = tf.data.TFRecordDataset(path)
        decoded = dataset.map(decode_example,
                              num_parallel_calls=tf.data.AUTOTUNE)
        try:
            if not stats.keys:
                for raw in dataset.take(1):
                    stats.keys = sorted(tf.train.Example.FromString(
                        raw.numpy()).features.feature)
            for example in decoded.as_numpy_iterator():
                _count(stats, example)
                if output_dir and len(stats.samples) < num_samples:
                    stats.samples.append(_draw(example, output_dir,
                                               len(stats.samples)))
                if max_records and stats.images >= max_records:
                    return stats
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise ConversionError(f"{path}: unreadable record or image "
                                  f"({tf_error_reason(e)})") from None
    if not stats.images:
        raise ConversionError(f"{file_pattern}: the files hold no records")
    return stats


def _count(stats: RecordStats, example: dict) -> None:
    boxes = example["boxes"]
    stats.images += 1
    stats.per_image.append(len(boxes))
    stats.empty_images += not len(boxes)
    stats.crowd += int(example["is_crowd"].sum())
    stats.sizes[(int(example["height"]), int(example["width"]))] += 1
    ymin, xmin, ymax, xmax = boxes.T
    stats.invalid_boxes += int(np.sum((boxes < 0).any(-1) | (boxes > 1).any(-1)
                                      | (ymin > ymax) | (xmin > xmax)))
    stats.boxes.update(zip(example["classes"].tolist(), _texts(example)))


def _texts(example: dict) -> list[str]:
    """One class text per box ("" where a record has none)."""
    texts = [t.decode("utf-8", "replace") for t in example["texts"]]
    return (texts + [""] * len(example["boxes"]))[:len(example["boxes"])]


def _draw(example: dict, output_dir: str, index: int) -> str:
    """The image with every box, captioned ``id name``: both, so that a
    label map giving ids the wrong names shows."""
    height, width = example["image"].shape[:2]
    boxes = example["boxes"] * [height, width, height, width]
    captions = {int(label): f"{int(label)} {text}" for label, text in
                zip(example["classes"], _texts(example))}
    image = Image.fromarray(draw_detections(
        example["image"], boxes, example["classes"], label_map=captions,
        max_boxes=len(boxes), line_width=2))
    name = example["filename"].decode("utf-8", "replace") or "image"
    stem = "".join(c if c.isalnum() or c in "-_" else "_"
                   for c in os.path.splitext(os.path.basename(name))[0])
    path = os.path.join(output_dir, f"sample_{index:03d}_{stem}.png")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())
    return path
