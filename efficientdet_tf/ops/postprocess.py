"""Post-processing: head outputs -> detections (decode + NMS), batched, in-graph.

Semantics are automl's TF2 ``postprocess_per_class`` / ``postprocess_global``:

1. Levels flatten to logits ``[B, N, C]`` and box codes ``[B, N, 4]`` in
   the anchor order of :func:`efficientdet_tf.ops.anchors.anchor_boxes`.
2. Candidates. ``max_nms_inputs == 0`` (default): every anchor with its best
   class only (arg-max over classes). ``max_nms_inputs = K > 0``: the K
   largest (anchor, class) logits, so an anchor may appear with several
   classes. Scores are the sigmoid of the logit; boxes are decoded only for
   the candidates.
3. NMS, per image, at most ``max_output_size`` results sorted by score:
   ``per_class`` (default) suppresses only within a class, then keeps the best
   ``max_output_size`` over all classes; ``per_class: false`` is automl's
   class-agnostic "global" mode (any box suppresses any other).
   ``hard``: IoU above ``iou_thresh`` removes. ``gaussian`` soft-NMS: each
   selected box multiplies the scores of the others by
   ``exp(-IoU^2 / sigma)``; a score at or below ``score_thresh`` is dropped.
4. Boxes of the class-agnostic mode are clipped to the network input (automl
   clips there only, so per-class boxes can leave the image, as official);
   then every box is multiplied by its image's scale to original pixels.

Output (docs/contracts.md, "Export contract"): :class:`Detections` with yxyx pixel
boxes ``[B, M, 4]``, scores ``[B, M]``, 1-based int32 classes ``[B, M]`` and
``num_detections`` int32 ``[B]``; rows past ``num_detections`` are all zero
(automl's per-class mode pads with zeros too; its global mode repeats the
box and class of candidate 0 there, with score 0).

Per-class NMS runs as *one* NMS call per image: each class's boxes are
translated to their own tile of a plane (tiles apart by more than the boxes'
extent), so boxes of different classes never overlap. This is per-class
NMS followed by a top-``max_output_size`` merge (up to rounding): overlap-free
classes do not interact (a Gaussian weight of IoU 0 is exactly 1), hard and
soft NMS both emit scores in non-increasing order, so the first
``max_output_size`` selections of the joint run are the best of the union of
the per-class runs. It also stops after ``max_output_size`` selections in
total instead of per class, which is what makes it several times faster than
automl's loop over classes. The translation costs float32 precision: IoUs
move by about ``1e-6 * extent / box size`` relative, far inside the fidelity
tolerances; score ties may order differently.

Reproducibility: an image's detections are bit-identical whatever the batch
around it (sigmoid and decoding run per image, see :func:`postprocess`).
Eager and ``tf.function`` runs give the same detections, but coordinates can
differ in the last bit: Grappler's arithmetic optimizer re-associates the
additions of the box decoding.

The NMS kernel is TF's ``NonMaxSuppressionV5`` (the op automl calls), which
TFLite has as a builtin, soft-NMS included: the whole function converts with
``tf.lite.TFLiteConverter`` without Flex ops (tests/ops/test_postprocess.py).
ONNX's ``NonMaxSuppression`` has no soft-NMS (tf2onnx drops the sigma), so
``portable=True`` runs soft-NMS as :func:`greedy_nms`, a loop of plain
elementwise ops that converts anywhere and selects the same boxes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from efficientdet_tf.ops.anchors import anchor_boxes, decode_boxes
from efficientdet_tf.config import Config, ConfigError

METHODS = ("hard", "gaussian")
# automl's defaults for unset (or zero: it tests truthiness) nms_configs.
DEFAULT_HARD_IOU = 0.5
DEFAULT_SIGMA = 0.5
DEFAULT_SOFT_SCORE = 0.001
# Gap between class tiles, relative to the boxes' extent, so that rounding
# of the translated coordinates can never make tiles touch.
_TILE_MARGIN = 1.0 / 16


@dataclasses.dataclass(frozen=True)
class NmsSettings:
    """``nms_configs`` with automl's defaults resolved.

    ``method``: ``hard`` or ``gaussian``. ``iou_thresh``: hard NMS removes a
    box whose IoU with a selected one exceeds it (1.0 for gaussian: soft-NMS
    never removes by IoU, as automl). ``score_thresh``: candidates and decayed
    scores at or below it are dropped (``-inf`` for hard: automl keeps every
    box). ``sigma``: Gaussian decay ``exp(-IoU^2 / sigma)`` (0 for hard).
    """
    method: str = "gaussian"
    iou_thresh: float = 1.0
    score_thresh: float = DEFAULT_SOFT_SCORE
    sigma: float = DEFAULT_SIGMA
    max_output_size: int = 100
    max_nms_inputs: int = 0
    per_class: bool = True
    # Soft-NMS as greedy_nms (a loop any converter keeps) instead of TF's
    # kernel; hard NMS always uses the kernel, which ONNX has as an operator.
    portable: bool = False

    @classmethod
    def from_config(cls, nms_configs: Mapping[str, Any]) -> "NmsSettings":
        """Resolves a config's ``nms_configs`` the way automl's ``nms`` does.

        As in automl, an unset *or zero* value means the official default
        (``score_thresh: 0.0``, automl's own default, gives 0.001 for
        gaussian); an empty ``method`` means hard.
        """
        method = nms_configs.get("method") or "hard"
        if method not in METHODS:
            raise ConfigError(f"nms_configs.method {method!r} is not one of "
                              f"{', '.join(METHODS)}")
        max_output_size = nms_configs.get("max_output_size", 100)
        max_nms_inputs = nms_configs.get("max_nms_inputs", 0) or 0
        if not isinstance(max_output_size, int) or max_output_size < 1:
            raise ConfigError(f"nms_configs.max_output_size must be a positive "
                              f"integer, got {max_output_size!r}")
        if not isinstance(max_nms_inputs, int) or max_nms_inputs < 0:
            raise ConfigError(f"nms_configs.max_nms_inputs must be 0 (all "
                              f"anchors) or a positive integer, got "
                              f"{max_nms_inputs!r}")
        score_thresh = nms_configs.get("score_thresh")
        if method == "hard":
            iou_thresh = nms_configs.get("iou_thresh") or DEFAULT_HARD_IOU
            score_thresh, sigma = score_thresh or -math.inf, 0.0
        else:
            iou_thresh = 1.0
            score_thresh = score_thresh or DEFAULT_SOFT_SCORE
            sigma = nms_configs.get("sigma") or DEFAULT_SIGMA
            if sigma < 0:
                raise ConfigError(f"nms_configs.sigma must be positive, got "
                                  f"{sigma}")
        return cls(method, float(iou_thresh), float(score_thresh),
                   float(sigma), max_output_size, max_nms_inputs,
                   bool(nms_configs.get("per_class", True)))


class Detections(NamedTuple):
    """Batched detections; rows ``>= num_detections`` are zero (class 0)."""
    boxes: tf.Tensor           # float32 [B, M, 4] ymin, xmin, ymax, xmax
    scores: tf.Tensor          # float32 [B, M], non-increasing
    classes: tf.Tensor         # int32 [B, M], 1-based ids
    num_detections: tf.Tensor  # int32 [B]


class Candidates(NamedTuple):
    """NMS inputs before the per-image sigmoid and decoding (see
    :func:`select_candidates`)."""
    logits: tf.Tensor   # float32 [B, K]
    classes: tf.Tensor  # int32 [B, K], 0-based
    codes: tf.Tensor    # float32 [B, K, 4]
    anchors: tf.Tensor  # float32 [K, 4] (shared) or [B, K, 4]


def postprocess(class_outputs: Sequence[tf.Tensor],
                box_outputs: Sequence[tf.Tensor], config: Config,
                image_scales: tf.Tensor | float | None = None,
                portable: bool = False) -> Detections:
    """Head outputs (lists over levels, as ``build_model`` returns) ->
    :class:`Detections` with ``config.nms_configs``.

    ``image_scales``: ``[B]`` (or a scalar for all) factors from network
    pixels to original pixels, as :func:`efficientdet_tf.ops.preprocess.
    preprocess_image` returns; None keeps network pixels. ``portable``:
    soft-NMS without TF's kernel (see :attr:`NmsSettings.portable`).
    """
    settings = dataclasses.replace(NmsSettings.from_config(config.nms_configs),
                                   portable=portable)
    candidates = select_candidates(class_outputs, box_outputs,
                                   anchor_boxes(config), config.num_classes,
                                   settings.max_nms_inputs)
    shared_anchors = candidates.anchors.shape.rank == 2

    def one_image(logits, classes, codes, *anchors):
        # Elementwise kernels round the last few elements of a tensor
        # differently (scalar tail vs SIMD), so sigmoid and decoding run on
        # one image at a time: results do not depend on the batch around it.
        anchors = candidates.anchors if shared_anchors else anchors[0]
        return non_max_suppression(decode_boxes(codes, anchors),
                                   tf.sigmoid(logits), classes, settings)
    per_image = candidates[:3] if shared_anchors else candidates
    return _map_images(one_image, per_image, settings, config.image_size,
                       image_scales)


def select_candidates(class_outputs: Sequence[tf.Tensor],
                      box_outputs: Sequence[tf.Tensor],
                      anchors: np.ndarray | tf.Tensor, num_classes: int,
                      max_nms_inputs: int = 0) -> Candidates:
    """The NMS candidates of per-level head outputs ``[B, H, W, A*C]`` /
    ``[B, H, W, A*4]`` with anchors ``[N, 4]`` (float16 outputs of mixed
    precision are computed in float32, as automl). Their scores are
    ``sigmoid(logits)`` and their boxes ``decode_boxes(codes, anchors)``.

    ``max_nms_inputs == 0``: ``K = N``, each anchor with its arg-max class
    (anchors stay shared, ``[N, 4]``). Otherwise ``K = min(max_nms_inputs,
    N*C)``: the largest (anchor, class) logits, in no particular order. They
    are found in two exact stages (the anchors whose best logit is among the K
    largest, then the K largest logits of those anchors: an anchor outside the
    first stage has K better anchors, hence K better logits), about twice
    as fast as automl's single top-k over ``N*C`` for D0.
    """
    if len(class_outputs) != len(box_outputs):
        raise ValueError(f"{len(class_outputs)} class levels but "
                         f"{len(box_outputs)} box levels")
    batch = tf.shape(class_outputs[0])[0]
    levels = [tf.reshape(tf.cast(x, tf.float32), [batch, -1, num_classes])
              for x in class_outputs]
    codes = tf.concat([tf.reshape(tf.cast(x, tf.float32), [batch, -1, 4])
                       for x in box_outputs], 1)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    if max_nms_inputs <= 0:
        # top_k with k=1 is CPU's fastest max + arg-max over the last axis
        # (equal logits resolve to the lower class, as arg-max does); taking
        # it level by level spares a copy of all N*C logits.
        best = [tf.math.top_k(level, k=1) for level in levels]
        return Candidates(tf.concat([b.values[..., 0] for b in best], 1),
                          tf.concat([b.indices[..., 0] for b in best], 1),
                          codes, anchors)
    logits = tf.concat(levels, 1)
    num_anchors = anchors.shape[0]
    k = min(max_nms_inputs, num_anchors * num_classes)
    _, rows = tf.math.top_k(tf.reduce_max(logits, -1),
                            k=min(k, num_anchors), sorted=False)
    rows_logits = tf.gather(logits, rows, batch_dims=1)
    top, flat = tf.math.top_k(tf.reshape(rows_logits, [batch, -1]), k=k,
                              sorted=False)
    anchor_index = tf.gather(rows, flat // num_classes, batch_dims=1)
    return Candidates(top, flat % num_classes,
                      tf.gather(codes, anchor_index, batch_dims=1),
                      tf.gather(anchors, anchor_index))


def batched_nms(boxes: tf.Tensor, scores: tf.Tensor, classes: tf.Tensor,
                settings: NmsSettings,
                image_size: tuple[int, int] | None = None,
                image_scales: tf.Tensor | float | None = None) -> Detections:
    """NMS of decoded candidates ``[B, K, 4]``, scores ``[B, K]`` and 0-based
    classes ``[B, K]``, image by image -> :class:`Detections`
    (``M = settings.max_output_size``).

    ``image_size`` (network ``(H, W)``) clips the boxes of the class-agnostic
    mode, as automl; required for it.
    """
    def one_image(boxes, scores, classes):
        return non_max_suppression(boxes, scores, classes, settings)
    return _map_images(one_image, (tf.convert_to_tensor(boxes, tf.float32),
                                   tf.convert_to_tensor(scores, tf.float32),
                                   tf.cast(classes, tf.int32)),
                       settings, image_size, image_scales)


def _map_images(one_image: Callable[..., tuple[tf.Tensor, ...]],
                tensors: Sequence[tf.Tensor], settings: NmsSettings,
                image_size: tuple[int, int] | None,
                image_scales: tf.Tensor | float | None) -> Detections:
    """Runs ``one_image`` on each image's slice of ``tensors`` and stacks the
    results; then clips (class-agnostic mode) and scales. A static batch size
    is unrolled (the graph TFLite gets); a dynamic one uses ``tf.map_fn``."""
    if not settings.per_class and image_size is None:
        raise ValueError("class-agnostic NMS clips to the image: pass "
                         "image_size")
    batch = tensors[0].shape[0]
    if batch:  # static and non-zero
        results = [one_image(*(t[i] for t in tensors)) for i in range(batch)]
        boxes, scores, classes, counts = (tf.stack(parts)
                                          for parts in zip(*results))
    else:
        size = settings.max_output_size
        boxes, scores, classes, counts = tf.map_fn(
            lambda args: one_image(*args), tuple(tensors),
            fn_output_signature=(
                tf.TensorSpec([size, 4], tf.float32),
                tf.TensorSpec([size], tf.float32),
                tf.TensorSpec([size], tf.int32), tf.TensorSpec([], tf.int32)))
    if not settings.per_class:
        height, width = image_size
        boxes = tf.clip_by_value(
            boxes, 0.0, tf.constant([height, width, height, width], tf.float32))
    if image_scales is not None:
        boxes = boxes * tf.reshape(tf.cast(image_scales, tf.float32), [-1, 1, 1])
    return Detections(boxes, scores, classes, counts)


def non_max_suppression(boxes: tf.Tensor, scores: tf.Tensor,
                        classes: tf.Tensor, settings: NmsSettings
                        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """One image: ``[K, 4]``, ``[K]``, 0-based int32 ``[K]`` -> boxes
    ``[M, 4]``, scores ``[M]`` (non-increasing), 1-based classes ``[M]`` and
    the count ``[]``; rows past the count are zero."""
    nms_boxes = boxes
    if settings.per_class:
        nms_boxes = boxes + _class_tile_offsets(boxes, classes)
    if settings.portable and settings.method != "hard":
        index, out_scores, count = greedy_nms(nms_boxes, scores, settings)
    else:
        # TF's soft_nms_sigma weighs by exp(-0.5 IoU^2 / s): s = sigma / 2
        # gives the paper's exp(-IoU^2 / sigma), as automl passes it.
        index, out_scores, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=nms_boxes, scores=scores,
            max_output_size=settings.max_output_size,
            iou_threshold=tf.constant(settings.iou_thresh, tf.float32),
            score_threshold=tf.constant(settings.score_thresh, tf.float32),
            soft_nms_sigma=tf.constant(settings.sigma / 2, tf.float32),
            pad_to_max_output_size=True)
    valid = tf.range(settings.max_output_size) < count
    out_boxes = tf.where(valid[:, None], tf.gather(boxes, index), 0.0)
    out_classes = tf.where(valid, tf.gather(classes, index) + 1, 0)
    return out_boxes, tf.where(valid, out_scores, 0.0), out_classes, count


def greedy_nms(boxes: tf.Tensor, scores: tf.Tensor, settings: NmsSettings
               ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """NMS as ``NonMaxSuppressionV5`` computes it, from elementwise ops only:
    ``[K, 4]``, ``[K]`` -> selected indices ``[M]``, their scores ``[M]``
    (zero-padded) and the count.

    Each of at most ``M = max_output_size`` rounds selects the highest live
    score, then weighs every other live score by ``exp(-IoU^2 / sigma)``
    (1 when ``sigma`` is 0), zeroes those with IoU above ``iou_thresh`` and
    retires any at or below ``score_thresh``; it stops early once nothing is
    live. TF's kernel selects lazily from a priority queue, which gives the
    same boxes because weights never raise a score. O(M*K) work, a few ms
    for D0's 49k anchors; used where TF's kernel does not convert (ONNX).
    """
    size, thresh = settings.max_output_size, settings.score_thresh
    ymin = tf.minimum(boxes[:, 0], boxes[:, 2])
    xmin = tf.minimum(boxes[:, 1], boxes[:, 3])
    ymax = tf.maximum(boxes[:, 0], boxes[:, 2])
    xmax = tf.maximum(boxes[:, 1], boxes[:, 3])
    areas = (ymax - ymin) * (xmax - xmin)
    # The lowest float, not -inf: tf2onnx turns a filled -inf into NaN.
    dead = tf.fill(tf.shape(scores), np.finfo(np.float32).min)
    live = tf.where(scores > thresh, scores, dead)
    slots, positions = tf.range(size), tf.range(tf.shape(scores)[0])

    def iou_with(best: tf.Tensor) -> tf.Tensor:
        height = tf.maximum(tf.minimum(ymax, ymax[best]) - tf.maximum(ymin, ymin[best]), 0.0)
        width = tf.maximum(tf.minimum(xmax, xmax[best]) - tf.maximum(xmin, xmin[best]), 0.0)
        inter = height * width
        union = areas + areas[best] - inter
        valid = (areas > 0.0) & (areas[best] > 0.0)
        return tf.where(valid, inter / tf.where(valid, union, 1.0), 0.0)

    def round_(i, live, index, kept):
        best = tf.argmax(live, output_type=tf.int32)
        top = live[best]
        iou = iou_with(best)
        weight = (tf.exp(-tf.square(iou) / settings.sigma) if settings.sigma > 0
                  else tf.ones_like(iou))
        weight = tf.where(iou > settings.iou_thresh, 0.0, weight)
        decayed = tf.where(live > thresh, live * weight, dead)
        decayed = tf.where(positions == best, dead, decayed)
        here = tf.equal(slots, i)
        return (i + 1, tf.where(decayed > thresh, decayed, dead),
                tf.where(here, best, index), tf.where(here, top, kept))

    def more(i, live, index, kept):
        return (i < size) & (tf.reduce_max(live) > thresh)

    # Every round selects one box (``more`` demands a live score), so the
    # round count is the number selected.
    count, _, index, kept = tf.while_loop(
        more, round_, (tf.constant(0), live, tf.zeros([size], tf.int32),
                       tf.zeros([size])))
    return index, kept, count


def _class_tile_offsets(boxes: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """``[K, 4]`` translations putting class c's boxes in tile c of a square
    grid, tiles ``extent * (1 + margin) + 1`` apart. A square grid rather than
    a row keeps the translated coordinates (hence rounding) ~sqrt(C) times
    smaller. Non-finite coordinates are left out of the extent so that one
    overflowing box cannot spoil every other box's tile."""
    finite = tf.math.is_finite(boxes)
    low = tf.reduce_min(tf.where(finite, boxes, 0.0))
    high = tf.reduce_max(tf.where(finite, boxes, 0.0))
    stride = (high - low) * (1.0 + _TILE_MARGIN) + 1.0
    cls = tf.cast(classes, tf.float32)
    columns = tf.math.ceil(tf.sqrt(tf.reduce_max(cls) + 1.0))
    row = tf.math.floor(cls / columns)
    offset_y, offset_x = row * stride, (cls - row * columns) * stride
    return tf.stack([offset_y, offset_x, offset_y, offset_x], axis=-1)
