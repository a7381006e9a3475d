"""Geometry of one training or eval image: normalise, flip, scale, crop, pad.

These reproduce automl's ``DetectionInputProcessor`` step for step, because
the official checkpoints were trained (and are evaluated) on exactly this
input, and the export path (:mod:`efficientdet_tf.ops.preprocess`) does the same
normalise -> resize -> pad:

1. normalise per channel with ``mean_rgb`` / ``stddev_rgb`` on the 0-255
   scale, *before* resizing, so the zero padding of step 4 is the mean colour;
2. (training) flip left-right with probability 1/2;
3. resize bilinearly to fit a target size keeping the aspect ratio. In eval
   the target is the network input; in training it is the network input
   times a random factor in ``[jitter_min, jitter_max]`` (scale jitter);
4. crop the network-input size out of the resized image at a random offset
   (training; the offset is 0 when the resized image is smaller) and pad
   bottom/right with zeros.

Boxes follow the same map. Like automl, a normalised box is scaled by the
*integer* resized size (the image content really lands there, since the
resize maps the full extent to the full extent), so boxes equal
``original pixels * scale`` up to the truncation of the resized size to whole
pixels (< 1 pixel).

One deliberate difference: boxes are clipped to the crop window
``[0, H] x [0, W]``, where automl clips to ``H - 1`` / ``W - 1`` and so
shrinks every box touching the bottom or right edge by up to a pixel.

Everything is pure TF on one image so it runs inside ``tf.data.Dataset.map``;
randomness is stateless (an explicit seed per image) so a seeded pipeline
gives the same batches every run.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import tensorflow as tf


class Geometry(NamedTuple):
    """How one original image maps into the network input.

    ``scale``: float32 ``[]``, network-input pixels per original pixel.
    ``scaled_size``: int32 ``[2]``, (height, width) of the resized image
    before cropping. ``offset``: int32 ``[2]``, (y, x) of the crop's top-left
    corner in the resized image.
    """
    scale: tf.Tensor
    scaled_size: tf.Tensor
    offset: tf.Tensor


class Augmentation(NamedTuple):
    """The random draws of one training image (see :func:`sample_augmentation`).

    ``flip``: bool ``[]``. ``jitter``: float32 ``[]``, the factor applied to
    the target size. ``crop_fraction``: float32 ``[2]`` in [0, 1), where the
    crop starts within the free range (y, x).
    """
    flip: tf.Tensor
    jitter: tf.Tensor
    crop_fraction: tf.Tensor


def normalize_image(image: tf.Tensor, mean_rgb: float | Sequence[float],
                    stddev_rgb: float | Sequence[float]) -> tf.Tensor:
    """0-255 image (any real dtype) -> float32 ``(image - mean) / stddev``.

    ``mean_rgb`` / ``stddev_rgb`` are per-channel lists (ImageNet x 255) or
    scalars (the lite models' 127 / 128).
    """
    image = tf.cast(image, tf.float32)
    return ((image - tf.constant(mean_rgb, tf.float32)) /
            tf.constant(stddev_rgb, tf.float32))


def flip_left_right(image: tf.Tensor, boxes: tf.Tensor
                    ) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirrors ``image`` ``[h, w, C]`` and normalised yxyx ``boxes`` ``[N, 4]``:
    ``x -> 1 - x``, swapping xmin and xmax so boxes stay well formed."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    flipped = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)
    return tf.image.flip_left_right(image), flipped


def sample_augmentation(seed: tf.Tensor, jitter_min: float, jitter_max: float,
                        allow_flip: bool) -> Augmentation:
    """Draws one image's flip, jitter factor and crop position from ``seed``
    (shape ``[2]``, int32/int64), statelessly: the same seed, the same draw."""
    flip_seed, jitter_seed, crop_seed = tf.unstack(tf.random.split(seed, 3))
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    return Augmentation(
        flip=tf.logical_and(flip, allow_flip),
        jitter=tf.random.stateless_uniform([], jitter_seed, jitter_min,
                                           jitter_max),
        crop_fraction=tf.random.stateless_uniform([2], crop_seed))


def scale_geometry(image_size: tf.Tensor, output_size: tuple[int, int],
                   jitter: tf.Tensor | float = 1.0,
                   crop_fraction: tf.Tensor | Sequence[float] = (0.0, 0.0)
                   ) -> Geometry:
    """Where an image of ``image_size`` (h, w) lands in ``output_size`` (H, W).

    The target is ``int(jitter * (H, W))``; the image is scaled by the
    smaller of target/h and target/w so it fits, its size truncated to whole
    pixels (at least 1), and the crop starts ``int(crop_fraction * max(0,
    scaled - output))`` into it. ``jitter=1`` and no crop is the eval
    geometry (scale = min(H/h, W/w), offset 0); the float32 arithmetic is in
    automl's order so sizes and scales are the ones it computes.
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
    """Bilinear resize to ``geometry.scaled_size`` (half-pixel centres, no
    antialiasing, as automl), crop ``output_size`` at ``geometry.offset``,
    zero-pad bottom/right -> float32 ``[H, W, C]``."""
    height, width = output_size
    resized = tf.image.resize(image, geometry.scaled_size,
                              method=tf.image.ResizeMethod.BILINEAR)
    top, left = geometry.offset[0], geometry.offset[1]
    cropped = resized[top:top + height, left:left + width, :]
    padded = tf.image.pad_to_bounding_box(cropped, 0, 0, height, width)
    return tf.ensure_shape(padded, [height, width, image.shape[-1]])


def transform_boxes(boxes: tf.Tensor, geometry: Geometry,
                    output_size: tuple[int, int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Normalised yxyx ``[N, 4]`` -> network-input pixel boxes and a keep mask.

    Boxes are scaled by the resized size, shifted by the crop offset and
    clipped to the crop window; ``keep`` ``[N]`` is false for boxes left with
    no area (outside the crop, or degenerate to begin with), which callers
    drop together with their classes.
    """
    height, width = output_size
    scaled = tf.cast(tf.tile(geometry.scaled_size, [2]), tf.float32)
    shift = tf.cast(tf.tile(geometry.offset, [2]), tf.float32)
    pixels = tf.reshape(boxes, [-1, 4]) * scaled - shift
    pixels = tf.clip_by_value(
        pixels, 0.0, tf.constant([height, width, height, width], tf.float32))
    keep = (pixels[:, 2] > pixels[:, 0]) & (pixels[:, 3] > pixels[:, 1])
    return pixels, keep
