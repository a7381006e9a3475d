"""Merge several lists of detections of one image: WBF, NMS and soft-NMS.

An ensemble (several models, or one model on flipped or rescaled copies of
the image) gives one list of boxes per member, and the same object is found
by most of them. NMS and soft-NMS keep the best of each group of overlapping
boxes and drop or demote the rest; weighted boxes fusion (WBF) averages the
group instead, so every member's localisation counts, which is why it is the
usual way to ensemble detectors.

This runs after the models, on the host, on a few hundred boxes: plain NumPy
and Python, no TensorFlow, so it merges the outputs of any runtime
(SavedModel, TFLite, ONNX) alike. Shared by the three methods:

* boxes are ``(ymin, xmin, ymax, xmax)`` in pixels, continuous coordinates
  (area ``(ymax - ymin) * (xmax - xmin)``, no ``+ 1``);
* a box whose *raw* score is below ``skip_score`` is dropped; the others
  have their score multiplied by their part's weight before anything else,
  so every method respects the weights; a box left with score 0 carries no
  evidence and is dropped too (in WBF a cluster of such boxes would have no
  weighted average);
* boxes of different classes are never compared;
* the output is sorted by score, highest first; ties keep the order of the
  parts, then of the rows within a part.
"""
from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from efficientdet_tf.errors import EfficientDetError


class MergeError(EfficientDetError):
    """Detections or settings the merge cannot use; the message says which."""


