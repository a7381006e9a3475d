"""Inference latency: the network alone, then end to end as deployed.

    PYTHONPATH=. python benchmarks/latency.py                 # all formats, D0
    PYTHONPATH=. python benchmarks/latency.py --formats network \
        --jit_compile off,on --breakdown

Formats (``--formats``, comma-separated):

* ``network``: the Keras model on a normalised batch, no pre/post-processing,
  for each ``--jit_compile`` mode; ``--breakdown`` also times the network
  cut after the backbone and after the BiFPN (interleaved with the full
  network), so per-stage cost is the difference of consecutive rows.
* ``saved_model``: the exported SavedModel's ``serving_default`` loaded
  back as a server would: uint8 image in, resize + normalise, network, soft-NMS,
  detections out.
* ``tflite_fp32`` / ``tflite_int8``: the ``.tflite`` files of
  ``model_inspect.py --runmode=tflite`` on the TFLite interpreter with
  ``--threads`` threads: letterboxing (numpy/TF, outside the model), network
  and NMS. INT8 is calibrated on generated demo images.

Every row prints median / p90 ms per image and images/s. These are this
machine's numbers only: machines differ by up to 2.5x and a shared one moves
with other load, so a comparison with the official model is a ratio
measured in the same run (``side_by_side.py``).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from efficientdet_tf.config import Config, ConfigError, get_config  # noqa: E402
from efficientdet_tf.datasets.demo import make_demo_dataset  # noqa: E402
from efficientdet_tf.serving.export import (SERVING_DEFAULT,  # noqa: E402
                                    export_saved_model)
from efficientdet_tf.serving.inference import benchmark_serving, time_calls  # noqa: E402
from efficientdet_tf.modeling.model import build_model  # noqa: E402
from efficientdet_tf.utils.profiling import (Latency, count_flops,  # noqa: E402
                                       measure_latency, network_stages)
from efficientdet_tf.serving.tflite_export import (TFLiteDetector,  # noqa: E402
                                           export_tflite, letterbox)

JIT_MODES = {"off": False, "on": True}
FORMATS = ("network", "saved_model", "tflite_fp32", "tflite_int8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", default="efficientdet-d0",
                        help="a preset name, e.g. efficientdet-d0")
    parser.add_argument("--image_size", default=None,
                        help="override the preset: 512 or automl's WxH")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50,
                        help="timed runs after warm-up")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed runs first (tracing, oneDNN primitive "
                             "caches, XLA compilation)")
    parser.add_argument("--jit_compile", default="off",
                        help="comma-separated XLA modes to time: off, on. "
                             "XLA on CPU is very slow for depthwise convs.")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time backbone and backbone+BiFPN prefixes")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated, from {', '.join(FORMATS)}")
    parser.add_argument("--threads", type=int, default=2,
                        help="TFLite interpreter threads")
    parser.add_argument("--calibration_images", type=int, default=8,
                        help="generated images calibrating tflite_int8")
    return parser.parse_args(argv)


def row(name: str, latency: Latency) -> str:
    return (f"  {name:24s} median {latency.median_ms:7.1f} ms/image  p90 "
            f"{latency.p90_ms:7.1f} ms/image  {latency.images_per_second:6.2f} "
            "images/s")


def time_deployed(model, config: Config, formats: list[str],
                  args: argparse.Namespace) -> None:
    """Exports to each deployed format in a temporary folder and times it
    end to end on one random image of the model's input size."""
    height, width = config.image_size
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3),
                                              dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        if "saved_model" in formats:
            start = time.perf_counter()
            path = export_saved_model(model, config, os.path.join(tmp, "saved"))
            print(f"  (SavedModel exported in {time.perf_counter() - start:.0f} s)")
            serving = tf.saved_model.load(path).signatures[SERVING_DEFAULT]
            print(row("saved_model (end to end)", benchmark_serving(
                serving, (height, width), args.batch_size, args.runs,
                args.warmup)))
        quantizations = [f.split("_")[1] for f in formats if f.startswith("tflite")]
        if not quantizations:
            return
        calibration = None
        if "int8" in quantizations:
            make_demo_dataset(os.path.join(tmp, "demo"), args.calibration_images,
                              0, seed=0, image_size=max(height, width))
            calibration = os.path.join(tmp, "demo", "train", "images")
        start = time.perf_counter()
        paths = export_tflite(model, config, os.path.join(tmp, "tflite"),
                              quantizations, calibration,
                              num_calibration_steps=args.calibration_images)
        print(f"  (TFLite {', '.join(quantizations)} converted in "
              f"{time.perf_counter() - start:.0f} s)")
        for quantization, path in paths.items():
            detector = TFLiteDetector(path, num_threads=args.threads)

            def call() -> None:
                boxed, _ = letterbox(image, config.image_size, config.mean_rgb)
                detector.detect(boxed[None])
            print(row(f"tflite_{quantization} ({args.threads} threads)",
                      time_calls(call, 1, args.runs, args.warmup)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = [m.strip() for m in args.jit_compile.split(",") if m.strip()]
    unknown = [m for m in modes if m not in JIT_MODES]
    if unknown or not modes:
        print(f"--jit_compile: expected a list of off/on, got "
              f"{args.jit_compile!r}", file=sys.stderr)
        return 2
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or any(f not in FORMATS for f in formats):
        print(f"--formats: expected a list from {', '.join(FORMATS)}, got "
              f"{args.formats!r}", file=sys.stderr)
        return 2
    if args.batch_size != 1 and any(f.startswith("tflite") for f in formats):
        print("--formats tflite_*: the TFLite models are exported for batch 1",
              file=sys.stderr)
        return 2
    if args.batch_size < 1 or args.runs < 1 or args.warmup < 0:
        print("--batch_size and --runs must be >= 1 and --warmup >= 0",
              file=sys.stderr)
        return 2
    try:
        config = get_config(args.model_name, None if args.image_size is None
                            else {"image_size": args.image_size})
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = build_model(config)
    height, width = config.image_size
    print(f"{config.name} {height}x{width} batch {args.batch_size}: "
          f"{count_flops(model) / 1e9:.3f}B multiply-adds/image; "
          f"{args.runs} runs after {args.warmup} warm-up")
    if "network" in formats:
        models = (network_stages(model, config.backbone_name) if args.breakdown
                  else {"network": model})
        for mode in modes:
            results = measure_latency(models, args.batch_size, args.runs,
                                      args.warmup, jit_compile=JIT_MODES[mode])
            for name, latency in results.items():
                print(row(f"{name} (jit_compile={mode})", latency))
    time_deployed(model, config, formats, args)
    # ru_maxrss is in KiB on Linux.
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
