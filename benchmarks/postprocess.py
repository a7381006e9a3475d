"""Latency of post-processing (decode + NMS) on D0-sized head outputs.

    PYTHONPATH=. python benchmarks/postprocess.py --batch_sizes 1,8 --runs 30

Random head outputs for ``--model_name`` at its image size (efficientdet-d0:
49,104 anchors x 90 classes): logits ~ N(mean, std), box codes ~ N(0, 0.5).
The default N(0, 1) logits are a worst case for soft-NMS: every candidate
scores far above ``score_thresh``, so none is dropped before NMS (a trained
model's logits are mostly very negative). Each (method, batch size) runs as a
``tf.function`` traced once for static shapes (``--batch_dims dynamic``: a
``[None, ...]`` signature, the ``tf.map_fn`` path of exported models), then
all of them take turns for ``--runs`` timed calls each; the median and p90
per image are printed.
``--class_loop`` also times automl's algorithm (one NMS call per class, as
its ``per_class_nms``) on the same candidates, as a baseline measured on the
same machine. On a shared machine the numbers move with other load: run it
more than once.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from efficientdet_tf.ops.anchors import anchor_boxes, decode_boxes  # noqa: E402
from efficientdet_tf.config import ConfigError, get_config  # noqa: E402
from efficientdet_tf.ops.postprocess import (NmsSettings, postprocess,  # noqa: E402
                                         select_candidates)

METHODS = ("hard", "gaussian")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", default="efficientdet-d0")
    parser.add_argument("--image_size", default=None,
                        help="override the preset: 512 or automl's WxH")
    parser.add_argument("--batch_sizes", default="1,8",
                        help="comma-separated batch sizes")
    parser.add_argument("--methods", default="hard,gaussian",
                        help="comma-separated nms_configs.method values")
    parser.add_argument("--runs", type=int, default=30, help="timed runs")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed runs first (tracing, allocations)")
    parser.add_argument("--logit_mean", type=float, default=0.0)
    parser.add_argument("--logit_std", type=float, default=1.0)
    parser.add_argument("--max_nms_inputs", type=int, default=0,
                        help="nms_configs.max_nms_inputs (0: every anchor)")
    parser.add_argument("--class_agnostic", action="store_true",
                        help="nms_configs.per_class=false (automl 'global')")
    parser.add_argument("--batch_dims", default="static",
                        help="comma-separated: static (traced for the batch "
                             "size: unrolled), dynamic ([None, ...] "
                             "signature: tf.map_fn, as exported models)")
    parser.add_argument("--class_loop", action="store_true",
                        help="also time automl's one-NMS-per-class loop")
    return parser.parse_args(argv)


def head_outputs(config, batch: int, mean: float, std: float,
                 seed: int = 0) -> list[np.ndarray]:
    """Random per-level class outputs, then box outputs (float32), shaped as
    ``build_model``'s: logits ~ N(mean, std), box codes ~ N(0, 0.5)."""
    rng = np.random.default_rng(seed)
    height, width = config.image_size
    anchors = config.num_scales * len(config.aspect_ratios)
    classes, boxes = [], []
    for level in range(config.min_level, config.max_level + 1):
        shape = (batch, height // 2 ** level, width // 2 ** level)
        classes.append(rng.normal(mean, std, shape + (anchors * config.num_classes,)))
        boxes.append(rng.normal(0.0, 0.5, shape + (anchors * 4,)))
    return [x.astype(np.float32) for x in classes + boxes]


def class_loop_nms(config) -> Callable[..., tf.Tensor]:
    """automl's per-class algorithm: for every class, gather its candidates
    and run NMS with ``max_output_size`` results, then keep the best."""
    settings = NmsSettings.from_config(config.nms_configs)
    anchors = anchor_boxes(config)
    levels = config.max_level - config.min_level + 1

    def one_image(boxes, scores, classes):
        kept_scores = []
        for cls in range(config.num_classes):
            index = tf.where(tf.equal(classes, cls))[:, 0]
            _, kept, _ = tf.raw_ops.NonMaxSuppressionV5(
                boxes=tf.gather(boxes, index), scores=tf.gather(scores, index),
                max_output_size=settings.max_output_size,
                iou_threshold=settings.iou_thresh,
                score_threshold=settings.score_thresh,
                soft_nms_sigma=settings.sigma / 2, pad_to_max_output_size=False)
            kept_scores.append(kept)
        return tf.math.top_k(tf.concat(kept_scores, 0),
                             settings.max_output_size).values

    def run(*outputs):
        candidates = select_candidates(outputs[:levels], outputs[levels:],
                                       anchors, config.num_classes)
        boxes = decode_boxes(candidates.codes, candidates.anchors)
        scores = tf.sigmoid(candidates.logits)
        return tf.stack([one_image(boxes[i], scores[i], candidates.classes[i])
                         for i in range(boxes.shape[0])])
    return run


def time_interleaved(cases: dict[str, tuple[Callable[..., object], list, int]],
                     runs: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Median and p90 milliseconds per image of each ``(fn, inputs, batch)``.

    Cases take turns run by run, so a burst of load from other processes
    hits all of them alike instead of whichever happened to be running."""
    def call(fn, inputs):
        tf.nest.map_structure(lambda t: t.numpy(), fn(*inputs))
    for fn, inputs, _ in cases.values():
        for _ in range(warmup):
            call(fn, inputs)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (fn, inputs, batch) in cases.items():
            start = time.perf_counter()
            call(fn, inputs)
            times[name].append((time.perf_counter() - start) * 1000 / batch)
    return {name: (float(np.median(t)), float(np.percentile(t, 90)))
            for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        print(f"--methods: expected a list of {', '.join(METHODS)}, got "
              f"{args.methods!r}", file=sys.stderr)
        return 2
    batch_dims = [d.strip() for d in args.batch_dims.split(",") if d.strip()]
    if not batch_dims or any(d not in ("static", "dynamic") for d in batch_dims):
        print(f"--batch_dims: expected a list of static, dynamic, got "
              f"{args.batch_dims!r}", file=sys.stderr)
        return 2
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        base = get_config(args.model_name, None if args.image_size is None
                          else {"image_size": args.image_size})
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    levels = base.max_level - base.min_level + 1
    print(f"{base.name} {base.image_size[0]}x{base.image_size[1]}: "
          f"{len(anchor_boxes(base))} anchors x {base.num_classes} classes, "
          f"logits ~ N({args.logit_mean}, {args.logit_std}), "
          f"median of {args.runs} interleaved runs, {os.cpu_count()} CPUs")
    inputs = {batch: [tf.constant(x) for x in head_outputs(
        base, batch, args.logit_mean, args.logit_std)] for batch in batch_sizes}
    cases = {}
    for method in methods:
        config = base.override({"nms_configs": {
            "method": method, "max_nms_inputs": args.max_nms_inputs,
            "per_class": not args.class_agnostic}})
        variants = {f"ours {dims}": (dims, lambda *o, c=config: postprocess(
            list(o[:levels]), list(o[levels:]), c)) for dims in batch_dims}
        if args.class_loop:  # needs a static batch size
            variants["class loop"] = ("static", class_loop_nms(config))
        for batch in batch_sizes:
            for name, (dims, fn) in variants.items():
                signature = ([tf.TensorSpec((None,) + tuple(x.shape[1:]))
                              for x in inputs[batch]] if dims == "dynamic"
                             else None)
                cases[f"{method:8s} {name:14s} batch {batch:2d}"] = (
                    tf.function(fn, input_signature=signature), inputs[batch],
                    batch)
    for name, (median, p90) in time_interleaved(cases, args.runs,
                                                args.warmup).items():
        print(f"  {name}: median {median:6.1f} ms/image  p90 {p90:6.1f} ms/image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
