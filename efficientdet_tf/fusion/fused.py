"""Several models x test-time views x tiles -> one image's detections.

The composition is the same for every entry point (``infer``,
``saved_model_infer``, ``ensemble_infer``, ``eval_saved_model``): each model
(:class:`~efficientdet_tf.serving.predictors.LoadedModel`) runs on each view
(:mod:`~efficientdet_tf.fusion.views`); a view larger than its window is
cut into tiles and put back together (:mod:`~efficientdet_tf.fusion.tiles`);
then every (model, view) pair is one part of the merge
(:mod:`~efficientdet_tf.fusion.merge`, WBF by default), weighted by its
model's weight. With one model, no TTA and no tiles it is the model alone.

All of it is post-processing on NumPy detections outside the graph: the
models stay the unmodified exports.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.fusion.merge import METHODS, Detections, merge
from efficientdet_tf.fusion.tiles import (TileSpec, crop, fill_colour,
                                          Window, join_tiles, place,
                                          windows)
from efficientdet_tf.fusion.views import TtaSpec, View
from efficientdet_tf.serving.export import OUTPUT_KEYS
from efficientdet_tf.serving.inference import DecodedImage
from efficientdet_tf.serving.predictors import MAX_BATCH, LoadedModel

# Overlap of the windows a view larger than the plain run is cut into when
# no --tile_overlap applies (TTA scales above 1 without tiling).
VIEW_OVERLAP = 0.2


class FusionError(EfficientDetError):
    """Models or settings that cannot be fused; the message says why."""


@dataclasses.dataclass(frozen=True)
class FusionOptions:
    """How to combine: ``--tta``, ``--tile_*``, ``--ensemble_method``,
    ``--ensemble_weights`` and the merge's IoU threshold (None: the
    method's default)."""
    tta: TtaSpec = TtaSpec()
    tiles: TileSpec | None = None
    method: str = "wbf"
    weights: tuple[float, ...] | None = None
    iou_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FusionError(f"--ensemble_method={self.method}: use one of "
                              f"{', '.join(METHODS)}")
        if self.iou_threshold is not None and self.method == "soft_nms":
            raise FusionError("--ensemble_iou does not apply to soft_nms, "
                              "which decays overlapping scores by their IoU "
                              "instead of a threshold")

    @property
    def plain(self) -> bool:
        """No TTA and no tiles: one run of each model per image."""
        return not self.tta.enabled and self.tiles is None

    def describe(self, num_models: int) -> str:
        """One line for the log: what runs per image."""
        views = self.tta.views()
        text = [f"{num_models} model(s) x {len(views)} view(s)"]
        if self.tta.enabled:
            text.append("TTA " + ", ".join(
                f"{'flip ' if v.flip else ''}x{v.scale:g}" for v in views))
        if self.tiles:
            text.append(f"tiles {self.tiles.size} px, overlap "
                        f"{self.tiles.overlap:g}"
                        + (" + whole image" if self.tiles.full_image else ""))
        if num_models * len(views) > 1:
            text.append(f"merged by {self.method}")
        return "; ".join(text)


class FusedPredictor:
    """A :data:`~efficientdet_tf.serving.predictors.Predict` over models,
    views and tiles (module docstring)."""

    def __init__(self, models: Sequence[LoadedModel],
                 options: FusionOptions = FusionOptions()):
        if not models:
            raise FusionError("no model to run")
        weights = options.weights or (1.0,) * len(models)
        if len(weights) != len(models):
            raise FusionError(f"--ensemble_weights has {len(weights)} "
                              f"value(s) for {len(models)} model(s)")
        _check_same_classes(models)
        self.models, self.options = list(models), options
        self.views = options.tta.views()
        self.weights = [w for w in weights for _ in self.views]
        self.label_map = models[0].label_map

    def __call__(self, pixels: np.ndarray) -> Detections:
        parts = [run_view(model, pixels, view, self.options.tiles)
                 for model in self.models for view in self.views]
        if len(parts) == 1:
            return parts[0]
        kwargs = ({} if self.options.iou_threshold is None
                  else {"iou_threshold": self.options.iou_threshold})
        return merge(parts, self.options.method, self.weights, **kwargs)


def run_view(model: LoadedModel, pixels: np.ndarray, view: View,
             tiles: TileSpec | None) -> Detections:
    """One model on one view of ``pixels``, detections in its pixels.

    The window is the tile size, or without tiles the image's own size (so
    a scale below 1 is padded back to it and one above 1 is tiled by it:
    :mod:`~efficientdet_tf.fusion.views`)."""
    image = view.apply(pixels)
    size = ((tiles.size, tiles.size) if tiles else tuple(pixels.shape[:2]))
    overlap = tiles.overlap if tiles else VIEW_OVERLAP
    spots = windows(image.shape, size, overlap)
    if len(spots) == 1 and image.shape[:2] == size:
        found = model.predict(image)  # the plain run: nothing to pad or cut
    else:
        fill = fill_colour(model.config.mean_rgb)
        found_in: list[Detections] = []
        for start in range(0, len(spots), MAX_BATCH):  # bounded memory
            found_in += model.run(np.stack([
                crop(image, spot, size, fill)
                for spot in spots[start:start + MAX_BATCH]]))
        pieces = [place(found, spot, image.shape)
                  for found, spot in zip(found_in, spots)]
        whole = None
        if tiles and tiles.full_image and len(spots) > 1:
            whole = place(model.predict(image), Window(0, 0, *image.shape[:2]),
                          image.shape).found  # clipped, as the tiles are
        found = (pieces[0].found if len(pieces) == 1
                 else join_tiles(pieces, whole))
    return view.unmap(found, image.shape, pixels.shape)


def _check_same_classes(models: Sequence[LoadedModel]) -> None:
    """An ensemble's models must mean the same thing by each class id."""
    first = models[0]
    for other in models[1:]:
        if other.config.num_classes != first.config.num_classes or (
                first.label_map and other.label_map
                and first.label_map != other.label_map):
            raise FusionError(
                f"{other.path} and {first.path} predict different classes "
                f"({other.config.num_classes} vs {first.config.num_classes}: "
                f"{other.label_map} vs {first.label_map}); an ensemble needs "
                "models trained on the same label map")


class FusedDetector:
    """:class:`FusedPredictor` behind the interface ``run_inference`` drives
    (decoded images in, the export contract's arrays out), one image at a
    time: each image is many model runs already."""

    batch_size = None

    def __init__(self, fused: FusedPredictor):
        self.fused = fused
        self.label_map = fused.label_map

    def detect(self, images: Sequence[DecodedImage]) -> dict[str, np.ndarray]:
        found = [self.fused(image.pixels) for image in images]
        rows = max([1] + [len(f.scores) for f in found])
        outputs = {key: np.zeros((len(found), rows, 4) if key ==
                                 "detection_boxes" else (len(found), rows),
                                 np.int32 if key == "detection_classes"
                                 else np.float32)
                   for key in OUTPUT_KEYS[:3]}
        for i, f in enumerate(found):
            count = len(f.scores)
            outputs["detection_boxes"][i, :count] = f.boxes
            outputs["detection_scores"][i, :count] = f.scores
            outputs["detection_classes"][i, :count] = f.classes
        outputs["num_detections"] = np.array([len(f.scores) for f in found],
                                             np.int32)
        return outputs
