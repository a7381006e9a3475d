"""Network input preprocessing: the official normalise -> letterbox, in TF.

automl's ``DetectionInputProcessor`` first normalises the image, then
letterboxes it (:mod:`efficientdet_tf.ops.geometry`). The official
checkpoints were trained on that input, so :func:`normalize_image` is the one
normalisation used by the export (through :func:`preprocess_image`) and the
training and eval pipeline (:mod:`efficientdet_tf.data.pipeline`).
Normalising *before* resizing matters: the letterbox's zero padding is then
the mean colour, not black.

:func:`preprocess_image` is the inference input (``set_scale_factors_to_
output_size`` in automl): normalise, resize by ``scale = min(H / h, W / w)``
to ``int(h * scale) x int(w * scale)``, pad bottom and right with zeros to
``H x W``. The factor it reports is ``1 / scale`` (automl's "image scale to
original"): multiplying network-pixel boxes by it gives boxes in pixels of
the original image. All arithmetic is float32 in automl's order, so the
resized size and the factor are bit-identical to its own.

Pure TF with dynamic input shapes: it runs eagerly, in a ``tf.function`` and
in an exported SavedModel (the export's ``serving_default`` uses it).
"""
from __future__ import annotations

from typing import Any, Sequence

import tensorflow as tf

from efficientdet_tf.config import parse_image_size
from efficientdet_tf.ops.geometry import resize_crop_pad, scale_geometry


def normalize_image(image: tf.Tensor, mean_rgb: float | Sequence[float],
                    stddev_rgb: float | Sequence[float]) -> tf.Tensor:
    """0-255 image (any real dtype, any shape ending in channels) -> float32
    ``(image - mean) / stddev``.

    ``mean_rgb`` / ``stddev_rgb`` are per-channel lists (ImageNet x 255) or
    scalars (the lite models' 127 / 128).
    """
    image = tf.cast(image, tf.float32)
    return ((image - tf.constant(mean_rgb, tf.float32)) /
            tf.constant(stddev_rgb, tf.float32))


def preprocess_image(image: tf.Tensor, image_size: Any,
                     mean_rgb: float | Sequence[float],
                     stddev_rgb: float | Sequence[float]
                     ) -> tuple[tf.Tensor, tf.Tensor]:
    """Normalised, resized, padded network input and its scale to the original.

    ``image``: ``[h, w, 3]`` or ``[B, h, w, 3]`` (a batch shares one size),
    any real dtype, 0-255 values (uint8 typically). ``image_size``: the
    network input, an int, ``(height, width)`` or automl's ``"WxH"`` string.
    Returns float32 ``[H, W, 3]`` (``[B, H, W, 3]``) and the float32 factor
    from network pixels to original pixels: ``[]`` for one image, ``[B]``
    for a batch.
    """
    output_size = parse_image_size(image_size)
    image = tf.convert_to_tensor(image)
    if image.shape.rank not in (3, 4):
        raise ValueError(f"image must be [h, w, 3] or [B, h, w, 3], got shape "
                         f"{image.shape}")
    image = normalize_image(image, mean_rgb, stddev_rgb)
    geometry = scale_geometry(tf.shape(image)[-3:-1], output_size)
    image = resize_crop_pad(image, geometry, output_size)
    to_original = 1.0 / geometry.scale
    if image.shape.rank == 4:
        to_original = tf.fill(tf.shape(image)[:1], to_original)
    return image, to_original
