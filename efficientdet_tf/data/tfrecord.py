"""The TFRecord schema (docs/contracts.md), compatible with google/automl both ways.

One place defines the feature keys, so the converters that write records and
the input pipeline that reads them cannot drift apart. Encoding is plain
Python (converters run outside TensorFlow graphs); decoding is pure TF so it
runs inside ``tf.data``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import tensorflow as tf

# Per-object float/int/bytes lists, in the automl key names.
BBOX_KEYS = ("image/object/bbox/ymin", "image/object/bbox/xmin",
             "image/object/bbox/ymax", "image/object/bbox/xmax")
# The 1-based class id of each object (record_check reads it alone).
CLASS_LABEL_KEY = "image/object/class/label"


@dataclasses.dataclass
class Example:
    """One image and its objects; boxes are normalised yxyx in [0, 1]."""
    encoded: bytes
    height: int
    width: int
    filename: str
    source_id: str
    image_format: str = "jpeg"
    boxes: list[tuple[float, float, float, float]] = dataclasses.field(
        default_factory=list)
    labels: list[int] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    is_crowd: list[int] = dataclasses.field(default_factory=list)
    areas: list[float] = dataclasses.field(default_factory=list)
    difficult: list[int] | None = None
    truncated: list[int] | None = None
    views: list[str] | None = None
    masks: list[bytes] | None = None  # PNG-encoded instance masks (COCO)


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def encode_example(example: Example) -> bytes:
    """Serialises ``example`` as a ``tf.train.Example`` with automl's keys."""
    count = len(example.boxes)
    for name in ("labels", "texts", "is_crowd", "areas"):
        if len(getattr(example, name)) != count:
            raise ValueError(f"{example.filename}: {name} has "
                             f"{len(getattr(example, name))} entries for "
                             f"{count} boxes")
    columns = list(zip(*example.boxes)) if count else [(), (), (), ()]
    features = {
        "image/height": _ints([example.height]),
        "image/width": _ints([example.width]),
        "image/filename": _bytes([example.filename.encode()]),
        "image/source_id": _bytes([example.source_id.encode()]),
        "image/key/sha256": _bytes([
            hashlib.sha256(example.encoded).hexdigest().encode()]),
        "image/encoded": _bytes([example.encoded]),
        "image/format": _bytes([example.image_format.encode()]),
        "image/object/class/text": _bytes([t.encode() for t in example.texts]),
        CLASS_LABEL_KEY: _ints(example.labels),
        "image/object/is_crowd": _ints(example.is_crowd),
        "image/object/area": _floats(example.areas),
    }
    for key, column in zip(BBOX_KEYS, columns):
        features[key] = _floats(column)
    if example.difficult is not None:
        features["image/object/difficult"] = _ints(example.difficult)
    if example.truncated is not None:
        features["image/object/truncated"] = _ints(example.truncated)
    if example.views is not None:
        features["image/object/view"] = _bytes([v.encode() for v in example.views])
    if example.masks is not None:
        features["image/object/mask"] = _bytes(example.masks)
    return tf.train.Example(
        features=tf.train.Features(feature=features)).SerializeToString()


_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/height": tf.io.FixedLenFeature((), tf.int64, -1),
    "image/width": tf.io.FixedLenFeature((), tf.int64, -1),
    "image/filename": tf.io.FixedLenFeature((), tf.string, ""),
    "image/source_id": tf.io.FixedLenFeature((), tf.string, ""),
    CLASS_LABEL_KEY: tf.io.VarLenFeature(tf.int64),
    "image/object/class/text": tf.io.VarLenFeature(tf.string),
    "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
    "image/object/area": tf.io.VarLenFeature(tf.float32),
    **{key: tf.io.VarLenFeature(tf.float32) for key in BBOX_KEYS},
}


# What identifies a record's image, and its bytes: enough to find and
# decode chosen images without parsing their objects.
IMAGE_ID_FEATURES = {key: _FEATURES[key] for key in (
    "image/encoded", "image/filename", "image/source_id")}


def decode_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one record (pure TF, for ``tf.data``).

    Returns ``image`` uint8 ``[H, W, 3]``, ``height``/``width`` int32,
    ``filename``/``source_id`` strings, ``boxes`` float32 ``[N, 4]``
    normalised yxyx, ``classes`` int32 ``[N]`` (1-based), ``texts`` ``[N]``,
    ``is_crowd`` int32 ``[N]`` (zeros when absent) and ``areas`` ``[N]``.
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    dense = {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v
             for k, v in parsed.items()}
    image = tf.io.decode_image(dense["image/encoded"], channels=3,
                               expand_animations=False)
    image.set_shape([None, None, 3])
    boxes = tf.stack([dense[key] for key in BBOX_KEYS], axis=-1)
    classes = tf.cast(dense[CLASS_LABEL_KEY], tf.int32)
    num_boxes = tf.shape(classes)[0]
    is_crowd = tf.cast(dense["image/object/is_crowd"], tf.int32)
    is_crowd = tf.cond(tf.equal(tf.shape(is_crowd)[0], num_boxes),
                       lambda: is_crowd, lambda: tf.zeros_like(classes))
    shape = tf.shape(image)
    return {
        "image": image,
        "height": shape[0],
        "width": shape[1],
        "filename": dense["image/filename"],
        "source_id": dense["image/source_id"],
        "boxes": tf.reshape(boxes, [-1, 4]),
        "classes": classes,
        "texts": dense["image/object/class/text"],
        "is_crowd": is_crowd,
        "areas": dense["image/object/area"],
    }


def shard_path(prefix: str, index: int, num_shards: int) -> str:
    """``{prefix}-00000-of-00004.tfrecord`` (the shard naming automl uses)."""
    return f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"
