"""Anchors, the official box coder and the anchor labeler.

Anchors reproduce automl bit for bit: on level ``l`` the stride is
``image_size / feature_size`` (``2**l`` when the image tiles the level, a
fraction for the two presets that do not, lite0 and lite2); for every octave
scale ``s`` and aspect ratio ``(w_ratio, h_ratio)`` the anchor is
``anchor_scale * stride * 2**(s / num_scales)`` wide times ``w_ratio`` (tall
times ``h_ratio``) and centred at ``stride/2 + k*stride``. Boxes are yxyx in
input-image pixels.

Order: level min..max, then location row-major (y, then x), then anchor
``a = scale_index * len(aspect_ratios) + ratio_index``. That is the order of a
head output ``[B, H, W, A*C]`` reshaped to ``[B, H*W*A, C]`` and concatenated
over levels, so anchor ``i`` belongs to output row ``i``.

Anchors are computed once per anchor setting (numpy, float64, then float32 as
automl does) and cached; the arrays are read-only because they are shared.
The coder and the labeler are pure TF so they run inside ``tf.data``.
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from efficientdet_tf.config import Config, ConfigError
from efficientdet_tf.ops.levels import feature_sizes

AspectRatio = tuple[float, float]


def aspect_ratio_pairs(aspect_ratios: Sequence[Any]) -> tuple[AspectRatio, ...]:
    """Normalises ``aspect_ratios`` to ``(w_ratio, h_ratio)`` pairs.

    A number ``r`` (automl's default form ``[1.0, 2.0, 0.5]``) means a box
    ``r`` times wider than tall with the area of the square one:
    ``(sqrt(r), 1/sqrt(r))``. A pair is taken as given, as automl does for
    ``[(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]`` (YAML gives lists; same thing).
    """
    pairs = []
    for ratio in aspect_ratios:
        if isinstance(ratio, (list, tuple)) and len(ratio) == 2 and all(
                _is_number(v) and v > 0 for v in ratio):
            pairs.append((float(ratio[0]), float(ratio[1])))
        elif _is_number(ratio) and ratio > 0:
            width = math.sqrt(ratio)
            pairs.append((width, 1.0 / width))
        else:
            raise ConfigError(f"aspect ratio {ratio!r} must be a positive number "
                              f"or a positive (width, height) pair")
    if not pairs:
        raise ConfigError("aspect_ratios must not be empty")
    return tuple(pairs)


def level_anchors(config: Config) -> tuple[np.ndarray, ...]:
    """Anchors per level min..max, each ``[H_l, W_l, A, 4]`` float32 yxyx.

    The per-level form lines up with a head output reshaped to
    ``[B, H_l, W_l, A, ...]`` (the IoU losses decode boxes this way).
    """
    return _level_anchors(*_anchor_key(config))


def anchor_boxes(config: Config) -> np.ndarray:
    """All anchors ``[N, 4]`` float32 yxyx pixels in head-output order.

    ``N = sum_l H_l * W_l * A`` (49,104 for efficientdet-d0 at 512x512).
    """
    return _anchor_boxes(*_anchor_key(config))


def level_grid_sizes(config: Config) -> list[tuple[int, int]]:
    """(H_l, W_l) of the feature maps min..max: the anchor grid per level."""
    sizes = feature_sizes(config.image_size, config.max_level)
    return sizes[config.min_level:config.max_level + 1]


def _anchor_key(config: Config) -> tuple[Any, ...]:
    """The hashable part of a config that anchors depend on (cache key)."""
    scale = config.anchor_scale
    levels = config.max_level - config.min_level + 1
    if isinstance(scale, (list, tuple)):
        if len(scale) != levels:
            raise ConfigError(f"anchor_scale lists one value per level: "
                              f"expected {levels}, got {len(scale)}")
        scales = tuple(float(s) for s in scale)
    else:
        scales = (float(scale),) * levels
    return (tuple(config.image_size), config.min_level, config.max_level,
            config.num_scales, aspect_ratio_pairs(config.aspect_ratios), scales)


@functools.lru_cache(maxsize=32)
def _level_anchors(image_size: tuple[int, int], min_level: int, max_level: int,
                   num_scales: int, ratios: tuple[AspectRatio, ...],
                   scales: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    image_h, image_w = image_size
    sizes = feature_sizes(image_size, max_level)
    levels = []
    for level, anchor_scale in zip(range(min_level, max_level + 1), scales):
        feat_h, feat_w = sizes[level]
        stride_y, stride_x = image_h / float(feat_h), image_w / float(feat_w)
        # automl: np.arange(stride / 2, image_size, stride), i.e. start + k*step.
        center_y = stride_y / 2 + stride_y * np.arange(feat_h)
        center_x = stride_x / 2 + stride_x * np.arange(feat_w)
        half_h, half_w = [], []
        for scale_index in range(num_scales):
            octave = 2 ** (scale_index / float(num_scales))
            for w_ratio, h_ratio in ratios:
                # Same operation order as automl, so values match bit for bit.
                half_w.append(anchor_scale * stride_x * octave * w_ratio / 2.0)
                half_h.append(anchor_scale * stride_y * octave * h_ratio / 2.0)
        cy = center_y[:, None, None]
        cx = center_x[None, :, None]
        hh, hw = np.asarray(half_h), np.asarray(half_w)
        boxes = np.stack(np.broadcast_arrays(cy - hh, cx - hw, cy + hh, cx + hw),
                         axis=-1).astype(np.float32)
        boxes.setflags(write=False)
        levels.append(boxes)
    return tuple(levels)


@functools.lru_cache(maxsize=32)
def _anchor_boxes(*key: Any) -> np.ndarray:
    boxes = np.concatenate([b.reshape(-1, 4) for b in _level_anchors(*key)])
    boxes.setflags(write=False)
    return boxes


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- Box coding --------------------------------------------------------------

# automl adds this to every size before dividing and taking logs, so a
# degenerate (zero-size) box encodes to large but finite targets.
EPSILON = 1e-8

IOU_TYPES = ("iou", "giou", "diou", "ciou")


def encode_boxes(boxes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """yxyx boxes -> official (ty, tx, th, tw) codes relative to anchors.

    ``ty = (yc - yc_a) / h_a``, ``tx = (xc - xc_a) / w_a``,
    ``th = log(h / h_a)``, ``tw = log(w / w_a)``; no variance scaling, as the
    official checkpoints were trained with. Shapes ``[..., 4]`` broadcast
    against each other; float16 inputs are computed in float32.
    """
    boxes = _as_float(boxes)
    ycenter_a, xcenter_a, ha, wa = _centers_and_sizes(tf.cast(anchors, boxes.dtype))
    ycenter, xcenter, h, w = _centers_and_sizes(boxes)
    ha, wa, h, w = ha + EPSILON, wa + EPSILON, h + EPSILON, w + EPSILON
    return tf.stack([(ycenter - ycenter_a) / ha, (xcenter - xcenter_a) / wa,
                     tf.math.log(h / ha), tf.math.log(w / wa)], axis=-1)


def decode_boxes(codes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """(ty, tx, th, tw) codes ``[..., 4]`` + anchors -> yxyx boxes ``[..., 4]``.

    The exact inverse of :func:`encode_boxes` (up to its epsilon). Outputs are
    not clipped to the image: callers that need that clip themselves.
    """
    codes = _as_float(codes)
    ycenter_a, xcenter_a, ha, wa = _centers_and_sizes(tf.cast(anchors, codes.dtype))
    ty, tx, th, tw = tf.unstack(codes, num=4, axis=-1)
    h, w = tf.exp(th) * ha, tf.exp(tw) * wa
    ycenter, xcenter = ty * ha + ycenter_a, tx * wa + xcenter_a
    return tf.stack([ycenter - h / 2, xcenter - w / 2,
                     ycenter + h / 2, xcenter + w / 2], axis=-1)


def box_iou(boxes_a: tf.Tensor, boxes_b: tf.Tensor,
            iou_type: str = "iou") -> tf.Tensor:
    """IoU-family overlap of yxyx boxes ``[..., 4]`` (broadcasting) -> ``[...]``.

    ``iou``: intersection / union. ``giou``: minus the share of the smallest
    enclosing box C not covered by the union. ``diou``: minus squared centre
    distance / squared diagonal of C. ``ciou``: DIoU minus ``alpha * v`` with
    ``v = 4/pi^2 (atan(w_b/h_b) - atan(w_a/h_a))^2`` measuring aspect mismatch
    and ``alpha = v / (1 - IoU + v)`` held constant in the gradient, as the
    CIoU paper's reference code does. All four are symmetric in a and b.

    Pairwise matrices come from broadcasting: ``box_iou(a[:, None], b[None])``.
    Empty boxes give 0 rather than NaN (every ratio is divide-no-nan).
    """
    if iou_type not in IOU_TYPES:
        raise ConfigError(f"unknown iou_type {iou_type!r}; expected one of "
                          f"{', '.join(IOU_TYPES)}")
    boxes_a = _as_float(boxes_a)
    a_y0, a_x0, a_y1, a_x1 = tf.unstack(boxes_a, num=4, axis=-1)
    b_y0, b_x0, b_y1, b_x1 = tf.unstack(tf.cast(boxes_b, boxes_a.dtype), num=4, axis=-1)
    a_h, a_w = tf.nn.relu(a_y1 - a_y0), tf.nn.relu(a_x1 - a_x0)
    b_h, b_w = tf.nn.relu(b_y1 - b_y0), tf.nn.relu(b_x1 - b_x0)
    intersection = (tf.nn.relu(tf.minimum(a_y1, b_y1) - tf.maximum(a_y0, b_y0)) *
                    tf.nn.relu(tf.minimum(a_x1, b_x1) - tf.maximum(a_x0, b_x0)))
    union = a_h * a_w + b_h * b_w - intersection
    iou = tf.math.divide_no_nan(intersection, union)
    if iou_type == "iou":
        return iou
    enclose_h = tf.maximum(a_y1, b_y1) - tf.minimum(a_y0, b_y0)
    enclose_w = tf.maximum(a_x1, b_x1) - tf.minimum(a_x0, b_x0)
    if iou_type == "giou":
        enclose = enclose_h * enclose_w
        return iou - tf.math.divide_no_nan(enclose - union, enclose)
    center_distance = (((a_y0 + a_y1) - (b_y0 + b_y1)) ** 2 +
                       ((a_x0 + a_x1) - (b_x0 + b_x1)) ** 2) / 4
    diou = iou - tf.math.divide_no_nan(center_distance,
                                       enclose_h ** 2 + enclose_w ** 2)
    if iou_type == "diou":
        return diou
    v = (4 / math.pi ** 2) * (tf.atan(tf.math.divide_no_nan(b_w, b_h)) -
                              tf.atan(tf.math.divide_no_nan(a_w, a_h))) ** 2
    alpha = tf.stop_gradient(tf.math.divide_no_nan(v, 1 - iou + v))
    return diou - alpha * v


def _centers_and_sizes(boxes: tf.Tensor) -> tuple[tf.Tensor, ...]:
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    height, width = ymax - ymin, xmax - xmin
    return ymin + height / 2, xmin + width / 2, height, width


def _as_float(x: tf.Tensor) -> tf.Tensor:
    """float64 stays float64; everything else is computed in float32."""
    x = tf.convert_to_tensor(x)
    return x if x.dtype in (tf.float32, tf.float64) else tf.cast(x, tf.float32)


# --- Anchor labeling ---------------------------------------------------------

BACKGROUND = -1  # class target of a negative anchor (one-hot of all zeros)
IGNORED = -2     # class target of an anchor left out of the class loss


class AnchorTargets(NamedTuple):
    """Training targets per level min..max (a batch after ``Dataset.batch``).

    ``cls_targets[l]``: int32 ``[H_l, W_l, A]``: channel index ``id - 1`` of
    the matched class, ``BACKGROUND`` (-1) or ``IGNORED`` (-2).
    ``box_targets[l]``: float32 ``[H_l, W_l, A*4]``: (ty, tx, th, tw) per
    anchor for positives, 0 elsewhere (the box loss masks on non-zero).
    ``num_positives``: float32 ``[]``, the positive anchors of the image.
    """
    cls_targets: tuple[tf.Tensor, ...]
    box_targets: tuple[tf.Tensor, ...]
    num_positives: tf.Tensor


def label_anchors(boxes: tf.Tensor, classes: tf.Tensor, config: Config,
                  is_crowd: tf.Tensor | None = None, *,
                  match_threshold: float = 0.5,
                  unmatched_threshold: float | None = None,
                  force_match: bool = True) -> AnchorTargets:
    """Per-level class and box targets of one image for ``config``'s anchors.

    ``boxes`` ``[M, 4]`` yxyx in input-image pixels (after resize/pad),
    ``classes`` ``[M]`` 1-based ids, ``is_crowd`` ``[M]`` (optional). Pure TF
    with static anchor shapes, so it runs inside ``tf.data`` map functions.
    See :func:`match_anchors` for the rules and the padding convention.
    """
    anchors = anchor_boxes(config)
    cls_targets, box_targets, num_positives = match_anchors(
        anchors, boxes, classes, is_crowd, match_threshold=match_threshold,
        unmatched_threshold=unmatched_threshold, force_match=force_match)
    shapes = [level.shape[:3] for level in level_anchors(config)]
    counts = [h * w * a for h, w, a in shapes]
    return AnchorTargets(
        cls_targets=tuple(tf.reshape(t, shape) for t, shape in
                          zip(tf.split(cls_targets, counts), shapes)),
        box_targets=tuple(tf.reshape(t, (h, w, a * 4)) for t, (h, w, a) in
                          zip(tf.split(box_targets, counts), shapes)),
        num_positives=num_positives)


def match_anchors(anchors: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor,
                  is_crowd: tf.Tensor | None = None, *,
                  match_threshold: float = 0.5,
                  unmatched_threshold: float | None = None,
                  force_match: bool = True
                  ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Official argmax matching of ``anchors`` ``[N, 4]`` to ground truth.

    Returns class targets int32 ``[N]``, box targets float32 ``[N, 4]`` and
    the number of positives float32 ``[]``.

    - An anchor is positive for the box of highest IoU when that IoU is
      ``>= match_threshold``; negative below ``unmatched_threshold`` (default:
      the same, so no middle band); ignored in between.
    - ``force_match`` (automl's ``force_match_for_each_row=True``): every box
      also claims its best anchor, however low the IoU, so small or thin
      objects get at least one positive. A claimed anchor goes to the
      claiming box of lowest index, overriding its IoU match, as automl. Only
      a box overlapping no anchor at all claims nothing (automl would hand it
      anchor 0).
    - Crowd boxes never make positives and are not force-matched; anchors
      that are not positive but reach ``match_threshold`` IoU with a crowd box
      are ignored rather than taught "background" on a crowd of objects.
      (automl's ``skip_crowd_during_training`` drops crowd rows instead, so
      those anchors become negatives; drop the rows to get that.)
    - Padding: a row with ``class < 1`` or a box of no area (all zeros, say)
      is not an object and affects nothing, so inputs padded to a fixed
      ``M`` with class -1 or zero boxes label exactly like the unpadded ones.
      With no objects at all every anchor is background and the box targets
      are zero.
    """
    if unmatched_threshold is None:
        unmatched_threshold = match_threshold
    if unmatched_threshold > match_threshold:
        raise ConfigError(f"unmatched_threshold {unmatched_threshold} must not "
                          f"exceed match_threshold {match_threshold}")
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    crowd = (tf.zeros_like(classes, tf.bool) if is_crowd is None
             else tf.reshape(tf.cast(is_crowd, tf.bool), [-1]))
    valid = ((classes >= 1) & (boxes[:, 2] > boxes[:, 0]) &
             (boxes[:, 3] > boxes[:, 1]))
    objects, crowds = valid & ~crowd, valid & crowd
    iou = box_iou(boxes[:, None, :], anchors[None, :, :])  # [M, N]

    # Row 0 is a sentinel "no object" (similarity -1) so that max/argmax and
    # gathers stay defined when there are no boxes; object rows are 1..M.
    no_object = -tf.ones_like(anchors[None, :, 0])
    similarity = tf.concat([no_object, tf.where(objects[:, None], iou, -1.0)], 0)
    best_iou = tf.reduce_max(similarity, axis=0)
    matched_row = tf.argmax(similarity, axis=0, output_type=tf.int32)
    positive = best_iou >= match_threshold
    if force_match:
        num_anchors = tf.shape(anchors)[0]
        claims = objects & (tf.reduce_max(iou, axis=1) > 0)
        claimed = tf.where(claims, tf.argmax(iou, axis=1, output_type=tf.int32),
                           num_anchors)
        rows = tf.range(1, tf.size(classes) + 1)
        claimant = tf.math.unsorted_segment_min(
            rows, claimed, num_anchors + 1)[:num_anchors]
        forced = claimant <= tf.size(classes)  # unclaimed segments hold int max
        matched_row = tf.where(forced, claimant, matched_row)
        positive |= forced
    crowd_iou = tf.reduce_max(tf.where(crowds[:, None], iou, 0.0), axis=0)
    ignored = ~positive & ((best_iou >= unmatched_threshold) |
                           (crowd_iou >= match_threshold))

    matched_row = tf.where(positive, matched_row, 0)
    padded_classes = tf.concat([[0], classes], 0)
    padded_boxes = tf.concat([tf.zeros([1, 4]), boxes], 0)
    cls_targets = tf.where(
        positive, tf.gather(padded_classes, matched_row) - 1,
        tf.where(ignored, IGNORED, BACKGROUND))
    box_targets = tf.where(
        positive[:, None],
        encode_boxes(tf.gather(padded_boxes, matched_row), anchors), 0.0)
    return cls_targets, box_targets, tf.reduce_sum(tf.cast(positive, tf.float32))
