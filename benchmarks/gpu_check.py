"""A short GPU run (a few minutes), for a machine that has one:

    python benchmarks/gpu_check.py [--automl_dir ~/automl/efficientdet]

Prints D0 512x512 training images/s with ``mixed_float16`` (one fixed
batch, EMA off) and the SavedModel's end-to-end latency at batch 1 and 8;
with the official code available (``--automl_dir`` or
``$AUTOML_EFFICIENTDET_DIR``), automl's training step (its mixed precision,
which is float16 on a GPU) and inference beside them, and the ratios. Each measurement runs in its own process (the
scripts beside this one). Without a GPU it says so and exits 0: no test
and no CI step depends on a GPU.
"""
from __future__ import annotations

import argparse
import os
import sys

from automl_reference import AUTOML_ENV  # (benchmarks/)
from side_by_side import HERE, run  # (benchmarks/)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--automl_dir", default=os.environ.get(AUTOML_ENV))
    parser.add_argument("--batch_size", type=int, default=16, help="training batch")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--runs", type=int, default=50, help="timed inference calls")
    return parser.parse_args(argv)


def gpu_names() -> list[str]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    return [d.name for d in tf.config.list_physical_devices("GPU")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpus = gpu_names()
    if not gpus:
        print("gpu_check: no GPU visible to TensorFlow; nothing to measure (skipped)")
        return 0
    print(f"gpu_check: {', '.join(gpus)}")
    python = sys.executable
    training = ["--fixed_batch", "--batch_size", str(args.batch_size),
                "--steps", str(args.steps), "--threads", "0"]
    result = run([python, str(HERE / "train_throughput.py"), *training,
                  "--hparams", "mixed_precision=true"])
    ours_train = result["images_per_second"]
    print(f"ours training, batch {args.batch_size}, mixed_float16: "
          f"{ours_train:.1f} images/s")
    ours_infer = {}
    for batch in (1, 8):
        result = run([python, str(HERE / "inference.py"), "--batch_size", str(batch),
                      "--runs", str(args.runs), "--threads", "0"])
        ours_infer[batch] = result["ms"]
        print(f"ours SavedModel end to end, batch {batch}: {result['ms']:.2f} ms/image")
    if not args.automl_dir:
        print(f"(official model not timed: pass --automl_dir or set ${AUTOML_ENV})")
        return 0
    official = [python, str(HERE / "automl_reference.py"), "--automl_dir",
                args.automl_dir, "--threads", "0"]
    result = run([*official, "train", "--mixed_precision", "--batch_size",
                  str(args.batch_size), "--steps", str(args.steps)])
    print(f"automl training, batch {args.batch_size}, mixed precision: "
          f"{result['images_per_second']:.1f} images/s (ours: "
          f"{ours_train / result['images_per_second']:.2f}x the throughput)")
    result = run([*official, "infer", "--runs", str(args.runs)])
    print(f"automl end to end, batch 1: {result['ms']:.2f} ms/image (ours: "
          f"{ours_infer[1] / result['ms']:.2f}x the time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
