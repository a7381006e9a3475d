"""End-to-end latency of an exported SavedModel: pre-processing, network, NMS.

    PYTHONPATH=. python benchmarks/inference.py --model_name efficientdet-d0 \
        --runs 50 [--ckpt_path efficientdet-d0/] [--image_hw 480x640]

Exports the model (random weights unless ``--ckpt_path``; the weights do not
change the work, except NMS, which always processes max_nms_inputs / all
anchors) to a temporary SavedModel, loads it back as a server would, and
times ``serving_default`` on one fixed uint8 batch: median and p90 ms per
image and images/s. Also times ``serving_bytes`` with the same image as a
JPEG (decode included). On a shared machine the numbers move with other
load: run it more than once, or use ``side_by_side.py``, which runs it
beside the official model. The last line is ``RESULT {json}``
(``results.py``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from efficientdet_tf.config import ConfigError  # noqa: E402
from efficientdet_tf.serving.export import (SERVING_BYTES, SERVING_DEFAULT,  # noqa: E402
                                    export_saved_model, load_model)
from efficientdet_tf.serving.inference import benchmark_serving, time_calls  # noqa: E402
from results import emit_result, peak_rss_gb  # noqa: E402  (benchmarks/)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", default="efficientdet-d0")
    parser.add_argument("--ckpt_path", default=None,
                        help="checkpoint to export (default: random weights)")
    parser.add_argument("--hparams", default="", help="config overrides")
    parser.add_argument("--image_hw", default=None,
                        help="input image HEIGHTxWIDTH (default: the "
                        "model's image_size, e.g. 512x512 for D0)")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2,
                        help="intra- and inter-op threads (0: TensorFlow's choice)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    try:
        model, config, _ = load_model(args.model_name, args.ckpt_path,
                                      args.hparams)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    image_hw = (tuple(int(v) for v in args.image_hw.lower().split("x"))
                if args.image_hw else tuple(config.image_size))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_saved_model(model, config, os.path.join(tmp, "export"))
        print(f"{config.name}: exported in {time.perf_counter() - start:.0f} "
              f"s; input {image_hw[0]}x{image_hw[1]} uint8, batch "
              f"{args.batch_size}, {args.runs} runs after {args.warmup} "
              "warm-up")
        signatures = tf.saved_model.load(path).signatures
        stats = benchmark_serving(signatures[SERVING_DEFAULT], image_hw,
                                  args.batch_size, args.runs, args.warmup)
        print(f"  serving_default (uint8): {stats.text()}")
        uint8_ms = stats.median_ms
        image = np.random.default_rng(0).integers(0, 256, (*image_hw, 3),
                                                  dtype=np.uint8)
        data = tf.constant([tf.io.encode_jpeg(image).numpy()] *
                           args.batch_size)
        bytes_fn = signatures[SERVING_BYTES]
        stats = time_calls(
            lambda: bytes_fn(image_bytes=data)["num_detections"].numpy(),
            args.batch_size, args.runs, args.warmup)
        print(f"  serving_bytes (JPEG):    {stats.text()}")
    emit_result({"ms": uint8_ms, "jpeg_ms": stats.median_ms,
                 "runs": args.runs, "peak_rss_gb": peak_rss_gb()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
