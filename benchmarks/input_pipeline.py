"""Training input-pipeline throughput on generated records (no model).

    PYTHONPATH=. python benchmarks/input_pipeline.py --model_name efficientdet-d0 \
        --batch_size 8 --batches 30

Writes ``--num_images`` synthetic 480x640 JPEGs with a few boxes each into a
temporary folder (COCO-like size and object count, so decoding, the
normalise/resize/crop and anchor labeling cost what they do on real data),
then times training-mode batches (flip, scale jitter, crop, anchor targets
for the preset's anchors) after a warm-up and prints images/s. On a shared
machine the number moves with other load: run it more than once.
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

from efficientdet_tf.config import ConfigError, get_config  # noqa: E402
from efficientdet_tf.data.pipeline import build_dataset  # noqa: E402
from efficientdet_tf.data.tfrecord import (Example, encode_example,  # noqa: E402
                                           shard_path)

IMAGE_HEIGHT, IMAGE_WIDTH = 480, 640
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = get_config(args.model_name, None if args.image_size is None
                            else {"image_size": args.image_size})
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        pattern = write_records(folder, args.num_images, args.num_shards)
        dataset = build_dataset(pattern, config, training=True,
                                batch_size=args.batch_size, seed=0)
        batches = iter(dataset)
        for _ in range(args.warmup):
            next(batches)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(batches)
        elapsed = time.perf_counter() - start
    height, width = config.image_size
    images_per_second = args.batches * args.batch_size / elapsed
    print(f"{config.name} training input {height}x{width}, batch "
          f"{args.batch_size}, {os.cpu_count()} CPUs: "
          f"{images_per_second:.1f} images/s "
          f"({elapsed / args.batches * 1000:.0f} ms/batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
