"""GridMask (Chen et al. 2020, arXiv:2001.04086) as automl's detection input
applies it with ``grid_mask: true``.

GridMask hides a regular grid of square cells so the network cannot rely on
any single part of an object. The kept pixels form horizontal and vertical
stripes of width ``l`` repeating every ``d`` pixels; the hidden cells are the
``(d - l) x (d - l)`` squares between them, so about ``(1 - ratio)^2`` of the
image is hidden (16% at automl's ``ratio = 0.6``). The grid is rotated about
the image centre.

automl's draws, which :func:`gridmask` reproduces by default:

- period ``d``: a whole number of pixels, uniform between ``0.5 * height``
  and ``0.3 * width`` (whichever is smaller is the lower bound);
- stripe width ``l = round(d * ratio)``, kept within ``[1, d - 1]``;
- the grid's offset along each axis: uniform within one period;
- rotation: ``rotate * (z - 1)`` degrees with ``z`` standard normal (automl
  draws ``normal(mean=-1, stddev=1)``), i.e. mean -10, spread 10 degrees;
- whether to mask at all: automl compares a standard normal draw with
  ``prob = 0.5``, which is true with probability Phi(0.5) ~ 0.69; the
  default :data:`AUTOML_PROB` is that effective rate;
- hidden pixels become 0, black on the decoded image.

Boxes are left as they are, as in automl, even that of a small object a
hidden cell covers entirely (cells are ~0.1 to 0.2 of the image side): the
mask is a regulariser on the pixels, not a change of the scene.

Where it runs: automl masks the decoded image at its original size, before
normalisation, flip and resize, so the period follows the original
resolution and the hidden pixels are black. Calling :func:`gridmask` at that
point of :func:`efficientdet_tf.data.pipeline.parse_example` gives the same
augmentation.

Differences that are deliberate: the rotated grid is evaluated exactly at
each pixel centre instead of rotating a larger rasterised 0/1 mask with
bilinear interpolation (same pattern up to stripe-edge pixels, no oversized
mask, no TF Addons); the periodic grid covers the whole image, where automl's
stripes start at a random row up to one period in (so its first gap can be
up to ``d`` wide); and the period is at least 2 pixels so a tiny image is not
hidden entirely. Randomness is stateless: the same seed, the same mask.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

from efficientdet_tf.config import ConfigError

# P(z < 0.5) for a standard normal z: how often automl's GridMask masks.
AUTOML_PROB = 0.5 * (1.0 + math.erf(0.5 / math.sqrt(2.0)))


class GridDraw(NamedTuple):
    """The random draws of one image's GridMask (see :func:`sample_grid`).

    ``apply``: bool ``[]``. ``period`` / ``length``: int32 ``[]``, ``d`` and
    ``l`` in pixels. ``phase``: int32 ``[2]``, the (y, x) offset of the kept
    stripes within a period. ``angle``: float32 ``[]``, radians.
    """
    apply: tf.Tensor
    period: tf.Tensor
    length: tf.Tensor
    phase: tf.Tensor
    angle: tf.Tensor


def grid_keep_mask(height: int | tf.Tensor, width: int | tf.Tensor,
                   period: int | tf.Tensor, length: int | tf.Tensor,
                   phase: tf.Tensor | tuple[int, int],
                   angle: float | tf.Tensor) -> tf.Tensor:
    """bool ``[height, width]``: true where the rotated grid keeps the pixel.

    A point ``(gy, gx)`` of the grid is kept when ``(gy - phase_y) mod
    period < length`` or ``(gx - phase_x) mod period < length``. Pixel
    ``(y, x)`` looks up the grid point it lands on after rotating by
    ``angle`` about the image centre, so with ``angle = 0`` the grid point is
    the pixel itself and the pattern can be counted by hand.
    """
    period = tf.cast(period, tf.float32)
    length = tf.cast(length, tf.float32)
    phase = tf.cast(phase, tf.float32)
    angle = tf.cast(angle, tf.float32)
    center_y = (tf.cast(height, tf.float32) - 1.0) / 2.0
    center_x = (tf.cast(width, tf.float32) - 1.0) / 2.0
    y = tf.range(tf.cast(height, tf.float32))[:, None] - center_y
    x = tf.range(tf.cast(width, tf.float32))[None, :] - center_x
    cos, sin = tf.cos(angle), tf.sin(angle)
    grid_y = center_y + sin * x + cos * y
    grid_x = center_x + cos * x - sin * y
    in_rows = tf.math.floormod(grid_y - phase[0], period) < length
    in_cols = tf.math.floormod(grid_x - phase[1], period) < length
    return in_rows | in_cols


def sample_grid(seed: tf.Tensor, height: int | tf.Tensor,
                width: int | tf.Tensor, *, prob: float = AUTOML_PROB,
                ratio: float = 0.6, rotate: float = 10.0) -> GridDraw:
    """Draws one image's GridMask from ``seed`` (int ``[2]``) as automl does
    (module docstring), statelessly."""
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"GridMask ratio must be in (0, 1), got {ratio}")
    apply_seed, period_seed, phase_seed, angle_seed = tf.unstack(
        tf.random.split(seed, 4))
    bound_a = tf.cast(0.5 * tf.cast(height, tf.float32), tf.int32)
    bound_b = tf.cast(0.3 * tf.cast(width, tf.float32), tf.int32)
    low = tf.maximum(tf.minimum(bound_a, bound_b), 2)
    high = tf.maximum(tf.maximum(bound_a, bound_b), low)
    period = tf.random.stateless_uniform([], period_seed, low, high + 1,
                                         dtype=tf.int32)
    length = tf.clip_by_value(
        tf.cast(tf.cast(period, tf.float32) * ratio + 0.5, tf.int32),
        1, period - 1)
    phase = tf.cast(tf.random.stateless_uniform([2], phase_seed) *
                    tf.cast(period, tf.float32), tf.int32)
    degrees = rotate * (tf.random.stateless_normal([], angle_seed) - 1.0)
    return GridDraw(
        apply=tf.random.stateless_uniform([], apply_seed) < prob,
        period=period, length=length, phase=phase,
        angle=degrees * (math.pi / 180.0))


def gridmask(image: tf.Tensor, seed: tf.Tensor, *, prob: float = AUTOML_PROB,
             ratio: float = 0.6, rotate: float = 10.0,
             fill_value: float = 0.0) -> tf.Tensor:
    """``image`` ``[H, W, C]`` (any dtype, any H and W) with, with
    probability ``prob``, a rotated grid of cells set to ``fill_value``.

    ``seed``: int ``[2]``. Boxes are unaffected, so none are taken. Applied
    after normalisation instead of on the decoded image, pass the normalised
    value of black as ``fill_value`` to hide pixels the same way.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    draw = sample_grid(seed, height, width, prob=prob, ratio=ratio,
                       rotate=rotate)

    def masked() -> tf.Tensor:
        keep = grid_keep_mask(height, width, draw.period, draw.length,
                              draw.phase, draw.angle)
        return tf.where(keep[:, :, None], image,
                        tf.cast(fill_value, image.dtype))

    return tf.cond(draw.apply, masked, lambda: tf.identity(image))
