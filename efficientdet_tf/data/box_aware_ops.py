"""Operations of the AutoAugment detection policies that read or move boxes.

Every function takes one uint8 image ``[h, w, 3]`` (any size) and float32
normalised ``(ymin, xmin, ymax, xmax)`` boxes ``[N, 4]`` and returns both,
the image uint8 of the same shape:

* whole-image geometry (:func:`translate_x`, :func:`translate_y`,
  :func:`shear_x`, :func:`shear_y`, :func:`rotate`): the image is warped and
  each box becomes the smallest box around its four moved corners, clipped
  to the image;
* the ``*_Only_BBoxes`` family (:func:`translate_y_only_bboxes`, ...): an op
  applied to the pixels inside each box, each box independently with
  probability ``prob``, in a random order; the boxes are returned unchanged;
* :func:`box_cutout`: a cutout centred inside one random box.

Geometry is in continuous pixel coordinates, pixel ``(i, j)`` covering
``[j, j + 1] x [i, i + 1]`` (x right, y down), which is the frame a
normalised box times the image size lives in; the image warp samples pixel
centres in the same frame, so image and boxes move exactly together (up to
the nearest-neighbour sampling of the image). Uncovered pixels become
:data:`~efficientdet_tf.data.image_ops.FILL_VALUE`, as in automl. Random
choices draw from an explicit stateless seed (int ``[2]``).
"""
from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

from efficientdet_tf.data import image_ops


def box_area(boxes: tf.Tensor) -> tf.Tensor:
    """``[..., 4]`` yxyx (normalised or pixels) -> areas ``[...]``; an
    inverted box has area 0. The visibility rules of every box-moving
    augmentation compare these."""
    return (tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
            * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0))

# An op run inside one box: (pixels of the box, seed [2]) -> same-shape pixels.
CropOp = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def translation_matrix(dx: float | tf.Tensor,
                       dy: float | tf.Tensor) -> tf.Tensor:
    """Forward affine ``[2, 3]`` (on ``(x, y)`` pixels) moving content by
    ``(dx, dy)`` pixels: right and down for positive values."""
    dx = tf.cast(dx, tf.float32)
    dy = tf.cast(dy, tf.float32)
    return tf.stack([tf.stack([1.0, 0.0, dx]), tf.stack([0.0, 1.0, dy])])


def shear_matrix(level: float | tf.Tensor, horizontal: bool) -> tf.Tensor:
    """Forward affine ``[2, 3]`` of a shear about the top-left image corner:
    ``x -> x + level * y`` when ``horizontal``, else ``y -> y + level * x``."""
    level = tf.cast(level, tf.float32)
    if horizontal:
        return tf.stack([tf.stack([1.0, level, 0.0]), [0.0, 1.0, 0.0]])
    return tf.stack([[1.0, 0.0, 0.0], tf.stack([level, 1.0, 0.0])])


def rotation_matrix(degrees: float | tf.Tensor, height: tf.Tensor,
                    width: tf.Tensor) -> tf.Tensor:
    """Forward affine ``[2, 3]`` rotating by ``degrees`` about the centre of a
    ``height x width`` image, counter-clockwise as seen on screen (the sense
    of automl's image rotation, ``tfa.image.rotate``)."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(radians), tf.sin(radians)
    centre_x = tf.cast(width, tf.float32) / 2.0
    centre_y = tf.cast(height, tf.float32) / 2.0
    # With y pointing down, (dx, dy) -> (cos dx + sin dy, -sin dx + cos dy)
    # turns the picture counter-clockwise.
    return tf.stack([
        tf.stack([cos, sin, centre_x - cos * centre_x - sin * centre_y]),
        tf.stack([-sin, cos, centre_y + sin * centre_x - cos * centre_y]),
    ])


def warp_image(image: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """``image`` moved by the forward affine ``matrix`` (``[2, 3]``, pixel
    coordinates), nearest-neighbour, uncovered pixels filled with grey.

    TF's projective transform maps each *output* pixel index to an input
    position, so this inverts the matrix and shifts it by the half pixel
    between a pixel's index and its centre.
    """
    linear, shift = matrix[:, :2], matrix[:, 2]
    inverse = tf.linalg.inv(linear)
    offset = tf.linalg.matvec(inverse, 0.5 - shift) - 0.5
    transform = tf.concat([inverse[0], offset[:1], inverse[1], offset[1:],
                           tf.zeros([2])], axis=0)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None],
        output_shape=tf.shape(image)[:2],
        fill_value=float(image_ops.FILL_VALUE), interpolation="NEAREST",
        fill_mode="CONSTANT")
    return tf.ensure_shape(warped[0], image.shape)


def warp_boxes(boxes: tf.Tensor, matrix: tf.Tensor, height: tf.Tensor,
               width: tf.Tensor) -> tf.Tensor:
    """Normalised yxyx ``[N, 4]`` -> the boxes around their corners moved by
    ``matrix`` (``[2, 3]``, pixels of a ``height x width`` image), clipped
    to ``[0, 1]``. A box moved fully out of the image comes back with no
    area (all on the border)."""
    size = tf.cast(tf.stack([width, height]), tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    corners = tf.stack([
        tf.stack([xmin, ymin], axis=-1), tf.stack([xmax, ymin], axis=-1),
        tf.stack([xmin, ymax], axis=-1), tf.stack([xmax, ymax], axis=-1),
    ], axis=1) * size
    moved = tf.einsum("nkj,ij->nki", corners, matrix[:, :2]) + matrix[:, 2]
    low = tf.reduce_min(moved, axis=1) / size
    high = tf.reduce_max(moved, axis=1) / size
    moved_boxes = tf.stack([low[:, 1], low[:, 0], high[:, 1], high[:, 0]],
                           axis=-1)
    return tf.clip_by_value(moved_boxes, 0.0, 1.0)


def warp(image: tf.Tensor, boxes: tf.Tensor,
         matrix: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Image and boxes moved together by the forward affine ``matrix``."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    return warp_image(image, matrix), warp_boxes(boxes, matrix, height, width)


def translate_x(image: tf.Tensor, boxes: tf.Tensor,
                pixels: float | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Moves image and boxes ``pixels`` to the right (left if negative)."""
    return warp(image, boxes, translation_matrix(pixels, 0.0))


