"""Multi-image training augmentations: Mosaic, MixUp and CutMix.

They sit between the per-image letterbox and anchor labeling in the training
pipeline: a group of ``k`` letterboxed images (``Dataset.batch(k,
drop_remainder=True)``, all ``H x W``, boxes in network-input pixels) becomes
one image with its boxes, which is then labelled like any other. Inputs:

- ``images``: ``[k, H, W, C]``, float32 (normalised) or uint8; ``H != W`` is
  fine;
- ``boxes``: float32 ``[k, M, 4]`` yxyx pixels, padded with zero boxes;
- ``classes``: int ``[k, M]``, padded with -1 (a row with class < 1 is
  padding, the convention of :func:`efficientdet_tf.ops.anchors.match_anchors`).

Outputs keep a static box count so they batch: ``k * M`` rows by default (no
box can be lost), or ``max_boxes`` rows. Kept boxes come first, in input
order; dropped and padding rows are zero boxes of class -1.

A box cut by the new image layout becomes the bounding box of what stays
visible, and is dropped (turned into padding) when less than
``min_visible_fraction`` of its area is left, or nothing is. The default
:data:`MIN_VISIBLE_FRACTION`, 0.1, is the area threshold YOLOv5 applies to
boxes cut by its mosaic and affine warp: a sliver of an object is a poor
positive, but a tenth of one is still recognisable.

Each op is a seeded function (``mosaic``, ``mixup``, ``cutmix``) that draws
its random parameters statelessly from an int ``[2]`` seed and calls the
deterministic one (``mosaic_at``, ``mixup_with_ratio``, ``cutmix_at``), so a
seeded pipeline repeats itself and tests can fix the geometry.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from efficientdet_tf.config import ConfigError
from efficientdet_tf.data.box_aware_ops import box_area

MIN_VISIBLE_FRACTION = 0.1
# automl's Mosaic keeps its divide point within 25%..75% of each side, so
# every one of the four images fills at least a quarter of each side.
MOSAIC_CENTER_RANGE = (0.25, 0.75)
# YOLOv5's MixUp ratio distribution: lambda ~ Beta(32, 32), 0.5 +- 0.06.
MIXUP_ALPHA = 32.0
# CutMix's (Yun et al. 2019): the patch area fraction is uniform in (0, 1).
CUTMIX_ALPHA = 1.0


def mosaic(images: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor,
           seed: tf.Tensor, *,
           center_range: Sequence[float] = MOSAIC_CENTER_RANGE,
           min_visible_fraction: float = MIN_VISIBLE_FRACTION,
           content_sizes: tf.Tensor | None = None,
           max_boxes: int | None = None
           ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Four images -> one mosaic, around a centre drawn from ``seed``.

    The centre (y, x) is a whole pixel uniform in ``center_range`` times
    (H, W); see :func:`mosaic_at` for the layout and the arguments.
    """
    low, high = center_range
    if not 0.0 <= low <= high <= 1.0:
        raise ConfigError(f"mosaic center_range must be two fractions "
                          f"0 <= low <= high <= 1, got {tuple(center_range)}")
    size = tf.cast(tf.shape(images)[1:3], tf.float32)
    first = tf.math.ceil(low * size)
    count = tf.maximum(tf.floor(high * size) - first + 1.0, 1.0)
    draw = tf.random.stateless_uniform([2], seed)
    center = tf.cast(first + tf.floor(draw * count), tf.int32)
    return mosaic_at(images, boxes, classes, center,
                     min_visible_fraction=min_visible_fraction,
                     content_sizes=content_sizes, max_boxes=max_boxes)


