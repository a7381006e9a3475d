"""Pixel operations of the AutoAugment detection policies: image in, image out.

Each function takes one uint8 image ``[h, w, 3]`` (any size) and returns a
uint8 image of the same shape; none reads or moves boxes, so
:mod:`efficientdet_tf.data.autoaugment` passes boxes through unchanged (and
:mod:`efficientdet_tf.data.box_aware_ops` reuses Equalize and Cutout inside
single boxes). The arguments are the ops' own parameters (bits, threshold,
blend factor, pad size); turning a policy's magnitude level into them is
:mod:`~efficientdet_tf.data.autoaugment`'s job.

The ops follow the definitions of google/automl's detection AutoAugment,
which imitate Pillow's ``ImageOps`` / ``ImageEnhance`` in TF: the same
degenerate images, the same float-to-uint8 truncation, the same grey (128)
for filled areas. Being pure TF on one image, they run inside
``tf.data.Dataset.map``; the only random op, :func:`cutout`, draws from an
explicit stateless seed so a seeded pipeline repeats itself.
"""
from __future__ import annotations

import tensorflow as tf

# The grey that every op leaving "empty" pixels writes (cutouts, the areas a
# rotation or translation uncovers): automl's choice, mid-range so that the
# filled areas do not shift the statistics that later ops (Equalize,
# AutoContrast) compute.
FILL_VALUE = 128

# Pillow's SMOOTH filter, the degenerate image of Sharpness.
_SMOOTH_KERNEL = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))
_SMOOTH_SUM = 13.0


def blend(degenerate: tf.Tensor, image: tf.Tensor,
          factor: float | tf.Tensor) -> tf.Tensor:
    """``degenerate + factor * (image - degenerate)``, clipped, as uint8.

    Pillow's enhancement rule: factor 0 gives ``degenerate``, 1 the image,
    values above 1 push the image away from the degenerate one. The result is
    truncated to integers, as automl's cast does (clipping first changes
    nothing when the factor is in [0, 1], so one expression serves all).
    """
    low = tf.cast(degenerate, tf.float32)
    mixed = low + factor * (tf.cast(image, tf.float32) - low)
    return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """Stretches each channel linearly so its darkest value becomes 0 and its
    brightest 255; a flat channel is left alone.

    Computed as ``x * scale + offset`` (not ``(x - lo) * scale``): the order
    automl uses, which decides where the truncation to integers falls.
    """
    values = tf.cast(image, tf.float32)
    low = tf.reduce_min(values, axis=[0, 1])
    high = tf.reduce_max(values, axis=[0, 1])
    spread = high > low
    scale = 255.0 / tf.where(spread, high - low, 1.0)
    stretched = tf.cast(
        tf.clip_by_value(values * scale - low * scale, 0.0, 255.0), tf.uint8)
    return tf.where(spread, stretched, image)