def translate_y(image: tf.Tensor, boxes: tf.Tensor,
                pixels: float | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Moves image and boxes ``pixels`` down (up if negative)."""
    return warp(image, boxes, translation_matrix(0.0, pixels))


def shear_x(image: tf.Tensor, boxes: tf.Tensor,
            level: float | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Shears along x: the point ``(x, y)`` moves to ``(x + level * y, y)``."""
    return warp(image, boxes, shear_matrix(level, horizontal=True))


def shear_y(image: tf.Tensor, boxes: tf.Tensor,
            level: float | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Shears along y: the point ``(x, y)`` moves to ``(x, y + level * x)``."""
    return warp(image, boxes, shear_matrix(level, horizontal=False))


def rotate(image: tf.Tensor, boxes: tf.Tensor,
           degrees: float | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Rotates image and boxes counter-clockwise about the image centre."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    return warp(image, boxes, rotation_matrix(degrees, height, width))


def pixel_regions(boxes: tf.Tensor, height: tf.Tensor,
                  width: tf.Tensor) -> tf.Tensor:
    """int32 ``[N, 4]`` (top, left, bottom, right): the pixels whose centres
    lie inside each normalised box, rows ``[top, bottom)`` and columns
    ``[left, right)``; empty for a box thinner than a pixel."""
    size = tf.cast(tf.stack([height, width, height, width]), tf.float32)
    edges = tf.cast(tf.round(boxes * size), tf.int32)
    return tf.clip_by_value(edges, 0, tf.cast(size, tf.int32))


def inside_boxes(image: tf.Tensor, boxes: tf.Tensor, crop_op: CropOp,
                 prob: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """``image`` with ``crop_op`` applied to the pixels of each box, each box
    chosen independently with probability ``prob``.

    Boxes are visited in a random order, as in automl: where boxes overlap,
    a later box's op sees (and may move) what an earlier one produced.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    count = tf.shape(boxes)[0]
    choose_seed, order_seed, crop_seed = tf.unstack(tf.random.split(seed, 3))
    chosen = tf.random.stateless_uniform([count], choose_seed) < prob
    order = tf.random.experimental.stateless_shuffle(tf.range(count),
                                                     order_seed)
    crop_seeds = tf.random.split(crop_seed, count)
    regions = pixel_regions(boxes, height, width)

    def apply_to(index: tf.Tensor, current: tf.Tensor) -> tf.Tensor:
        top, left, bottom, right = tf.unstack(regions[index])
        crop = crop_op(current[top:bottom, left:right], crop_seeds[index])
        placed = tf.pad(crop, [[top, height - bottom], [left, width - right],
                               [0, 0]])
        inside = image_ops.rectangle_mask(height, width, top, left, bottom,
                                          right)
        return tf.ensure_shape(tf.where(inside[:, :, None], placed, current),
                               image.shape)

    def visit(step: tf.Tensor,
              current: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        index = order[step]
        top, left, bottom, right = tf.unstack(regions[index])
        run = chosen[index] & (bottom > top) & (right > left)
        current = tf.cond(run, lambda: apply_to(index, current),
                          lambda: current)
        return step + 1, current

    _, image = tf.while_loop(lambda step, _: step < count, visit,
                             (tf.constant(0), image))
    return image


def _warp_inside_boxes(image: tf.Tensor, boxes: tf.Tensor, matrix: tf.Tensor,
                       prob: float | tf.Tensor,
                       seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The content of each chosen box moved by ``matrix`` (in the box's own
    pixel frame) and cut off at the box's edges; boxes unchanged."""
    return inside_boxes(image, boxes, lambda crop, _: warp_image(crop, matrix),
                        prob, seed), boxes


def translate_y_only_bboxes(image: tf.Tensor, boxes: tf.Tensor,
                            pixels: float | tf.Tensor, prob: float | tf.Tensor,
                            seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Moves the content of each chosen box ``pixels`` down within the box
    (what leaves the box is lost, what is uncovered turns grey)."""
    return _warp_inside_boxes(image, boxes, translation_matrix(0.0, pixels),
                              prob, seed)


def shear_x_only_bboxes(image: tf.Tensor, boxes: tf.Tensor,
                        level: float | tf.Tensor, prob: float | tf.Tensor,
                        seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Shears the content of each chosen box along x about the box's
    top-left corner, within the box."""
    return _warp_inside_boxes(image, boxes,
                              shear_matrix(level, horizontal=True), prob, seed)


def shear_y_only_bboxes(image: tf.Tensor, boxes: tf.Tensor,
                        level: float | tf.Tensor, prob: float | tf.Tensor,
                        seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Shears the content of each chosen box along y about the box's
    top-left corner, within the box."""
    return _warp_inside_boxes(image, boxes,
                              shear_matrix(level, horizontal=False), prob,
                              seed)


def flip_only_bboxes(image: tf.Tensor, boxes: tf.Tensor,
                     prob: float | tf.Tensor,
                     seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirrors the content of each chosen box left-right, in place."""
    return inside_boxes(image, boxes, lambda crop, _: crop[:, ::-1], prob,
                        seed), boxes


def equalize_only_bboxes(image: tf.Tensor, boxes: tf.Tensor,
                         prob: float | tf.Tensor,
                         seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Equalizes each chosen box with the histogram of its own pixels."""
    return inside_boxes(image, boxes, lambda crop, _: image_ops.equalize(crop),
                        prob, seed), boxes


def cutout_only_bboxes(image: tf.Tensor, boxes: tf.Tensor,
                       pad_size: int | tf.Tensor, prob: float | tf.Tensor,
                       seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A :func:`~efficientdet_tf.data.image_ops.cutout` of ``pad_size`` inside
    each chosen box, cut off at the box's edges."""
    return inside_boxes(
        image, boxes,
        lambda crop, crop_seed: image_ops.cutout(crop, pad_size, crop_seed),
        prob, seed), boxes


def box_cutout(image: tf.Tensor, boxes: tf.Tensor,
               pad_fraction: float | tf.Tensor,
               seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Greys out a rectangle centred on a random pixel of one random box.

    The rectangle is ``2 * int(pad_fraction * box side / 2)`` pixels on each
    side (so about ``pad_fraction`` of the box's height and width) and may
    reach past the box; the boxes are returned unchanged. Nothing happens
    to an image without boxes.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    count = tf.shape(boxes)[0]

    def cut() -> tf.Tensor:
        pick_seed, y_seed, x_seed = tf.unstack(tf.random.split(seed, 3))
        index = tf.random.stateless_uniform([], pick_seed, 0, count, tf.int32)
        top, left, bottom, right = tf.unstack(
            pixel_regions(boxes[index][None], height, width)[0])
        pad_y = tf.cast(pad_fraction * tf.cast(bottom - top, tf.float32) / 2.0,
                        tf.int32)
        pad_x = tf.cast(pad_fraction * tf.cast(right - left, tf.float32) / 2.0,
                        tf.int32)
        centre_y = tf.random.stateless_uniform(
            [], y_seed, top, tf.maximum(bottom, top + 1), tf.int32)
        centre_x = tf.random.stateless_uniform(
            [], x_seed, left, tf.maximum(right, left + 1), tf.int32)
        return image_ops.fill_rectangle(image, centre_y - pad_y,
                                        centre_x - pad_x, centre_y + pad_y,
                                        centre_x + pad_x)

    return tf.cond(count > 0, cut, lambda: image), boxes