def mosaic_at(images: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor,
              center: tf.Tensor | Sequence[int], *,
              min_visible_fraction: float = MIN_VISIBLE_FRACTION,
              content_sizes: tf.Tensor | None = None,
              max_boxes: int | None = None
              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Four images -> ``(image [H, W, C], boxes, classes)`` split at ``center``.

    ``center`` (cy, cx), int, splits the output into quadrants top-left,
    top-right, bottom-left, bottom-right, filled from images 0, 1, 2, 3. Each
    image is pasted at its own scale (the scale jitter already varied it) so
    that its picture's corner nearest the centre touches the centre: image 0
    with its bottom-right corner there, image 1 bottom-left, image 2
    top-right, image 3 top-left; the quadrant shows the part of the image
    that falls inside it, and output pixels no image reaches are 0, like the
    letterbox padding. Boxes move with their image, are clipped to their
    quadrant and dropped when too little of them is left (module docstring).

    ``content_sizes``: int ``[4, 2]``, the (height, width) of each image's
    picture, which the letterbox puts at the top-left with padding below and
    to the right. Corners are those of the picture, so no padding band lands
    in the middle of the mosaic. None: the whole ``H x W`` is picture.

    Compared with automl's Mosaic (which squeezes each whole image into its
    quadrant), nothing is resampled, so objects keep their shape and boxes
    move by whole pixels; the price is that each image shows one corner.
    """
    _check_group(images, 4, "mosaic")
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    if content_sizes is None:
        content_sizes = tf.tile([[height, width]], [4, 1])
    content_sizes = tf.cast(content_sizes, tf.int32)
    center = tf.cast(center, tf.int32)
    # The corner of each picture that goes to the centre, and so its shift.
    corners = content_sizes * tf.constant([[1, 1], [1, 0], [0, 1], [0, 0]])
    shifts = center[None, :] - corners
    rows = tf.stack([0, center[0], height])
    cols = tf.stack([0, center[1], width])
    quadrants = tf.stack([
        tf.stack([rows[r], cols[c], rows[r + 1], cols[c + 1]])
        for r, c in ((0, 0), (0, 1), (1, 0), (1, 1))])  # [4, 4] yxyx

    pieces = [_window(images[i], quadrants[i, :2] - shifts[i],
                      quadrants[i, 2:] - quadrants[i, :2]) for i in range(4)]
    image = tf.concat([tf.concat(pieces[:2], axis=1),
                       tf.concat(pieces[2:], axis=1)], axis=0)
    image = tf.ensure_shape(image, images.shape[1:])

    moved = tf.cast(boxes, tf.float32) + tf.cast(
        tf.tile(shifts, [1, 2]), tf.float32)[:, None, :]
    clipped = _clip(moved, tf.cast(quadrants, tf.float32)[:, None, :])
    keep = _visible_enough(classes, box_area(moved), box_area(clipped),
                           min_visible_fraction)
    out_boxes, out_classes = _compact(
        tf.reshape(keep, [-1]), tf.reshape(clipped, [-1, 4]),
        tf.reshape(classes, [-1]), max_boxes)
    return image, out_boxes, out_classes


def mixup(images: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor,
          seed: tf.Tensor, *, alpha: float = MIXUP_ALPHA,
          max_boxes: int | None = None
          ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Two images blended with ``lambda ~ Beta(alpha, alpha)`` drawn from
    ``seed``; see :func:`mixup_with_ratio`.

    Why ``alpha = 32`` (lambda = 0.5 +- 0.06, YOLOv5's choice) rather than
    the wide Beta(1.5, 1.5) of "Bag of Freebies" (Zhang et al. 2019): that
    paper multiplies each object's loss by its image's lambda, so a faint
    image's objects count little. Our loss gives every box full weight (as
    YOLO detectors do with MixUp), which is only sensible when both images
    stay clearly visible, i.e. lambda near 0.5. Use a small ``alpha`` only
    together with loss weights (see :func:`mixup_with_ratio`).
    """
    if alpha <= 0:
        raise ConfigError(f"mixup alpha must be positive, got {alpha}")
    return mixup_with_ratio(images, boxes, classes, _beta(seed, alpha),
                            max_boxes=max_boxes)


