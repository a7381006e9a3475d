"""Inference preprocessing: the official normalise -> resize -> pad, in TF.

automl's inference input path (``DetectionInputProcessor`` with
``set_scale_factors_to_output_size``) does, in this order:

1. cast to float and normalise per channel with ``mean_rgb`` / ``stddev_rgb``
   on the 0-255 scale (so padding below is 0 in normalised space, not black);
2. resize bilinearly (``tf.image.resize``, half-pixel centres, no
   antialiasing) by ``scale = min(H / h, W / w)`` to ``int(h * scale)`` x
   ``int(w * scale)``, keeping the aspect ratio;
3. pad bottom and right with zeros to the network's ``H x W``.

The factor reported back is ``1 / scale`` (automl's "image scale to
original"): multiplying network-pixel boxes by it gives boxes in pixels of the
original image. All arithmetic is float32 in the same order as automl's, so
the resized size and the factor are bit-identical to its own.

Pure TF with dynamic input shapes: it runs eagerly, in a ``tf.function`` and
in an exported SavedModel (the export's ``serving_default`` uses it).
"""
from __future__ import annotations

from typing import Any, Sequence

import tensorflow as tf

from efficientdet_tf.config import parse_image_size


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
    height, width = parse_image_size(image_size)
    image = tf.convert_to_tensor(image)
    if image.shape.rank not in (3, 4):
        raise ValueError(f"image must be [h, w, 3] or [B, h, w, 3], got shape "
                         f"{image.shape}")
    image = tf.cast(image, tf.float32)
    image = ((image - tf.constant(mean_rgb, tf.float32)) /
             tf.constant(stddev_rgb, tf.float32))

    shape = tf.shape(image)
    in_h = tf.cast(shape[-3], tf.float32)
    in_w = tf.cast(shape[-2], tf.float32)
    scale = tf.minimum(tf.constant(height, tf.float32) / in_h,
                       tf.constant(width, tf.float32) / in_w)
    scaled_size = tf.stack([tf.cast(in_h * scale, tf.int32),
                            tf.cast(in_w * scale, tf.int32)])
    image = tf.image.resize(image, scaled_size,
                            method=tf.image.ResizeMethod.BILINEAR)
    image = tf.image.pad_to_bounding_box(image, 0, 0, height, width)
    to_original = 1.0 / scale
    if image.shape.rank == 4:
        to_original = tf.fill(tf.shape(image)[:1], to_original)
    return image, to_original