class Detections(NamedTuple):
    """One image's detections (a model's, or the merged result).

    The merge functions return float32 boxes and scores and int32 classes,
    the dtypes of the exported models' outputs; they accept arrays (or
    lists) of these shapes of any float dtype (classes: any integer one).
    """
    boxes: np.ndarray    # float [N, 4] ymin, xmin, ymax, xmax, pixels
    scores: np.ndarray   # float [N]
    classes: np.ndarray  # int [N], 1-based ids

    @staticmethod
    def empty() -> Detections:
        """No detections, with the shapes and dtypes of a merge result."""
        return Detections(np.zeros((0, 4), np.float32),
                          np.zeros(0, np.float32), np.zeros(0, np.int32))

    def take(self, index: np.ndarray | slice | Sequence[int]) -> Detections:
        """The rows selected by ``index`` (indices, a boolean mask or a
        slice)."""
        return Detections(self.boxes[index], self.scores[index],
                          self.classes[index])

    @staticmethod
    def concat(parts: Sequence[Detections]) -> Detections:
        """The rows of all ``parts``, in order."""
        if not parts:
            return Detections.empty()
        return Detections(*(np.concatenate(column) for column in zip(*parts)))


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of yxyx boxes ``[..., 4]``; an inverted box has area 0."""
    return (np.maximum(boxes[..., 2] - boxes[..., 0], 0)
            * np.maximum(boxes[..., 3] - boxes[..., 1], 0))


def pairwise_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas ``[N, M]`` of boxes ``a [N, 4]`` and ``b [M, 4]``."""
    a = np.asarray(a).reshape(-1, 1, 4)
    b = np.asarray(b).reshape(1, -1, 4)
    height = np.maximum(np.minimum(a[..., 2], b[..., 2])
                        - np.maximum(a[..., 0], b[..., 0]), 0)
    width = np.maximum(np.minimum(a[..., 3], b[..., 3])
                       - np.maximum(a[..., 1], b[..., 1]), 0)
    return height * width


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of boxes ``a [N, 4]`` and ``b [M, 4]`` (yxyx).

    A pair whose union is empty (two zero-area boxes) has IoU 0, computed
    without a division by zero.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    intersection = pairwise_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(union),
                     where=union > 0)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU ``[M]`` of one box ``[4]`` with each of ``boxes [M, 4]``."""
    return pairwise_iou(np.asarray(box).reshape(1, 4), boxes)[0]


def weighted_boxes_fusion(parts: Sequence[Detections],
                          weights: Sequence[float] | None = None, *,
                          iou_threshold: float = 0.55,
                          skip_score: float = 0.0) -> Detections:
    """Weighted boxes fusion (Solovyev, Wang, Gabruseva 2019, "Weighted
    boxes fusion: ensembling boxes from different object detection models",
    arXiv:1910.13302), per class.

    The boxes of all parts, with weighted scores ``s_i``, are visited from
    the highest score down. Each joins the cluster whose *fused* box it
    overlaps most, if that IoU is above ``iou_threshold``, or starts a new
    cluster. A cluster's fused box is ``sum(s_i * box_i) / sum(s_i)`` over
    its boxes, updated as boxes join (later boxes are matched against the
    average, not against the cluster's first box).

    The fused score counts each part once: the sum over the parts present
    in the cluster of that part's best ``s_i``, divided by ``sum(weights)``
    (``N`` for ``N`` unweighted parts). When every part gives at most one
    box per object this is the paper's ``mean(s_i) * min(T, N) / N`` (an
    object found by one of three models keeps a third of its score, by all
    the mean). It differs when a part gives several boxes for one object,
    which the exports here do: their soft-NMS keeps overlapping boxes at
    decayed scores. The paper's mean then counts those low duplicates
    against the object (on the demo's two-model ensemble AP fell from 0.855
    for the better model to 0.846; counting each part's best it rose to
    0.879). The default ``iou_threshold`` 0.55 is the paper's.
    """
    _check_fraction("iou_threshold", iou_threshold)
    pool, checked_weights, part_ids = _pool(parts, weights, skip_score)
    fused = []
    for rows in _class_rows(pool):
        group = pool.take(rows)
        boxes, scores = _fuse_class(group.boxes, group.scores, part_ids[rows],
                                    iou_threshold)
        fused.append(Detections(boxes, scores / checked_weights.sum(),
                                np.full(len(scores), group.classes[0])))
    return _by_score(fused)


def _fuse_class(boxes: np.ndarray, scores: np.ndarray, part_ids: np.ndarray,
                iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """WBF's clustering of one class's boxes ``[n, 4]`` with scores ``[n]``
    (positive, highest first) from parts ``part_ids [n]``: fused boxes
    ``[k, 4]`` and per cluster the sum of each part's best score ``[k]``.

    The clustering is sequential (each box's match depends on the fused
    boxes before it), so it is a loop over boxes. A class has tens of
    boxes and clusters, too few for NumPy: a call's overhead exceeds the
    arithmetic it does, and one box against all fused boxes in vectorised
    NumPy was slower than this loop over Python floats, which skips a
    fused box that it does not overlap after a comparison or two. Each
    cluster keeps running sums, so a box joining it costs O(1); boxes come
    best first, so a part's first box in a cluster is its best.
    """
    fused: list[tuple[float, float, float, float, float]] = []  # box, area
    sums: list[list[float]] = []  # s * ymin, s * xmin, s * ymax, s * xmax, s
    best_of_parts: list[float] = []
    parts_in: list[set[int]] = []
    for (y0, x0, y1, x1), s, part in zip(boxes.tolist(), scores.tolist(),
                                         part_ids.tolist()):
        area = (y1 - y0) * (x1 - x0)
        best, best_iou = -1, iou_threshold
        for k, (fy0, fx0, fy1, fx1, fused_area) in enumerate(
                fused if area > 0 else ()):  # zero area: IoU 0 with all
            if fy0 >= y1 or fy1 <= y0 or fx0 >= x1 or fx1 <= x0:
                continue  # no overlap: the common case, kept cheap
            intersection = (((y1 if y1 < fy1 else fy1)
                             - (y0 if y0 > fy0 else fy0))
                            * ((x1 if x1 < fx1 else fx1)
                               - (x0 if x0 > fx0 else fx0)))
            iou = intersection / (area + fused_area - intersection)
            if iou > best_iou:
                best, best_iou = k, iou
        if best < 0:
            fused.append((y0, x0, y1, x1, area))
            sums.append([s * y0, s * x0, s * y1, s * x1, s])
            best_of_parts.append(s)
            parts_in.append({part})
            continue
        total = sums[best]
        total[0] += s * y0
        total[1] += s * x0
        total[2] += s * y1
        total[3] += s * x1
        total[4] += s
        if part not in parts_in[best]:
            parts_in[best].add(part)
            best_of_parts[best] += s
        fy0, fx0 = total[0] / total[4], total[1] / total[4]
        fy1, fx1 = total[2] / total[4], total[3] / total[4]
        fused[best] = (fy0, fx0, fy1, fx1, (fy1 - fy0) * (fx1 - fx0))
    return np.array(fused)[:, :4], np.array(best_of_parts)


def nms(parts: Sequence[Detections], weights: Sequence[float] | None = None,
        *, iou_threshold: float = 0.5, skip_score: float = 0.0) -> Detections:
    """Greedy hard NMS per class over all parts together: the highest
    (weighted) score is kept and every box of its class overlapping it with
    IoU above ``iou_threshold`` is dropped, then the next remaining one."""
    _check_fraction("iou_threshold", iou_threshold)
    pool, _, _ = _pool(parts, weights, skip_score)
    kept = []
    for group in _by_class(pool):
        overlaps = pairwise_iou(group.boxes, group.boxes) > iou_threshold
        suppressed = np.zeros(len(group.scores), bool)
        keep = []
        for i in range(len(suppressed)):
            if not suppressed[i]:
                keep.append(i)
                suppressed |= overlaps[i]
        kept.append(group.take(keep))
    return _by_score(kept)


def soft_nms(parts: Sequence[Detections],
             weights: Sequence[float] | None = None, *, sigma: float = 0.5,
             skip_score: float = 0.0, min_score: float = 0.001
             ) -> Detections:
    """Gaussian soft-NMS (Bodla et al. 2017, "Soft-NMS -- Improving Object
    Detection With One Line of Code") per class over all parts together.

    The highest remaining (weighted) score is kept; every other remaining
    box of its class has its score multiplied by ``exp(-iou**2 / sigma)``
    and is dropped once below ``min_score``; repeat. Nothing is removed
    outright, so overlapping objects survive with lower scores. A box whose
    weighted score starts below ``min_score`` is dropped too.
    """
    if not sigma > 0:
        raise MergeError(f"sigma must be positive, got {sigma}")
    if not min_score >= 0:
        raise MergeError(f"min_score must be >= 0, got {min_score}")
    pool, _, _ = _pool(parts, weights, skip_score)
    kept = []
    for group in _by_class(pool):
        decay = np.exp(-pairwise_iou(group.boxes, group.boxes) ** 2 / sigma)
        scores = group.scores.copy()
        remaining = np.flatnonzero(scores >= min_score)
        keep = []
        while remaining.size:
            best = remaining[scores[remaining].argmax()]  # ties: first row
            keep.append(best)
            remaining = remaining[remaining != best]
            scores[remaining] *= decay[best, remaining]
            remaining = remaining[scores[remaining] >= min_score]
        kept.append(group.take(keep)._replace(scores=scores[keep]))
    return _by_score(kept)


def merge(parts: Sequence[Detections], method: str,
          weights: Sequence[float] | None = None, **kwargs: float
          ) -> Detections:
    """Merge ``parts`` with the method named ``method`` (one of
    :data:`METHODS`); ``kwargs`` are that method's settings."""
    if method not in _MERGERS:
        raise MergeError(f"unknown merge method {method!r} (known: "
                         f"{', '.join(METHODS)})")
    return _MERGERS[method](parts, weights, **kwargs)


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise MergeError(f"{name} must be in [0, 1], got {value}")


def _pool(parts: Sequence[Detections], weights: Sequence[float] | None,
          skip_score: float) -> tuple[Detections, np.ndarray, np.ndarray]:
    """All parts' rows with raw score >= ``skip_score`` and positive
    weighted score, as one float64 :class:`Detections` of weighted scores;
    the weights, checked (``[len(parts)]``); and each row's part index."""
    checked = [_checked(part, index) for index, part in enumerate(parts)]
    values = _checked_weights(weights, len(checked))
    pooled, part_ids = [], []
    for index, (part, weight) in enumerate(zip(checked, values)):
        part = part.take(part.scores >= skip_score)
        pooled.append(part._replace(scores=part.scores * weight))
        part_ids.append(np.full(len(part.scores), index))
    pool = Detections.concat(pooled)
    ids = np.concatenate(part_ids) if part_ids else np.zeros(0, int)
    kept = pool.scores > 0
    return pool.take(kept), values, ids[kept]


def _checked(part: Detections, index: int) -> Detections:
    """``part`` as float64 boxes and scores and int64 classes, or a
    :class:`MergeError` naming the part (and row) at fault."""
    boxes = np.asarray(part.boxes, np.float64)
    scores = np.asarray(part.scores, np.float64)
    classes = np.asarray(part.classes)
    shape = boxes.shape
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)  # no rows: [] as well as [0, 4]
    if scores.ndim != 1 or boxes.shape != (len(scores), 4) or (
            classes.shape != scores.shape):
        raise MergeError(
            f"part {index}: expected boxes [N, 4], scores [N] and classes "
            f"[N], got shapes {shape}, {scores.shape}, {classes.shape}")
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        raise MergeError(f"part {index}: classes must be integer ids, got "
                         f"dtype {classes.dtype}")
    bad = ~np.isfinite(boxes).all(axis=1) | ~np.isfinite(scores) | (
        scores < 0) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise MergeError(
            f"part {index} row {row}: box {boxes[row].tolist()} with score "
            f"{scores[row]} (expected finite ymin <= ymax, xmin <= xmax and "
            f"a finite score >= 0)")
    return Detections(boxes, scores, classes.astype(np.int64))


