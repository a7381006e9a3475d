"""Training augmentation and box geometry of one training or eval image.

The image itself is normalised by :func:`efficientdet_tf.ops.preprocess.
normalize_image` and letterboxed by :mod:`efficientdet_tf.ops.geometry`, the
same code as the export, because the official checkpoints were trained (and
are evaluated) on exactly automl's ``DetectionInputProcessor`` input. This
module adds what only the pipeline needs, in automl's order:

0. (training) on the decoded image: GridMask (``grid_mask``), then the
   AutoAugment policy (``autoaugment_policy``), dropping boxes that leave
   the image;
1. (training) flip left-right with probability 1/2, before resizing;
2. (training) draw the scale jitter in ``[jitter_min, jitter_max]`` and the
   crop position that :func:`~efficientdet_tf.ops.geometry.scale_geometry`
   turns into the resize and crop;
3. map the boxes the way the image was mapped.

Like automl, a normalised box is scaled by the *integer* resized size (the
image content really lands there, since the resize maps the full extent to
the full extent), so boxes equal ``original pixels * scale`` up to the
truncation of the resized size to whole pixels (< 1 pixel).

One deliberate difference: boxes are clipped to the crop window
``[0, H] x [0, W]``, where automl clips to ``H - 1`` / ``W - 1`` and so
shrinks every box touching the bottom or right edge by up to a pixel.

Everything is pure TF on one image so it runs inside ``tf.data.Dataset.map``;
randomness is stateless (an explicit seed per image) so a seeded pipeline
gives the same batches every run.
"""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from efficientdet_tf.config import Config
from efficientdet_tf.data.autoaugment import autoaugment
from efficientdet_tf.data.gridmask import gridmask
from efficientdet_tf.ops.geometry import Geometry


class Augmentation(NamedTuple):
    """The random draws of one training image (see :func:`sample_augmentation`).

    ``flip``: bool ``[]``. ``jitter``: float32 ``[]``, the factor applied to
    the target size. ``crop_fraction``: float32 ``[2]`` in [0, 1), where the
    crop starts within the free range (y, x).
    """
    flip: tf.Tensor
    jitter: tf.Tensor
    crop_fraction: tf.Tensor


def automl_policies(image: tf.Tensor, boxes: tf.Tensor, config: Config,
                    seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Step 0 on the decoded uint8 image ``[h, w, 3]`` and normalised yxyx
    ``boxes`` ``[N, 4]``: returns both and ``keep`` ``[N]`` (false for boxes
    the policy moved out of the image; callers drop their rows).

    Their seeds are folded out of ``seed`` rather than split from it, so
    switching them on leaves the flip, jitter and crop drawn from the same
    ``seed`` unchanged.
    """
    if config.grid_mask:
        image = gridmask(image, tf.random.fold_in(seed, 1))
    keep = tf.ones_like(boxes[:, 0], tf.bool)
    if config.autoaugment_policy:
        image, boxes, keep = autoaugment(image, boxes, config.autoaugment_policy,
                                         tf.random.fold_in(seed, 2))
    return image, boxes, keep


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
