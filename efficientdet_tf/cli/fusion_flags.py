"""The flags of test-time augmentation, tiles and ensembles, shared by
``model_inspect.py``'s inference and evaluation runmodes, and what they
build (:mod:`efficientdet_tf.fusion`).

Kept apart from ``model_inspect`` so that every runmode that takes them
reads them the same way, and without importing TensorFlow: ``--help`` and
flag errors stay instant.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Callable, Sequence

from efficientdet_tf.cli.command import Parser, UsageError, boolean

if TYPE_CHECKING:
    from efficientdet_tf.config import Config
    from efficientdet_tf.fusion.fused import FusedPredictor, FusionOptions
    from efficientdet_tf.serving.predictors import LoadedModel

METHODS = ("wbf", "nms", "soft_nms")  # fusion.merge.METHODS, without NumPy


def add_fusion_flags(parser: Parser) -> None:
    """``--tta``, ``--tile_*``, ``--ensemble_*``."""
    flag = parser.add_argument
    flag("--tta", default="", help="test-time augmentation for infer, "
         "saved_model_infer, ensemble_infer and eval_saved_model: 'flip' "
         "and/or 'scales=a:b:c' (the size the network sees the image at, "
         "relative to the plain run; above 1 the image is run in tiles), "
         "e.g. --tta=flip,scales=0.8:1.0:1.2; the views' detections are "
         "merged by --ensemble_method (default: no TTA)")
    flag("--tile_size", type=int, help="run images in overlapping square "
         "windows of this many pixels (at their own resolution) and put the "
         "detections back together, boxes cut by a window's edge joined: "
         "for images much larger than the model's image_size (default: the "
         "whole image, resized)")
    flag("--tile_overlap", type=float, default=0.2, help="share of a tile "
         "that overlaps its neighbour; objects smaller than the overlap are "
         "seen whole in some tile (default %(default)s)")
    flag("--tile_full_image", type=boolean, nargs="?", const=True,
         default=False, help="with --tile_size, also run the whole image "
         "resized, for objects larger than a tile")
    flag("--ensemble_method", choices=METHODS, default="wbf",
         help="how the detections of several models and TTA views merge: "
         "wbf (weighted boxes fusion: score-weighted average boxes), nms or "
         "soft_nms (default %(default)s)")
    flag("--ensemble_weights", help="ensemble_infer / eval_saved_model with "
         "several models: one weight per model, comma-separated, e.g. 2,1,1 "
         "(default: equal)")
    flag("--ensemble_iou", type=float, help="IoU above which boxes are one "
         "object when merging (default: 0.55 for wbf, 0.5 for nms)")


def model_paths(flags: argparse.Namespace) -> list[str]:
    """``--saved_model_dir``'s comma-separated models."""
    paths = [p.strip() for p in (flags.saved_model_dir or "").split(",")
             if p.strip()]
    if not paths:
        raise UsageError("--saved_model_dir names no model")
    return paths


def fusion_options(flags: argparse.Namespace) -> FusionOptions:
    """The flags as :class:`~efficientdet_tf.fusion.fused.FusionOptions`
    (their errors are the library's, with the flag named)."""
    from efficientdet_tf.fusion.fused import FusionOptions
    from efficientdet_tf.fusion.tiles import TileSpec
    from efficientdet_tf.fusion.views import parse_tta
    weights = None
    if flags.ensemble_weights:
        try:
            weights = tuple(float(w) for w in flags.ensemble_weights.split(","))
        except ValueError:
            raise UsageError(f"--ensemble_weights={flags.ensemble_weights}: "
                             "numbers separated by commas") from None
    tiles = (TileSpec(flags.tile_size, flags.tile_overlap, flags.tile_full_image)
             if flags.tile_size is not None else None)
    return FusionOptions(parse_tta(flags.tta), tiles, flags.ensemble_method,
                         weights, flags.ensemble_iou)


def fused_predictor(models: Sequence[LoadedModel],
                    flags: argparse.Namespace) -> FusedPredictor:
    """``models`` fused as the flags say; prints what runs per image."""
    from efficientdet_tf.fusion.fused import FusedPredictor
    options = fusion_options(flags)
    fused = FusedPredictor(models, options)
    if len(models) > 1 or not options.plain:
        print(options.describe(len(models)), flush=True)
    return fused


def open_models(flags: argparse.Namespace,
                fallback: Callable[[], Config]) -> list[LoadedModel]:
    """``--saved_model_dir``'s models (configs from their files, else
    ``fallback``)."""
    from efficientdet_tf.serving.predictors import open_model
    return [open_model(path, fallback) for path in model_paths(flags)]
