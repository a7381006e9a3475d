"""Seconds the dataset doctor takes over a COCO JSON of ~10,000 boxes.

    PYTHONPATH=. python benchmarks/dataset_doctor.py --boxes 10000 --runs 3

Writes a synthetic COCO instances JSON to a temporary folder (images of a
few sizes, boxes of log-uniform sizes and aspect ratios, five classes), then
times what ``dataset/analyze_dataset.py --coco_json`` does once its imports
are done: read the JSON with the converters' checks, analyse under the
config (anchor coverage included), format the report and write report.json;
then ``--fit_anchors`` on that report, and the plots when matplotlib is
installed. Prints the median of ``--runs`` for each, and a ``RESULT`` line
(benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from efficientdet_tf.config import get_config  # noqa: E402
from efficientdet_tf.datasets import (doctor, doctor_fit,  # noqa: E402
                                      doctor_plots)
from efficientdet_tf.datasets.doctor_sources import read_coco_json  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results import emit_result, median  # noqa: E402  (benchmarks/)

IMAGE_SIZES = ((480, 640), (720, 1280), (1024, 768))  # (height, width)
CLASSES = 5
BOXES_PER_IMAGE = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=10_000,
                        help="boxes in the generated JSON")
    parser.add_argument("--model_name", default="efficientdet-d0")
    parser.add_argument("--runs", type=int, default=3, help="timed runs")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def write_coco(path: str, boxes: int, seed: int) -> None:
    """A COCO JSON of ``boxes`` boxes, ``BOXES_PER_IMAGE`` per image."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index in range(-(-boxes // BOXES_PER_IMAGE)):
        height, width = IMAGE_SIZES[index % len(IMAGE_SIZES)]
        images.append({"id": index + 1, "file_name": f"{index:06d}.jpg",
                       "width": width, "height": height})
        for _ in range(min(BOXES_PER_IMAGE, boxes - len(annotations))):
            size = np.exp(rng.uniform(np.log(4), np.log(min(height, width))))
            ratio = np.exp(rng.uniform(np.log(1 / 6), np.log(6)))
            w = min(width - 1.0, size * np.sqrt(ratio))
            h = min(height - 1.0, size / np.sqrt(ratio))
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 1,
                "category_id": int(rng.integers(1, CLASSES + 1)),
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": i, "name": f"class{i}"} for i in range(1, CLASSES + 1)]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": categories}, f)


def seconds(step: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return median(times)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = get_config(args.model_name, {"num_classes": CLASSES})
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "instances.json")
        write_coco(path, args.boxes, args.seed)

        def analysis() -> doctor.DatasetReport:
            report = doctor.analyze(read_coco_json(path), config)
            report.summary()
            doctor.write_report(report, folder)
            return report

        report = analysis()  # untimed: first calls build the anchor caches
        results = {"boxes": int(report.objects),
                   "analysis_s": seconds(analysis, args.runs),
                   "fit_anchors_s": seconds(
                       lambda: doctor_fit.fit_report_anchors(report),
                       args.runs)}
        if doctor_plots.write_plots(report, folder) is not None:
            results["plots_s"] = seconds(
                lambda: doctor_plots.write_plots(report, folder), args.runs)
    print(f"{results['boxes']} boxes, {args.model_name} "
          f"({config.image_size[0]}x{config.image_size[1]}), median of "
          f"{args.runs}:")
    print(f"  read + analyse + report.json: {results['analysis_s']:.2f} s")
    print(f"  --fit_anchors:                {results['fit_anchors_s']:.2f} s")
    if "plots_s" in results:
        print(f"  plots:                        {results['plots_s']:.2f} s")
    emit_result(results)


if __name__ == "__main__":
    main()