def mixup_with_ratio(images: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor,
                     ratio: tf.Tensor | float, *, max_boxes: int | None = None
                     ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Two images -> ``(ratio * A + (1 - ratio) * B, boxes, classes, weights)``.

    Both letterboxes share the network-input frame (pictures at the
    top-left), so the images are blended pixel for pixel and every box of
    both is kept where it was. Integer images are blended in float32 and
    rounded back.

    ``weights`` float32 (a row per box row, 0 for padding): ``ratio`` for
    A's boxes, ``1 - ratio`` for B's. We recommend not using them with a
    ratio near 0.5 (the :func:`mixup` default): boxes then train at full
    weight like any other. To use them (needed for a wide ratio
    distribution), ``label_anchors`` would have to carry each positive
    anchor's box weight into a per-level weight target, and
    ``detection_loss`` multiply those anchors' class loss (the per-anchor
    scale its focal sum already has for ignored anchors, and the positive
    correction) and box / IoU losses by it, and arguably count weighted
    positives in the normaliser; today every positive has weight 1.
    """
    _check_group(images, 2, "mixup")
    ratio = tf.cast(ratio, tf.float32)
    blended = (ratio * tf.cast(images[0], tf.float32)
               + (1.0 - ratio) * tf.cast(images[1], tf.float32))
    if images.dtype.is_integer:
        blended = tf.round(blended)
    image = tf.saturate_cast(blended, images.dtype)
    keep = classes >= 1
    weights = tf.stack([tf.fill(tf.shape(classes[0]), ratio),
                        tf.fill(tf.shape(classes[1]), 1.0 - ratio)])
    out_boxes, out_classes, out_weights = _compact(
        tf.reshape(keep, [-1]), tf.reshape(tf.cast(boxes, tf.float32), [-1, 4]),
        tf.reshape(classes, [-1]), max_boxes, tf.reshape(weights, [-1]))
    return image, out_boxes, out_classes, out_weights


def cutmix(images: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor,
           seed: tf.Tensor, *, alpha: float = CUTMIX_ALPHA,
           min_visible_fraction: float = MIN_VISIBLE_FRACTION,
           max_boxes: int | None = None
           ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Image B's patch pasted into A at a rectangle drawn from ``seed``.

    As in CutMix: the patch covers ``1 - lambda`` of the image with
    ``lambda ~ Beta(alpha, alpha)`` (uniform for the default 1) and the
    image's aspect ratio, centred on a uniform pixel and cut by the image
    border. See :func:`cutmix_at`.
    """
    if alpha <= 0:
        raise ConfigError(f"cutmix alpha must be positive, got {alpha}")
    size_seed, center_seed = tf.unstack(tf.random.split(seed, 2))
    size = tf.cast(tf.shape(images)[1:3], tf.float32)
    side = tf.floor(size * tf.sqrt(1.0 - _beta(size_seed, alpha)))
    center = tf.floor(tf.random.stateless_uniform([2], center_seed) * size)
    start = tf.maximum(center - tf.floor(side / 2.0), 0.0)
    end = tf.minimum(center - tf.floor(side / 2.0) + side, size)
    patch = tf.cast(tf.concat([start, end], axis=0), tf.int32)
    return cutmix_at(images, boxes, classes, patch,
                     min_visible_fraction=min_visible_fraction,
                     max_boxes=max_boxes)