def equalize(image: tf.Tensor) -> tf.Tensor:
    """Pillow's histogram equalisation, each channel on its own.

    Per channel: ``step = (pixels - count of the brightest value) // 255``;
    value ``v`` maps to ``(pixels darker than v + step // 2) // step``,
    clipped to 255. A channel with ``step == 0`` (nearly flat) is unchanged.
    """
    values = tf.cast(image, tf.int32)
    channel_offsets = tf.range(3) * 256
    # One bincount for all channels: channel c counts in [256c, 256c + 256).
    counts = tf.reshape(
        tf.math.bincount(tf.reshape(values + channel_offsets, [-1]),
                         minlength=768, maxlength=768), [3, 256])
    brightest = tf.reduce_max(values, axis=[0, 1])
    brightest_count = tf.gather(counts, brightest, batch_dims=1)
    step = (tf.reduce_sum(counts, axis=1) - brightest_count) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    darker = tf.cumsum(counts, axis=1, exclusive=True)
    lut = tf.minimum((darker + safe_step // 2) // safe_step, 255)
    lut = tf.where((step > 0)[:, None], lut, tf.range(256)[None, :])
    equalized = tf.gather(tf.reshape(lut, [-1]), values + channel_offsets)
    return tf.cast(equalized, tf.uint8)


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
    """Keeps the ``bits`` (0..8) most significant bits of every value."""
    if not 0 <= bits <= 8:
        raise ValueError(f"posterize keeps 0..8 bits, got {bits}")
    mask = (0xFF << (8 - bits)) & 0xFF
    return tf.bitwise.bitwise_and(image, tf.constant(mask, tf.uint8))


def solarize(image: tf.Tensor, threshold: int | tf.Tensor) -> tf.Tensor:
    """Inverts (``255 - v``) every value ``v >= threshold``.

    The comparison is in int32, so a threshold of 256 or more (automl's
    magnitudes reach 384) leaves the image unchanged instead of wrapping
    around in uint8.
    """
    invert = tf.cast(image, tf.int32) >= threshold
    return tf.where(invert, 255 - image, image)


def solarize_add(image: tf.Tensor, addition: int | tf.Tensor,
                 threshold: int = 128) -> tf.Tensor:
    """Adds ``addition`` (clipped to 0..255) to every value below
    ``threshold``; brighter values are kept."""
    values = tf.cast(image, tf.int32)
    added = tf.cast(tf.clip_by_value(values + addition, 0, 255), tf.uint8)
    return tf.where(values < threshold, added, image)


def color(image: tf.Tensor, factor: float | tf.Tensor) -> tf.Tensor:
    """Pillow's Color (saturation): blends with the image's grey version.

    The grey is broadcast to three channels rather than passed through
    ``tf.image.grayscale_to_rgb``, whose shape asserts are stateful ops: a
    ``tf.data`` iterator whose map holds one cannot be checkpointed, which
    broke ``--deterministic`` runs (they save the input position).
    """
    grey = tf.broadcast_to(tf.image.rgb_to_grayscale(image), tf.shape(image))
    return blend(grey, image, factor)


def contrast(image: tf.Tensor, factor: float | tf.Tensor) -> tf.Tensor:
    """Pillow's Contrast: blends with a flat image of the mean grey level
    (truncated to an integer, as automl does)."""
    grey = tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)
    mean = tf.cast(tf.clip_by_value(tf.reduce_mean(grey), 0.0, 255.0),
                   tf.uint8)
    return blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor: float | tf.Tensor) -> tf.Tensor:
    """Pillow's Brightness: blends with black, i.e. scales every value."""
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: float | tf.Tensor) -> tf.Tensor:
    """Pillow's Sharpness: blends with a smoothed copy.

    The smoothed copy is the 3x3 SMOOTH filter over the interior (truncated
    to uint8); the one-pixel border, which the filter cannot reach, keeps
    the original values, so factors only change the interior.
    """
    kernel = tf.constant(_SMOOTH_KERNEL, tf.float32) / _SMOOTH_SUM
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smoothed = tf.nn.depthwise_conv2d(
        tf.cast(image, tf.float32)[None], kernel, strides=[1, 1, 1, 1],
        padding="VALID")[0]
    smoothed = tf.cast(tf.clip_by_value(smoothed, 0.0, 255.0), tf.uint8)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    interior = rectangle_mask(height, width, 1, 1, height - 1, width - 1)
    padded = tf.pad(smoothed, [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(interior[:, :, None], padded, image)
    return blend(degenerate, image, factor)


def cutout(image: tf.Tensor, pad_size: int | tf.Tensor,
           seed: tf.Tensor) -> tf.Tensor:
    """Greys out a ``2 * pad_size`` square centred on a uniformly random pixel
    (drawn from ``seed``, int ``[2]``); the square is cut off at the image
    border, so near the edges less than that is covered."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    y_seed, x_seed = tf.unstack(tf.random.split(seed, 2))
    centre_y = tf.random.stateless_uniform([], y_seed, 0, height, tf.int32)
    centre_x = tf.random.stateless_uniform([], x_seed, 0, width, tf.int32)
    return fill_rectangle(image, centre_y - pad_size, centre_x - pad_size,
                          centre_y + pad_size, centre_x + pad_size)


def fill_rectangle(image: tf.Tensor, top: tf.Tensor, left: tf.Tensor,
                   bottom: tf.Tensor, right: tf.Tensor,
                   value: int = FILL_VALUE) -> tf.Tensor:
    """``image`` with rows ``[top, bottom)`` x columns ``[left, right)`` set to
    ``value``; the bounds may lie outside the image (that part is ignored)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    inside = rectangle_mask(height, width, top, left, bottom, right)
    return tf.where(inside[:, :, None], tf.constant(value, image.dtype), image)


def rectangle_mask(height: tf.Tensor, width: tf.Tensor, top: tf.Tensor,
                   left: tf.Tensor, bottom: tf.Tensor,
                   right: tf.Tensor) -> tf.Tensor:
    """bool ``[height, width]``: true on rows ``[top, bottom)`` x columns
    ``[left, right)``. Comparing indices (rather than padding a block)
    accepts bounds outside the image and empty rectangles alike."""
    rows = tf.range(height)
    columns = tf.range(width)
    in_rows = (rows >= top) & (rows < bottom)
    in_columns = (columns >= left) & (columns < right)
    return in_rows[:, None] & in_columns[None, :]
