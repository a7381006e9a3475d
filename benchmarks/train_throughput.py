"""Training throughput of the real training loop: images/s, first-step
(trace) time and peak RSS.

    PYTHONPATH=. python benchmarks/train_throughput.py            # D0, 512, batch 4
    PYTHONPATH=. python benchmarks/train_throughput.py --steps 10 --threads 2
    PYTHONPATH=. python benchmarks/train_throughput.py --hparams grad_checkpoint=true

Writes synthetic COCO-like records (``input_pipeline.write_records``), then
drives :class:`efficientdet_tf.training.trainer.Trainer` exactly as ``main.py
--mode=train`` does: augmentation and anchor labeling in the input
pipeline, focal + box loss, L2, clipping, SGD momentum and the EMA update.
Timing uses the public ``Trainer.train(until_step)``: the first step
(tracing + one step + a checkpoint save) is reported apart, then
``--warmup`` untimed steps, then ``--steps`` timed ones (which end with one
checkpoint save, ~1 % of the time). Peak RSS is the process high-water
mark (``ru_maxrss``), which includes the input pipeline's buffers.

``--fixed_batch`` times the compiled step alone: one batch from the
pipeline, cached and fed again every step, EMA off; the like-for-like
counterpart of ``automl_reference.py train`` (``side_by_side.py`` runs
both and prints the ratio). The last line is ``RESULT {json}``
(``results.py``).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from efficientdet_tf.config import get_config  # noqa: E402
from efficientdet_tf.training.trainer import Trainer, TrainOptions  # noqa: E402
from input_pipeline import write_records  # noqa: E402  (benchmarks/)
from results import emit_result, peak_rss_gb  # noqa: E402  (benchmarks/)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", default="efficientdet-d0")
    parser.add_argument("--image_size", default="512",
                        help="512 or automl's WIDTHxHEIGHT")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps after the first one")
    parser.add_argument("--threads", type=int, default=2,
                        help="intra- and inter-op threads (0: TensorFlow's choice)")
    parser.add_argument("--hparams", default="",
                        help="extra overrides, e.g. mixed_precision=true")
    parser.add_argument("--fixed_batch", action="store_true",
                        help="one cached batch every step, EMA off (the "
                        "official harness's setting)")
    return parser.parse_args(argv)


def feed_one_batch(trainer: Trainer) -> None:
    """Replaces the trainer's input with its first batch, repeated: the
    step is timed without the input pipeline (whose threads would otherwise
    compete for the cores)."""
    batch = next(trainer.iterator)
    trainer.iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    overrides = f"image_size={args.image_size}"
    if args.fixed_batch:
        overrides += ",moving_average_decay=0"
    if args.hparams:
        overrides += "," + args.hparams
    config = get_config(args.model_name, overrides)
    total = 1 + args.warmup + args.steps
    with tempfile.TemporaryDirectory() as folder:
        pattern = write_records(folder, num_images=32, num_shards=2)
        options = TrainOptions(
            model_dir=os.path.join(folder, "run"), training_file_pattern=pattern,
            train_batch_size=args.batch_size,
            # One long epoch: no epoch-end checkpoints inside the timing.
            num_examples_per_epoch=args.batch_size * total,
            save_checkpoints_steps=10 ** 9, log_every_steps=10 ** 9, seed=0)
        rss_before = peak_rss_gb()
        start = time.perf_counter()
        trainer = Trainer(config, options, stream=io.StringIO())
        if args.fixed_batch:
            feed_one_batch(trainer)
        built = time.perf_counter() - start
        start = time.perf_counter()
        trainer.train(until_step=1)
        first = time.perf_counter() - start
        trainer.train(until_step=1 + args.warmup)
        start = time.perf_counter()
        trainer.train(until_step=total)
        timed = time.perf_counter() - start
    images_per_second = args.steps * args.batch_size / timed
    print(f"{config.name} {config.image_size[0]}x{config.image_size[1]}, batch "
          f"{args.batch_size}, {args.threads or 'default'} threads, "
          f"mixed_precision={config.mixed_precision}, "
          f"{'one fixed batch, EMA off' if args.fixed_batch else 'input pipeline'}")
    print(f"  build (model, optimizer, EMA, input): {built:.1f} s")
    print(f"  first step (trace + step + checkpoint): {first:.1f} s")
    print(f"  {args.steps} timed steps: {timed / args.steps:.2f} s/step, "
          f"{images_per_second:.2f} images/s")
    print(f"  peak RSS: {peak_rss_gb():.2f} GB (before building: {rss_before:.2f} GB)")
    emit_result({"images_per_second": images_per_second, "first_step_s": first,
                 "steps": args.steps, "peak_rss_gb": peak_rss_gb()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