def cutmix_at(images: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor,
              patch: tf.Tensor | Sequence[int], *,
              min_visible_fraction: float = MIN_VISIBLE_FRACTION,
              max_boxes: int | None = None
              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Two images -> A with B's pixels inside ``patch`` (int yxyx, pixel
    edges: rows ``ymin..ymax - 1``), and the boxes of both.

    B's boxes are clipped to the patch. A's boxes become the bounding box of
    their part outside the patch (shrunk when the patch covers one side of
    them, unchanged when it covers a middle band or a hole, since the
    object still spans it). Either is dropped when less than
    ``min_visible_fraction`` of its area stays visible, so a box the patch
    covers entirely is always dropped.
    """
    _check_group(images, 2, "cutmix")
    patch = tf.cast(patch, tf.int32)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    inside_rows = (tf.range(height) >= patch[0]) & (tf.range(height) < patch[2])
    inside_cols = (tf.range(width) >= patch[1]) & (tf.range(width) < patch[3])
    inside = inside_rows[:, None, None] & inside_cols[None, :, None]
    image = tf.where(inside, images[1], images[0])

    window = tf.cast(patch, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    area_a, area_b = box_area(boxes[0]), box_area(boxes[1])
    hidden_a = box_area(_clip(boxes[0], window))
    keep_a = _visible_enough(classes[0], area_a, area_a - hidden_a,
                             min_visible_fraction)
    boxes_a = _outside_extent(boxes[0], window)
    boxes_b = _clip(boxes[1], window)
    keep_b = _visible_enough(classes[1], area_b, box_area(boxes_b),
                             min_visible_fraction)
    return (image, *_compact(tf.concat([keep_a, keep_b], 0),
                             tf.concat([boxes_a, boxes_b], 0),
                             tf.reshape(classes, [-1]), max_boxes))


def _check_group(images: tf.Tensor, size: int, name: str) -> None:
    """Fails early on a group of the wrong size when the shape says so (a
    ``batch`` without ``drop_remainder`` leaves it unknown)."""
    if images.shape.rank != 4 or images.shape[0] not in (None, size):
        raise ValueError(f"{name} takes a group of {size} images "
                         f"[{size}, H, W, C], got shape {images.shape}")


def _beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """float32 ``[]`` ~ Beta(alpha, alpha), as X / (X + Y) of two
    Gamma(alpha) draws (TF has a stateless gamma, not a stateless beta)."""
    x, y = tf.unstack(tf.random.stateless_gamma([2], seed, alpha))
    return tf.math.divide_no_nan(x, x + y)


def _window(image: tf.Tensor, top_left: tf.Tensor, size: tf.Tensor
            ) -> tf.Tensor:
    """The ``size`` (h, w) window of ``image`` ``[H, W, C]`` whose top-left
    corner is ``top_left`` (y, x); parts outside the image are 0."""
    bounds = tf.shape(image)[:2]
    start = tf.clip_by_value(top_left, 0, bounds)
    end = tf.maximum(tf.clip_by_value(top_left + size, 0, bounds), start)
    before = tf.clip_by_value(-top_left, 0, size)
    after = size - (end - start) - before
    piece = image[start[0]:end[0], start[1]:end[1]]
    padding = tf.concat([tf.stack([before, after], axis=1), [[0, 0]]], axis=0)
    return tf.pad(piece, padding)


def _clip(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """``boxes`` ``[..., 4]`` cut to ``window`` (yxyx, broadcast); a box
    outside the window comes out with no area."""
    low = tf.concat([window[..., :2], window[..., :2]], axis=-1)
    high = tf.concat([window[..., 2:], window[..., 2:]], axis=-1)
    return tf.minimum(tf.maximum(boxes, low), high)


def _outside_extent(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Bounding box of each box ``[N, 4]`` minus ``window`` ``[4]``.

    Only a window spanning a box's full width can trim its top or bottom
    (and full height its sides); any other overlap leaves visible pixels on
    every side. A box the window covers entirely comes out with no area.
    """
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    top, left, bottom, right = tf.unstack(window)
    spans_width = (left <= xmin) & (right >= xmax)
    spans_height = (top <= ymin) & (bottom >= ymax)
    return tf.stack([
        tf.where(spans_width & (top <= ymin), tf.maximum(ymin, bottom), ymin),
        tf.where(spans_height & (left <= xmin), tf.maximum(xmin, right), xmin),
        tf.where(spans_width & (bottom >= ymax), tf.minimum(ymax, top), ymax),
        tf.where(spans_height & (right >= xmax), tf.minimum(xmax, left), xmax),
    ], axis=-1)


def _visible_enough(classes: tf.Tensor, area: tf.Tensor, visible: tf.Tensor,
                    min_fraction: float) -> tf.Tensor:
    """Rows that are objects (class >= 1) with some area left, at least
    ``min_fraction`` of their own."""
    return (classes >= 1) & (visible > 0) & (visible >= min_fraction * area)


def _compact(keep: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor,
             max_boxes: int | None, *extras: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Rows with ``keep`` first (in order), every other row padding (zero
    box, class -1, extras 0), cut or padded to ``max_boxes`` (None: all)."""
    order = tf.argsort(tf.cast(~keep, tf.int32), stable=True)
    keep = tf.gather(keep, order)
    columns = [(boxes, 0.0), (classes, -1)] + [(extra, 0) for extra in extras]
    rows = tf.size(keep) if max_boxes is None else max_boxes
    out = []
    for values, pad in columns:
        values = tf.gather(values, order)
        mask = tf.reshape(keep, [-1] + [1] * (values.shape.rank - 1))
        values = tf.where(mask, values, tf.cast(pad, values.dtype))[:rows]
        padding = [[0, rows - tf.shape(values)[0]]] + [[0, 0]] * (
            values.shape.rank - 1)
        values = tf.pad(values, padding,
                        constant_values=tf.cast(pad, values.dtype))
        static_rows = keep.shape[0] if max_boxes is None else max_boxes
        out.append(tf.ensure_shape(values, [static_rows, *values.shape[1:]]))
    return tuple(out)