def _checked_weights(weights: Sequence[float] | None, count: int
                     ) -> np.ndarray:
    if weights is None:
        return np.ones(count)
    values = np.asarray(weights, np.float64)
    if values.shape != (count,):
        raise MergeError(f"weights: expected one per part ({count}), got "
                         f"{weights!r}")
    if count and not (np.isfinite(values).all() and (values >= 0).all()
                      and values.sum() > 0):
        raise MergeError(f"weights must be finite, >= 0 and not all zero, "
                         f"got {weights!r}")
    return values


def _class_rows(pool: Detections) -> Iterator[np.ndarray]:
    """The row indices of each class of ``pool`` in turn, highest score
    first (ties in the pool's order: part, then row)."""
    order = np.lexsort((-pool.scores, pool.classes))
    classes = pool.classes[order]
    bounds = [0, *(np.flatnonzero(np.diff(classes)) + 1), len(classes)]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if stop > start:
            yield order[start:stop]


def _by_class(pool: Detections) -> Iterator[Detections]:
    """``pool``'s rows of each class in turn (:func:`_class_rows`)."""
    for rows in _class_rows(pool):
        yield pool.take(rows)


def _by_score(found: Sequence[Detections]) -> Detections:
    """The rows of ``found``, highest score first, in the output dtypes."""
    if not found:
        return Detections.empty()
    merged = Detections.concat(found)
    order = np.argsort(-merged.scores, kind="stable")
    return Detections(merged.boxes[order].astype(np.float32),
                      merged.scores[order].astype(np.float32),
                      merged.classes[order].astype(np.int32))


_MERGERS: dict[str, Callable[..., Detections]] = {
    "wbf": weighted_boxes_fusion, "nms": nms, "soft_nms": soft_nms}
METHODS = tuple(_MERGERS)  # ("wbf", "nms", "soft_nms")
