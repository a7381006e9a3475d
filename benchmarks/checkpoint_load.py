"""Time loading the D0 fixture checkpoint: official format vs native format.

  PYTHONPATH=. python benchmarks/checkpoint_load.py [--runs 5]

The model is built once (tracing dominates that and is not what is measured);
each run is one full ``load_weights`` call: path resolution, format
detection, checks, reading and assigning every tensor. Fixtures come from
``EFFICIENTDET_FIXTURES`` (default ``../shared/fixtures`` beside the repo).
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from efficientdet_tf.modeling import checkpoint  # noqa: E402
from efficientdet_tf.config import get_config  # noqa: E402
from efficientdet_tf.modeling.model import build_model  # noqa: E402


def median_seconds(model, path: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        checkpoint.load_weights(model, path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5,
                        help="timed loads per format (median reported)")
    args = parser.parse_args()
    logging.getLogger("efficientdet_tf").setLevel(logging.WARNING)
    fixtures = pathlib.Path(os.environ.get(
        "EFFICIENTDET_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
    official = fixtures / "automl_d0_256x256" / "ckpt"
    if not official.is_dir():
        print(f"error: fixture checkpoint not found at {official} "
              "(set EFFICIENTDET_FIXTURES)", file=sys.stderr)
        return 1
    start = time.perf_counter()
    model = build_model(get_config("efficientdet-d0", {"image_size": 256}))
    print(f"build efficientdet-d0 (not timed below): "
          f"{time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    checkpoint.load_weights(model, official)
    print(f"official format, first load in the process: "
          f"{time.perf_counter() - start:.3f} s")
    seconds = median_seconds(model, str(official), args.runs)
    print(f"official format: {seconds:.3f} s (median of {args.runs})")
    with tempfile.TemporaryDirectory() as native_dir:
        start = time.perf_counter()
        checkpoint.save_native(model, native_dir)
        print(f"save_native: {time.perf_counter() - start:.3f} s")
        print(f"native format:   "
              f"{median_seconds(model, native_dir, args.runs):.3f} s "
              f"(median of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
