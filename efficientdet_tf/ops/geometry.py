"""Letterbox geometry: resize keeping the aspect ratio, crop, pad bottom/right.

This is automl's ``DetectionInputProcessor`` geometry, the input the official
checkpoints were trained and evaluated on, so it is written once, here, and
every path that feeds the network uses it: the export's
:func:`~efficientdet_tf.ops.preprocess.preprocess_image`, the training and
eval pipeline (:mod:`efficientdet_tf.data.pipeline`, which adds scale jitter
and a random crop), and TFLite's client-side letterbox, which must land the
image on the same pixels for the network-pixel boxes to map back correctly.

1. Resize bilinearly (``tf.image.resize``: half-pixel centres, no
   antialiasing) to fit a target size keeping the aspect ratio. The target is
   the network input ``H x W`` times a jitter factor (1 outside training).
2. Crop ``H x W`` out of the resized image at an offset (0 outside training,
   and whenever the resized image is no larger than the network input).
3. Pad bottom and right with zeros to ``H x W``.

The scale and resized size are computed in float32 in automl's order, so they
are bit-identical to the ones it computes: with jitter 1 and no crop,
``scale = min(H / h, W / w)`` and the resized size is
``int(h * scale) x int(w * scale)`` (truncated).

Pure TF with dynamic shapes: it runs eagerly, in ``tf.data.Dataset.map``, in a
``tf.function`` and in an exported SavedModel.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import tensorflow as tf


class Geometry(NamedTuple):
    """How an original image maps into the network input.

    ``scale``: float32 ``[]``, network-input pixels per original pixel.
    ``scaled_size``: int32 ``[2]``, (height, width) of the resized image
    before cropping. ``offset``: int32 ``[2]``, (y, x) of the crop's top-left
    corner in the resized image.
    """
    scale: tf.Tensor
    scaled_size: tf.Tensor
    offset: tf.Tensor


def scale_geometry(image_size: tf.Tensor, output_size: tuple[int, int],
                   jitter: tf.Tensor | float = 1.0,
                   crop_fraction: tf.Tensor | Sequence[float] = (0.0, 0.0)
                   ) -> Geometry:
    """Where an image of ``image_size`` (h, w) lands in ``output_size`` (H, W).

    The target is ``int(jitter * (H, W))``; the image is scaled by the
    smaller of target/h and target/w so it fits, its size truncated to whole
    pixels (at least 1, so a sliver of an image still resizes), and the crop
    starts ``int(crop_fraction * max(0, scaled - output))`` into it.
    ``jitter=1`` and no crop is the eval and export geometry
    (scale = min(H/h, W/w), offset 0).
    """
    size = tf.cast(image_size, tf.float32)
    output = tf.constant(output_size, tf.float32)
    target = tf.cast(tf.cast(jitter * output, tf.int32), tf.float32)
    scale = tf.reduce_min(target / size)
    scaled_size = tf.maximum(tf.cast(size * scale, tf.int32), 1)
    free = tf.maximum(0.0, tf.cast(scaled_size, tf.float32) - output)
    offset = tf.cast(free * tf.cast(crop_fraction, tf.float32), tf.int32)
    return Geometry(scale=scale, scaled_size=scaled_size, offset=offset)


def resize_crop_pad(image: tf.Tensor, geometry: Geometry,
                    output_size: tuple[int, int]) -> tf.Tensor:
    """``[h, w, C]`` or ``[B, h, w, C]`` (a batch sharing one geometry) ->
    float32 ``[H, W, C]`` / ``[B, H, W, C]``.

    Bilinear resize to ``geometry.scaled_size``, crop ``output_size`` at
    ``geometry.offset``, zero-pad bottom/right.
    """
    height, width = output_size
    resized = tf.image.resize(image, geometry.scaled_size,
                              method=tf.image.ResizeMethod.BILINEAR)
    top, left = geometry.offset[0], geometry.offset[1]
    cropped = resized[..., top:top + height, left:left + width, :]
    padded = tf.image.pad_to_bounding_box(cropped, 0, 0, height, width)
    return tf.ensure_shape(padded, resized.shape[:-3].concatenate(
        [height, width, resized.shape[-1]]))
