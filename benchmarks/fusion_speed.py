"""Time per image of merging several models' detections: WBF, NMS, soft-NMS.

    PYTHONPATH=. python benchmarks/fusion_speed.py --runs 200
    PYTHONPATH=. python benchmarks/fusion_speed.py --models 5 --classes 1

Merging runs on the host for every image after the models, in Python, so it
must stay far below a model's own latency (the aim: WBF of 3 models x 100
boxes well under 10 ms per image on one CPU core). The inputs imitate an
ensemble's: ``--objects`` objects of ``--classes`` classes, each found by
each model with probability 0.9 as a jittered copy (5% of its size) with a
high score, and the rest of each model's ``--boxes`` rows filled with random
low-score boxes, as a detector's top-k output is. Every run is a new image;
the methods take turns on it, so a burst of load from other processes hits
all of them alike. On a shared machine the numbers move: run it more than
once.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from efficientdet_tf.fusion.merge import METHODS, Detections, merge

_IMAGE_SIZE = 640.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100,
                        help="timed images per method")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed images first")
    parser.add_argument("--models", type=int, default=3,
                        help="parts to merge (models of the ensemble)")
    parser.add_argument("--boxes", type=int, default=100,
                        help="detections per model")
    parser.add_argument("--objects", type=int, default=30,
                        help="true objects per image")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def synthetic_parts(rng: np.random.Generator, models: int, boxes: int,
                    objects: int, classes: int) -> list[Detections]:
    """One image's detections by ``models`` models (see the module doc)."""
    size = rng.uniform(20, 200, (objects, 2))  # height, width
    center = rng.uniform(0, _IMAGE_SIZE, (objects, 2))
    truth = np.concatenate([center - size / 2, center + size / 2], axis=1)
    truth_classes = rng.integers(1, classes + 1, objects)
    parts = []
    for _ in range(models):
        found = np.flatnonzero(rng.random(objects) < 0.9)[:boxes]
        jitter = rng.normal(0, 0.05, (len(found), 4)) * np.tile(size[found],
                                                                 2)
        noise = np.sort(rng.uniform(0, _IMAGE_SIZE, (boxes - len(found), 2, 2)),
                        axis=1).reshape(-1, 4)  # ymin, xmin, ymax, xmax
        parts.append(Detections(
            np.concatenate([truth[found] + jitter, noise]).astype(np.float32),
            np.concatenate([rng.uniform(0.4, 0.95, len(found)),
                            rng.uniform(0.01, 0.3, len(noise))]
                           ).astype(np.float32),
            np.concatenate([truth_classes[found],
                            rng.integers(1, classes + 1, len(noise))]
                           ).astype(np.int32)))
    return parts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if min(args.runs, args.models, args.boxes, args.objects,
           args.classes) < 1 or args.warmup < 0:
        print("error: --runs, --models, --boxes, --objects and --classes "
              "must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    outputs = dict.fromkeys(METHODS, 0)
    for run in range(args.warmup + args.runs):
        parts = synthetic_parts(rng, args.models, args.boxes, args.objects,
                                args.classes)
        for method in METHODS:
            start = time.perf_counter()
            found = merge(parts, method)
            elapsed = (time.perf_counter() - start) * 1000
            if run >= args.warmup:
                times[method].append(elapsed)
                outputs[method] += len(found.scores)
    print(f"{args.objects} objects of {args.classes} classes, median and p90 "
          f"of {args.runs} images")
    for method in METHODS:
        print(f"{method} {args.models} models x {args.boxes} boxes: median "
              f"{np.median(times[method]):.2f} ms, p90 "
              f"{np.percentile(times[method], 90):.2f} ms "
              f"({outputs[method] / args.runs:.0f} boxes out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
