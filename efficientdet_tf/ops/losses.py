"""Detection losses: sigmoid focal loss, Huber box loss, IoU-family box loss.

Everything is computed in float32 whatever the model's output dtype: under
mixed precision the logits may be float16, whose exp overflows and whose sums
over ~50k anchors lose the small per-anchor terms.

Normalisation is automl's, per call (per replica; training averages across
replicas): ``normalizer = sum(num_positives over the batch) + 1`` so an image
batch without objects still gives a finite loss,

- ``cls_loss = sum(focal over anchors whose target is not IGNORED) / normalizer``
- ``box_loss = sum(huber * [box_target != 0]) / (4 * normalizer)``
- ``box_iou_loss = sum(1 - IoU over positive anchors) / (4 * normalizer)``
- ``total = cls_loss + box_loss_weight * box_loss + iou_loss_weight * box_iou_loss``
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import tensorflow as tf

from efficientdet_tf.ops.anchors import (IGNORED, IOU_TYPES, AnchorTargets, box_iou,
                                     decode_boxes, level_anchors)
from efficientdet_tf.config import Config, ConfigError


def focal_loss(logits: tf.Tensor, targets: tf.Tensor, alpha: float,
               gamma: float, label_smoothing: float = 0.0) -> tf.Tensor:
    """Element-wise sigmoid focal loss (unnormalised), any shape -> same shape.

    automl's form: with ``p = sigmoid(logits)`` and ``y`` the 0/1 target,
    ``p_t = y p + (1 - y)(1 - p)``, ``alpha_t = y alpha + (1 - y)(1 - alpha)``,
    loss ``= alpha_t (1 - p_t)^gamma CE(y', logits)`` where ``y'`` is ``y``
    smoothed towards 0.5 by ``label_smoothing``. The factors use the unsmoothed
    ``y`` so smoothing cannot inflate the loss of easy examples.
    ``1 - p_t`` is formed from ``sigmoid(-logits)`` rather than ``1 - p`` so it
    does not round to exactly 0 for confident logits (whose ``x**gamma``
    gradient would be NaN when ``gamma < 1``).
    """
    parts = _focal_parts(tf.cast(logits, tf.float32),
                         tf.cast(targets, tf.float32), alpha, label_smoothing)
    return parts.alpha_factor * parts.q ** gamma * parts.cross_entropy


class _FocalParts(NamedTuple):
    q: tf.Tensor  # 1 - p_t
    alpha_factor: tf.Tensor
    smoothed: tf.Tensor  # the smoothed target y'
    cross_entropy: tf.Tensor


def _focal_parts(logits: tf.Tensor, targets: tf.Tensor, alpha: float,
                 label_smoothing: float) -> _FocalParts:
    q = targets * tf.sigmoid(-logits) + (1.0 - targets) * tf.sigmoid(logits)
    alpha_factor = targets * alpha + (1.0 - targets) * (1.0 - alpha)
    smoothed = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=smoothed, logits=logits)
    return _FocalParts(q, alpha_factor, smoothed, cross_entropy)


def huber_loss(targets: tf.Tensor, outputs: tf.Tensor, delta: float) -> tf.Tensor:
    """Element-wise Huber loss (Keras' definition): ``0.5 e^2`` for
    ``|e| <= delta``, ``delta (|e| - 0.5 delta)`` beyond. Same shape out."""
    error = tf.abs(tf.cast(outputs, tf.float32) - tf.cast(targets, tf.float32))
    quadratic = tf.minimum(error, delta)
    return 0.5 * quadratic ** 2 + delta * (error - quadratic)


def detection_loss(cls_outputs: Sequence[tf.Tensor],
                   box_outputs: Sequence[tf.Tensor],
                   targets: AnchorTargets, config: Config) -> dict[str, tf.Tensor]:
    """The training loss terms for a batch, as float32 scalars.

    ``cls_outputs`` / ``box_outputs``: model outputs, lists over levels
    min..max of ``[B, H_l, W_l, A*num_classes]`` and ``[B, H_l, W_l, A*4]``.
    ``targets``: :func:`efficientdet_tf.ops.anchors.label_anchors` output after
    ``Dataset.batch`` (``[B, H_l, W_l, A]``, ``[B, H_l, W_l, A*4]``, ``[B]``).
    Returns ``cls_loss``, ``box_loss``, ``box_iou_loss`` (0 unless
    ``config.iou_loss_type`` is set) and ``total``, so training can log each.
    """
    levels = config.max_level - config.min_level + 1
    if not (len(cls_outputs) == len(box_outputs) == len(targets.cls_targets)
            == len(targets.box_targets) == levels):
        raise ConfigError(
            f"expected {levels} levels ({config.min_level}..{config.max_level}) "
            f"of outputs and targets, got {len(cls_outputs)} class outputs, "
            f"{len(box_outputs)} box outputs, {len(targets.cls_targets)} class "
            f"targets and {len(targets.box_targets)} box targets")
    if config.iou_loss_type and config.iou_loss_type not in IOU_TYPES:
        raise ConfigError(f"iou_loss_type must be one of {', '.join(IOU_TYPES)} "
                          f"or None, got {config.iou_loss_type!r}")
    normalizer = tf.reduce_sum(tf.cast(targets.num_positives, tf.float32)) + 1.0
    cls_sum = tf.add_n([
        _class_loss_sum(logits, cls_t, config)
        for logits, cls_t in zip(cls_outputs, targets.cls_targets)])
    box_sum = tf.add_n([
        tf.reduce_sum(huber_loss(box_t, box_out, config.delta) *
                      tf.cast(tf.not_equal(box_t, 0), tf.float32))
        for box_out, box_t in zip(box_outputs, targets.box_targets)])
    if config.iou_loss_type:
        iou_sum = tf.add_n([
            _iou_loss_sum(box_out, box_t, cls_t, anchors, config.iou_loss_type)
            for box_out, box_t, cls_t, anchors in zip(
                box_outputs, targets.box_targets, targets.cls_targets,
                level_anchors(config))])
    else:
        iou_sum = tf.constant(0.0)
    cls_loss = cls_sum / normalizer
    box_loss = box_sum / (4.0 * normalizer)
    box_iou_loss = iou_sum / (4.0 * normalizer)
    total = (cls_loss + config.box_loss_weight * box_loss +
             config.iou_loss_weight * box_iou_loss)
    return {"cls_loss": cls_loss, "box_loss": box_loss,
            "box_iou_loss": box_iou_loss, "total": total}


def _class_loss_sum(logits: tf.Tensor, cls_targets: tf.Tensor,
                    config: Config) -> tf.Tensor:
    """Focal loss summed over one level, ignored anchors left out.

    ``logits`` ``[B, H, W, A*C]`` is viewed as ``[B, H, W, A, C]``, the layout
    the head writes; background (-1) and ignored (-2) one-hot to all zeros.
    """
    cls_targets = tf.cast(cls_targets, tf.int32)
    logits = tf.reshape(logits, tf.concat(
        [tf.shape(cls_targets), [config.num_classes]], axis=0))
    return _focal_loss_sum(config.alpha, config.gamma, config.label_smoothing,
                           config.num_classes)(logits, cls_targets)


def _focal_loss_sum(alpha: float, gamma: float, label_smoothing: float,
                    num_classes: int) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """:func:`focal_loss` summed over non-ignored anchors, with a hand-written
    gradient that keeps only the logits and the integer targets.

    Autodiff of :func:`focal_loss` keeps a dozen ``[B, H, W, A, C]`` float
    intermediates per level for the backward pass: with 90 classes that is
    about 1 GB at D0 512x512, batch 4. The gradient is recomputed instead,
    from ``q = 1 - p_t`` (``q^gamma`` and ``CE`` as in the forward pass)::

        dL/dx = alpha_t q^gamma (gamma (1 - 2y) (1 - q) CE + sigmoid(x) - y')

    (``d q / dx = (1 - 2y) p (1 - p)``, and ``p (1 - p) q^(gamma - 1) =
    q^gamma (1 - q)`` for either ``y``, which stays finite when ``q`` is 0).
    Measured with ``benchmarks/train_throughput.py`` (D0 512, batch 4, 90
    classes): peak RSS 4.29 GB with autodiff, 4.11 GB with this gradient,
    3.92 GB computing it image by image.
    """
    def weighted_parts(logits: tf.Tensor, cls_targets: tf.Tensor
                       ) -> tuple[tf.Tensor, tf.Tensor, _FocalParts]:
        """(float32 logits, one-hot targets, parts with ignored anchors
        weighted 0 through ``alpha_factor``)."""
        logits = tf.cast(logits, tf.float32)
        targets = tf.one_hot(cls_targets, num_classes)
        parts = _focal_parts(logits, targets, alpha, label_smoothing)
        keep = tf.cast(tf.not_equal(cls_targets, IGNORED), tf.float32)[..., None]
        return logits, targets, parts._replace(
            alpha_factor=parts.alpha_factor * keep)

    def image_sum(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        _, _, parts = weighted_parts(*args)
        return tf.reduce_sum(parts.alpha_factor * parts.q ** gamma
                             * parts.cross_entropy)

    def image_grad(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        x, y, (q, weight, smoothed, cross_entropy) = weighted_parts(*args)
        return weight * q ** gamma * (
            gamma * (1.0 - 2.0 * y) * (1.0 - q) * cross_entropy
            + tf.sigmoid(x) - smoothed)

    # One image at a time (parallel_iterations=1), in both passes, so the
    # elementwise temporaries exist for one image rather than the batch.
    @tf.custom_gradient
    def loss_sum(logits: tf.Tensor, cls_targets: tf.Tensor):
        total = tf.reduce_sum(tf.map_fn(
            image_sum, (logits, cls_targets), parallel_iterations=1,
            fn_output_signature=tf.float32))

        def grad(upstream: tf.Tensor):
            # Recomputed from the two inputs: nothing else is kept.
            d_logits = tf.map_fn(image_grad, (logits, cls_targets),
                                 parallel_iterations=1,
                                 fn_output_signature=tf.float32)
            return tf.cast(upstream * d_logits, logits.dtype), None
        return total, grad
    return loss_sum


def _iou_loss_sum(box_outputs: tf.Tensor, box_targets: tf.Tensor,
                  cls_targets: tf.Tensor, anchors: tf.Tensor,
                  iou_type: str) -> tf.Tensor:
    """Sum of ``1 - IoU`` between decoded predictions and targets over the
    positive anchors of one level (``anchors`` ``[H, W, A, 4]``).

    Positives are read from the class targets: automl's per-coordinate
    ``box_target != 0`` mask would drop a coordinate whose exact target is 0
    and decode a box with it zeroed. Negative anchors' predictions are
    replaced by 0 before decoding so their (unused) exp cannot send inf/NaN
    into the gradient.
    """
    positive = tf.cast(cls_targets, tf.int32) >= 0
    shape = tf.concat([tf.shape(positive), [4]], axis=0)
    codes = tf.where(positive[..., None],
                     tf.reshape(tf.cast(box_outputs, tf.float32), shape), 0.0)
    target_codes = tf.reshape(tf.cast(box_targets, tf.float32), shape)
    iou = box_iou(decode_boxes(codes, anchors), decode_boxes(target_codes, anchors),
                  iou_type)
    return tf.reduce_sum(tf.where(positive, 1.0 - iou, 0.0))
