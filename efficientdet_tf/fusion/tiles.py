"""Sliced inference: an image much larger than the network's input, run in
overlapping windows at its own resolution, the detections put back
together.

Resizing a 4000 px aerial photo to 512 px shrinks a 30 px car to 4 px,
which no anchor matches. Windows of ``tile_size`` px (letterboxed by the
model like any image) keep objects near the size they were trained at.

Putting the detections together is the delicate part: an object on a
window's inner edge is cut, and its box ends at the edge.

* Each window is placed so that neighbours overlap by ``overlap`` of a
  window; an object smaller than the overlap lies whole in some window.
* A box within :data:`EDGE_MARGIN` of an inner edge (an edge inside the
  image) is *cut*. A cut box mostly covered by an uncut box of its class
  (:data:`COVERED`, intersection over the cut box's area) is the part of an
  object seen whole elsewhere: dropped.
* The cut boxes left belong to objects larger than the overlap, seen only in
  pieces. Two pieces of one class from different windows are one object
  when they agree where their windows overlap: the parts of the two boxes
  inside the shared region have IoU >= :data:`ALIGNED` (both are that
  region's share of the object). Joined pieces (chains of them, for an
  object across several windows) become their union box, with the highest
  score among them. A piece of background junk that merely touches a real
  object's piece does not agree with it in the shared region, so it is not
  swallowed into a large false box.
* Duplicates of objects inside an overlap, seen whole by two windows, are
  removed by NMS at the end; the optional whole-image pass joins as uncut
  boxes (it sees large objects whole).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.fusion.merge import (Detections, box_area, nms,
                                          pairwise_intersection)

EDGE_MARGIN = 0.015  # of a window's side (at least 2 px): "touches the edge"
COVERED = 0.6  # a cut box this much inside an uncut one is part of it
ALIGNED = 0.5  # pieces agreeing this much (IoU) in their shared region join
DUPLICATE_IOU = 0.5  # NMS threshold for whole objects seen twice
# Hundreds of windows x up to 100 detections each: only the best this many
# are put together (COCO counts 100 per image; the rest cannot rank).
MAX_CANDIDATES = 2000


class TileError(EfficientDetError):
    """Tile settings that cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class TileSpec:
    """``--tile_size`` (square windows, in pixels of the image),
    ``--tile_overlap`` (share of a window shared with its neighbour) and
    ``--tile_full_image`` (also run the whole image, letterboxed)."""
    size: int
    overlap: float = 0.2
    full_image: bool = False

    def __post_init__(self) -> None:
        if self.size < 16:
            raise TileError(f"--tile_size must be at least 16 px, got {self.size}")
        if not 0 <= self.overlap < 0.9:
            raise TileError(f"--tile_overlap is a share of a tile in [0, 0.9), "
                            f"got {self.overlap}")


class Window(NamedTuple):
    """A window's top-left corner and size in the image."""
    top: int
    left: int
    height: int
    width: int


