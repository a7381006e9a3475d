"""Training input-pipeline throughput per augmentation, against the
training step's, on generated records.

    PYTHONPATH=. python benchmarks/input_pipeline.py --model_name efficientdet-d0 \
        --batch_size 8 --batches 30
    PYTHONPATH=. python benchmarks/input_pipeline.py --rows none,mosaic --no_train_step

Writes ``--num_images`` synthetic 480x640 JPEGs with a few boxes each into a
temporary folder (COCO-like size and object count, so decoding, the
normalise/resize/crop and anchor labeling cost what they do on real data),
then times training-mode batches after a warm-up, one row per augmentation
setting (flip and scale jitter are always on, as in training): images/s of
the input alone, on every core. Last, unless ``--no_train_step``, it runs
``train_throughput.py --fixed_batch`` at the same size and batch in its own
process and prints, per row, the share of the machine's CPU time the input
would need to keep up with the step (training images/s over input
images/s): well under 100 % means the step, not the input, sets the pace.
On a shared machine the numbers move with other load: run it more than once.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from efficientdet_tf.config import ConfigError, get_config  # noqa: E402
from efficientdet_tf.data.pipeline import build_dataset  # noqa: E402
from efficientdet_tf.data.tfrecord import (Example, encode_example,  # noqa: E402
                                           shard_path)
from results import emit_result, parse_result  # noqa: E402  (benchmarks/)

IMAGE_HEIGHT, IMAGE_WIDTH = 480, 640
# Row name -> config overrides. Each multi-image op at probability 1 shows
# its full cost; "all" is a mixed recipe.
ROWS = {
    "none": "",
    "grid_mask": "grid_mask=true",
    "autoaugment v0": "autoaugment_policy=v0",
    "randaug": "autoaugment_policy=randaug",
    "mosaic": "mosaic_prob=1.0",
    "mixup": "mixup_prob=1.0",
    "cutmix": "cutmix_prob=1.0",
    "all": "grid_mask=true,autoaugment_policy=v0,mosaic_prob=0.5,"
           "mixup_prob=0.25,cutmix_prob=0.25",
}
BOXES_PER_IMAGE = 7  # COCO's average


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", default="efficientdet-d0",
                        help="a preset name; its image_size and anchors are used")
    parser.add_argument("--image_size", default=None,
                        help="override the preset: 512 or automl's WxH")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=30,
                        help="timed batches after warm-up")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed batches first (tracing, buffers filling)")
    parser.add_argument("--num_images", type=int, default=64,
                        help="synthetic images written (the dataset repeats)")
    parser.add_argument("--num_shards", type=int, default=4)
    parser.add_argument("--rows", default=",".join(ROWS),
                        help="augmentation rows to time, comma-separated, "
                        "from: " + ", ".join(ROWS))
    parser.add_argument("--no_train_step", action="store_true",
                        help="skip timing the training step")
    return parser.parse_args(argv)


def synthetic_example(rng: np.random.Generator, index: int) -> Example:
    """A smooth gradient with flat-coloured boxes: JPEG-compresses like a
    photo rather than like noise, which would be unrealistically slow."""
    y = np.linspace(0, 255, IMAGE_HEIGHT)[:, None, None]
    x = np.linspace(0, 255, IMAGE_WIDTH)[None, :, None]
    image = ((y + x) / 2 * rng.uniform(0.5, 1.0, 3)).astype(np.uint8)
    image = np.broadcast_to(image, (IMAGE_HEIGHT, IMAGE_WIDTH, 3)).copy()
    boxes = []
    for _ in range(BOXES_PER_IMAGE):
        y0, x0 = rng.uniform(0, 0.8, 2)
        y1, x1 = y0 + rng.uniform(0.05, 0.2), x0 + rng.uniform(0.05, 0.2)
        boxes.append((y0, x0, y1, x1))
        image[int(y0 * IMAGE_HEIGHT):int(y1 * IMAGE_HEIGHT),
              int(x0 * IMAGE_WIDTH):int(x1 * IMAGE_WIDTH)] = rng.integers(0, 255, 3)
    return Example(
        encoded=tf.io.encode_jpeg(image, quality=90).numpy(),
        height=IMAGE_HEIGHT, width=IMAGE_WIDTH, filename=f"{index}.jpg",
        source_id=str(index), boxes=boxes,
        labels=[int(c) for c in rng.integers(1, 91, len(boxes))],
        texts=["object"] * len(boxes), is_crowd=[0] * len(boxes),
        areas=[(y1 - y0) * (x1 - x0) * IMAGE_HEIGHT * IMAGE_WIDTH
               for y0, x0, y1, x1 in boxes])


def write_records(folder: str, num_images: int, num_shards: int) -> str:
    """Writes the shards; returns their glob."""
    rng = np.random.default_rng(0)
    prefix = os.path.join(folder, "bench")
    writers = [tf.io.TFRecordWriter(shard_path(prefix, k, num_shards))
               for k in range(num_shards)]
    for index in range(num_images):
        writers[index % num_shards].write(
            encode_example(synthetic_example(rng, index)))
    for writer in writers:
        writer.close()
    return f"{prefix}-*.tfrecord"


def time_input(pattern: str, config, args: argparse.Namespace) -> float:
    """Images/s of the training input under ``config``."""
    batches = iter(build_dataset(pattern, config, training=True,
                                 batch_size=args.batch_size, seed=0))
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(batches)
    return args.batches * args.batch_size / (time.perf_counter() - start)


def time_train_step(config, batch_size: int) -> float | None:
    """Images/s of the compiled training step at ``config``'s size (its own
    process, ``train_throughput.py --fixed_batch``); None if it failed."""
    height, width = config.image_size
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "train_throughput.py")
    done = subprocess.run(
        [sys.executable, script, "--fixed_batch", "--model_name", config.name,
         "--image_size", f"{width}x{height}", "--batch_size", str(batch_size),
         "--steps", "4", "--threads", "0"],
        capture_output=True, text=True, check=False)
    result = parse_result(done.stdout)
    if done.returncode or result is None:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return result["images_per_second"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    try:
        if unknown:
            raise ConfigError(f"unknown rows {unknown}; choose from {list(ROWS)}")
        base = get_config(args.model_name, None if args.image_size is None
                          else {"image_size": args.image_size})
        configs = {row: base.override(ROWS[row] or None) for row in rows}
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    height, width = base.image_size
    print(f"{base.name} training input {height}x{width}, batch "
          f"{args.batch_size}, {os.cpu_count()} CPUs")
    speeds = {}
    with tempfile.TemporaryDirectory() as folder:
        pattern = write_records(folder, args.num_images, args.num_shards)
        for row, config in configs.items():
            speeds[row] = time_input(pattern, config, args)
            print(f"  {row:<16} {speeds[row]:7.1f} images/s", flush=True)
    train = None if args.no_train_step else time_train_step(base,
                                                             args.batch_size)
    if train is not None:
        print(f"training step (fixed batch, all cores): {train:.2f} images/s; "
              f"CPU share the input needs to keep up:")
        for row, speed in speeds.items():
            print(f"  {row:<16} {100 * train / speed:5.1f} %")
    emit_result({"input_images_per_second": speeds,
                 "train_images_per_second": train})
    return 0


if __name__ == "__main__":
    sys.exit(main())
