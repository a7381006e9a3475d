"""Recall on large images: the plain run (whole image resized to the
model's input) against tiled inference, same model, same images.

    PYTHONPATH=. python benchmarks/tiled_recall.py \\
        --saved_model_dir=demo_output/saved_model --num_images=4

Each image is a generated ``--image_size`` square scene
(:func:`efficientdet_tf.datasets.demo.large_image`) holding
``--num_objects`` shapes as large as in the dataset the model was trained
on (default: objects of the model's own image_size, e.g. the demo's 15-55
px objects on a 2048 px image). Resized whole to 128 px they become 1-3 px;
windows of ``--tile_size`` px keep them at their training size. Printed per
mode: recall (ground truth boxes matched by a detection of their class at
IoU >= ``--iou`` scoring >= ``--min_score``), the false detections at that
score and the seconds per image.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from efficientdet_tf.config import get_config  # noqa: E402
from efficientdet_tf.datasets.demo import large_image  # noqa: E402
from efficientdet_tf.evaluation.matching import match_image  # noqa: E402
from efficientdet_tf.fusion.fused import FusedPredictor, FusionOptions  # noqa: E402
from efficientdet_tf.fusion.merge import Detections  # noqa: E402
from efficientdet_tf.fusion.tiles import TileSpec  # noqa: E402
from efficientdet_tf.serving.predictors import Predict, open_model  # noqa: E402
from efficientdet_tf.utils.boxes import coco_bbox  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--saved_model_dir", required=True,
                   help="the model: SavedModel, .pb, .tflite, .onnx or model_dir")
    p.add_argument("--num_images", type=int, default=4)
    p.add_argument("--image_size", type=int, default=2048)
    p.add_argument("--num_objects", type=int, default=16)
    p.add_argument("--object_image_size", type=int,
                   help="objects as large as in images of this size "
                   "(default: the model's image_size)")
    p.add_argument("--tile_size", type=int,
                   help="default: the model's image_size")
    p.add_argument("--tile_overlap", type=float, default=0.2)
    p.add_argument("--min_score", type=float, default=0.3)
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def matched(found: Detections, truth_boxes: np.ndarray,
            truth_classes: np.ndarray, iou: float) -> tuple[int, int]:
    """(truths found, false detections), class by class."""
    hits = false = 0
    for label in set(truth_classes.tolist()) | set(found.classes.tolist()):
        mine = found.take(found.classes == label)
        xywh = np.array([coco_bbox(b[1], b[0], b[3], b[2]) for b in mine.boxes],
                        np.float64).reshape(-1, 4)
        truths = truth_boxes[truth_classes == label]
        match = match_image(truths, np.zeros(len(truths), bool), xywh, iou)
        hits += len(match.pairs)
        false += len(match.unmatched)
    return hits, false


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = open_model(args.saved_model_dir,
                       lambda: get_config("efficientdet-d0"))
    size = model.config.image_size[0]
    tiles = TileSpec(args.tile_size or size, args.tile_overlap)
    modes: dict[str, Predict] = {
        "plain resize": model.predict,
        f"tiles {tiles.size} px": FusedPredictor(
            [model], FusionOptions(tiles=tiles)),
    }
    totals = {name: [0, 0, 0.0] for name in modes}
    truths_total = 0
    for index in range(args.num_images):
        encoded, shapes = large_image(args.seed + index, args.image_size,
                                      args.num_objects,
                                      args.object_image_size or size)
        pixels = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
        boxes = np.array([coco_bbox(*s.box) for s in shapes], np.float64)
        classes = np.array([s.label for s in shapes])
        truths_total += len(shapes)
        for name, predict in modes.items():
            start = time.perf_counter()
            found = predict(pixels)
            totals[name][2] += time.perf_counter() - start
            found = found.take(found.scores >= args.min_score)
            hits, false = matched(found, boxes, classes, args.iou)
            totals[name][0] += hits
            totals[name][1] += false
    print(f"{args.num_images} images {args.image_size}x{args.image_size}, "
          f"{truths_total} objects; model input {size} px; score >= "
          f"{args.min_score}, IoU >= {args.iou}")
    for name, (hits, false, seconds) in totals.items():
        print(f"  {name:>14}: recall {hits}/{truths_total} "
              f"({hits / max(truths_total, 1):.2f}), {false} false "
              f"detections, {seconds / args.num_images:.2f} s/image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