def positions(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows covering ``length`` px: evenly spread, the
    first at 0 and the last ending at the border, neighbours sharing at
    least ``overlap`` of a window."""
    if length <= window:
        return [0]
    stride = max(1.0, window * (1.0 - overlap))
    count = int(np.ceil((length - window) / stride)) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - window, count)})


def windows(shape: Sequence[int], size: tuple[int, int],
            overlap: float) -> list[Window]:
    """The windows over an image of ``shape`` (``[h, w, ...]``), each at
    most ``size`` and cut by the image border."""
    height, width = shape[:2]
    return [Window(top, left, min(size[0], height), min(size[1], width))
            for top in positions(height, size[0], overlap)
            for left in positions(width, size[1], overlap)]


def crop(pixels: np.ndarray, window: Window, size: tuple[int, int],
         fill: np.ndarray) -> np.ndarray:
    """The window's pixels, padded to ``size`` with ``fill`` (the model's
    mean colour, what its letterbox pads with) so every window is
    letterboxed by the same factor."""
    out = np.empty((*size, 3), np.uint8)
    out[...] = fill
    out[:window.height, :window.width] = pixels[
        window.top:window.top + window.height,
        window.left:window.left + window.width]
    return out


def fill_colour(mean_rgb: float | Sequence[float]) -> np.ndarray:
    """The uint8 colour a letterbox pads with: the rounded mean."""
    return np.broadcast_to(np.round(np.asarray(mean_rgb, np.float32)),
                           (3,)).astype(np.uint8)


class Placed(NamedTuple):
    """A window's detections in image pixels, which of them are cut by an
    inner edge, and the window."""
    found: Detections
    cut: np.ndarray
    window: Window


def edge_margin(window: Window) -> float:
    """How near an edge a box edge must be to count as cut by it."""
    return max(2.0, EDGE_MARGIN * max(window.height, window.width))


def place(found: Detections, window: Window, shape: Sequence[int]) -> Placed:
    """A window's detections in image pixels (clipped to the window's real
    pixels, not its padding), and which of them are cut by an inner edge."""
    top, left, height, width = window
    boxes = np.clip(found.boxes, 0, [height, width, height, width])
    boxes = boxes + np.array([top, left, top, left], np.float32)
    inner = np.array([top > 0, left > 0, top + height < shape[0],
                      left + width < shape[1]])
    edges = np.array([top, left, top + height, left + width], np.float32)
    near = np.abs(boxes - edges) <= edge_margin(window)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    cut = (near & inner).any(axis=1)
    return Placed(Detections(boxes[keep].astype(np.float32),
                             found.scores[keep], found.classes[keep]),
                  cut[keep], window)


def join_tiles(pieces: Sequence[Placed],
               whole: Detections | None = None) -> Detections:
    """The windows' placed detections and the whole-image pass (uncut) ->
    one set (module docstring)."""
    parts = [p.found for p in pieces] + ([whole] if whole else [])
    if not parts:
        return Detections.empty()
    flags = [p.cut for p in pieces] + (
        [np.zeros(len(whole.scores), bool)] if whole else [])
    # Each row's window as (top, left, bottom, right, margin).
    frames = [[w.top, w.left, w.top + w.height, w.left + w.width,
               edge_margin(w)] for w in (p.window for p in pieces)]
    frame_rows = np.concatenate(
        [np.tile(np.asarray(frame, np.float32), (len(p.found.scores), 1))
         for frame, p in zip(frames, pieces)]
        + ([np.zeros((len(whole.scores), 5), np.float32)] if whole else []))
    window_ids = np.concatenate([np.full(len(p.scores), i)
                                 for i, p in enumerate(parts)])
    found, cut = Detections.concat(parts), np.concatenate(flags)
    best = np.argsort(-found.scores, kind="stable")[:MAX_CANDIDATES]
    found, cut = found.take(best), cut[best]
    window_ids, frame_rows = window_ids[best], frame_rows[best]
    uncut = found.take(~cut)
    kept_cut = _uncovered(found.take(cut), uncut)
    joined = _join_pieces(found.take(cut).take(kept_cut),
                          window_ids[cut][kept_cut], frame_rows[cut][kept_cut])
    return nms([Detections.concat([uncut, joined])],
               iou_threshold=DUPLICATE_IOU)


def _uncovered(cut: Detections, uncut: Detections) -> np.ndarray:
    """Mask of the cut boxes no uncut box of their class covers."""
    if not len(cut.scores) or not len(uncut.scores):
        return np.ones(len(cut.scores), bool)
    inter = pairwise_intersection(cut.boxes, uncut.boxes)
    area = np.maximum(box_area(cut.boxes), 1e-9)[:, None]
    same = cut.classes[:, None] == uncut.classes[None, :]
    return ~((inter / area >= COVERED) & same).any(axis=1)


def _join_pieces(cut: Detections, window_ids: np.ndarray,
                 frames: np.ndarray) -> Detections:
    """Union boxes of the pieces of one object (module docstring);
    ``frames [n, 5]``: each piece's window and edge margin."""
    if len(cut.scores) < 2:
        return cut
    joined = np.zeros((len(cut.scores),) * 2, bool)
    for label in np.unique(cut.classes):
        rows = np.flatnonzero(cut.classes == label)
        agree = _agree_in_shared_region(cut.boxes[rows], frames[rows])
        agree &= window_ids[rows][:, None] != window_ids[rows][None, :]
        joined[np.ix_(rows, rows)] = agree
    groups = _components(joined)
    boxes = cut.boxes
    order = sorted(set(groups))
    union = np.array([[boxes[groups == g, 0].min(), boxes[groups == g, 1].min(),
                       boxes[groups == g, 2].max(), boxes[groups == g, 3].max()]
                      for g in order], np.float32)
    best = [np.flatnonzero(groups == g)[np.argmax(cut.scores[groups == g])]
            for g in order]
    return Detections(union, cut.scores[best], cut.classes[best])


def _agree_in_shared_region(boxes: np.ndarray, frames: np.ndarray
                            ) -> np.ndarray:
    """``[n, n]``: whether the parts of boxes i and j inside the region
    their windows share (grown by the edge margin, so that windows which
    only touch share a strip) have IoU >= :data:`ALIGNED`."""
    grow = np.maximum(frames[:, None, 4], frames[None, :, 4])
    region = np.stack([
        np.maximum(frames[:, None, 0], frames[None, :, 0]) - grow,
        np.maximum(frames[:, None, 1], frames[None, :, 1]) - grow,
        np.minimum(frames[:, None, 2], frames[None, :, 2]) + grow,
        np.minimum(frames[:, None, 3], frames[None, :, 3]) + grow], axis=-1)
    mine = _clip_to(np.broadcast_to(boxes[:, None], region.shape), region)
    theirs = _clip_to(np.broadcast_to(boxes[None, :], region.shape), region)
    inter = box_area(_clip_to(mine, theirs))
    union = box_area(mine) + box_area(theirs) - inter
    return np.divide(inter, union, out=np.zeros_like(union),
                     where=union > 0) >= ALIGNED


def _clip_to(boxes: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``boxes`` intersected with ``region`` (elementwise, ``[..., 4]``);
    an empty intersection has zero area."""
    return np.concatenate([np.maximum(boxes[..., :2], region[..., :2]),
                           np.minimum(boxes[..., 2:], region[..., 2:])],
                          axis=-1)


def _components(adjacent: np.ndarray) -> np.ndarray:
    """Connected-component label of each node of a symmetric adjacency
    matrix (pieces of an object at a corner of four windows chain)."""
    labels = np.arange(len(adjacent))
    changed = True
    while changed:  # label propagation; a few rounds for a handful of pieces
        spread = np.where(adjacent, labels[None, :], labels[:, None]).min(axis=1)
        changed = bool((spread != labels).any())
        labels = spread
    return labels
