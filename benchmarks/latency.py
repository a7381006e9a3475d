"""Inference latency of the EfficientDet network alone (no pre/post-processing).

    PYTHONPATH=. python benchmarks/latency.py --model_name efficientdet-d0 \
        --runs 50 --jit_compile off,on --breakdown

Prints median / p90 ms per image and images/s for each ``jit_compile`` mode,
then the process's peak RSS. ``--breakdown`` also times the network cut after
the backbone and after the BiFPN (interleaved with the full network), so the
per-stage cost is the difference of consecutive rows. On a shared machine the
numbers move with other load: run it more than once.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from efficientdet_tf.config import ConfigError, get_config  # noqa: E402
from efficientdet_tf.model import build_model  # noqa: E402
from efficientdet_tf.profiling import (count_flops, measure_latency,  # noqa: E402
                                       network_stages)

JIT_MODES = {"off": False, "on": True}


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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = [m.strip() for m in args.jit_compile.split(",") if m.strip()]
    unknown = [m for m in modes if m not in JIT_MODES]
    if unknown or not modes:
        print(f"--jit_compile: expected a list of off/on, got "
              f"{args.jit_compile!r}", file=sys.stderr)
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
    models = (network_stages(model, config.backbone_name) if args.breakdown
              else {"network": model})
    for mode in modes:
        results = measure_latency(models, args.batch_size, args.runs,
                                  args.warmup, jit_compile=JIT_MODES[mode])
        for name, latency in results.items():
            print(f"  jit_compile={mode:3s} {name:8s} median "
                  f"{latency.median_ms:7.1f} ms/image  p90 "
                  f"{latency.p90_ms:7.1f} ms/image  "
                  f"{latency.images_per_second:6.2f} images/s")
    # ru_maxrss is in KiB on Linux.
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
