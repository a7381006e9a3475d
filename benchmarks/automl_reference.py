"""Times the official EfficientDet (google/automl) on this machine, for the
side-by-side ratios of ``side_by_side.py``; it is not part of the library.

    python benchmarks/automl_reference.py --automl_dir ~/automl/efficientdet infer
    python benchmarks/automl_reference.py --automl_dir ~/automl/efficientdet train

``--automl_dir`` (or ``$AUTOML_EFFICIENTDET_DIR``) is automl's
``efficientdet/`` folder, kept outside this project: ``git clone --depth 1
https://github.com/google/automl ~/automl`` gives ``~/automl/efficientdet``
(only its ``.py`` files are used). The official code is imported from
there, unmodified, and runs on ``tf-keras`` (the legacy Keras of
TensorFlow's version):
``pip install "tf-keras==$(python -c 'import tensorflow as tf; print(tf.__version__)')"``.

* ``infer``: automl's ``EfficientDetModel`` end to end, batch 1: uint8
  image, its pre-processing, the network and class-agnostic ("global")
  soft-NMS, in one ``tf.function``; the same work as our SavedModel's
  ``serving_default`` with ``nms_configs.per_class=false``.
* ``train``: automl's ``EfficientDetNetTrain.train_step`` (network, focal
  and Huber losses, L2, gradient clipping, SGD with momentum), compiled as
  its ``tf2/train.py`` compiles it, repeated on one fixed batch labelled by
  automl's ``AnchorLabeler``: no input pipeline, EMA off (automl's EMA needs
  tensorflow-addons, which no longer installs with Keras 3's TensorFlow).

The last line is ``RESULT {json}`` (``results.py``), with the process's
peak RSS.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import types

from results import emit_result, median, peak_rss_gb  # (benchmarks/)

AUTOML_ENV = "AUTOML_EFFICIENTDET_DIR"
# Imported by automl's training module but unused on the path timed here.
UNUSED_IMPORTS = ("neural_structured_learning", "tensorflow_hub",
                  "matplotlib", "matplotlib.pyplot")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("infer", "train"))
    parser.add_argument("--automl_dir", default=os.environ.get(AUTOML_ENV),
                        help=f"automl's efficientdet/ folder (default ${AUTOML_ENV})")
    parser.add_argument("--model_name", default="efficientdet-d0")
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=4,
                        help="training batch (inference runs batch 1)")
    parser.add_argument("--runs", type=int, default=30, help="timed inference calls")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--mixed_precision", action="store_true",
                        help="automl's mixed_precision: float16 on a GPU, float32 "
                        "on a CPU (as automl decides)")
    parser.add_argument("--threads", type=int, default=2,
                        help="intra- and inter-op threads (0: TensorFlow's choice)")
    return parser.parse_args(argv)


def import_automl(folder: str | None):
    """automl's modules, or a one-line exit saying what is missing."""
    if not folder or not os.path.isfile(os.path.join(folder, "hparams_config.py")):
        sys.exit(f"error: automl's efficientdet/ folder not found at {folder!r}: "
                 f"pass --automl_dir or set ${AUTOML_ENV} (git clone "
                 "https://github.com/google/automl gives automl/efficientdet)")
    if importlib.util.find_spec("tf_keras") is None:
        sys.exit("error: the official code needs tf-keras: pip install "
                 "\"tf-keras==$(python -c 'import tensorflow as tf; "
                 "print(tf.__version__)')\"")
    for name in UNUSED_IMPORTS:
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.path.insert(0, folder)
    import hparams_config
    import utils
    from tf2 import anchors, efficientdet_keras, train_lib
    return types.SimpleNamespace(hparams_config=hparams_config, anchors=anchors,
                                 utils=utils,
                                 efficientdet_keras=efficientdet_keras,
                                 train_lib=train_lib)


def official_config(automl, args: argparse.Namespace):
    config = automl.hparams_config.get_efficientdet_config(args.model_name)
    config.image_size = (args.image_size, args.image_size)
    return config


def time_inference(automl, args: argparse.Namespace) -> dict:
    import numpy as np
    import tensorflow as tf
    config = official_config(automl, args)
    model = automl.efficientdet_keras.EfficientDetModel(config=config)
    size = args.image_size
    model(tf.zeros([1, size, size, 3]), training=False, pre_mode=None,
          post_mode=None)
    image = tf.constant(np.random.default_rng(0).integers(
        0, 256, (1, size, size, 3), dtype=np.uint8))
    detect = tf.function(lambda x: model(x, training=False, pre_mode="infer",
                                         post_mode="global"))
    for _ in range(args.warmup):
        detect(image)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        [np.asarray(t) for t in tf.nest.flatten(detect(image))]
        times.append(1000.0 * (time.perf_counter() - start))
    return {"ms": median(times), "runs": len(times)}


def fixed_training_batch(automl, config, batch: int, size: int):
    """Random images and five random boxes per image, labelled by automl's
    own anchor labeler into the layout its ``train_step`` reads."""
    import numpy as np
    import tensorflow as tf
    anchors = automl.anchors.Anchors(
        config.min_level, config.max_level, config.num_scales,
        config.aspect_ratios, config.anchor_scale, config.image_size)
    labeler = automl.anchors.AnchorLabeler(anchors, config.num_classes)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(batch, size, size, 3)).astype(np.float32))
    labelled = []
    for _ in range(batch):
        corner = rng.uniform(0, 0.6 * size, (5, 2))
        extent = rng.uniform(0.1 * size, 0.4 * size, (5, 2))
        boxes = np.concatenate([corner, corner + extent], 1).astype(np.float32)
        classes = rng.integers(1, config.num_classes + 1, (5, 1)).astype(np.float32)
        labelled.append(labeler.label_anchors(tf.constant(boxes), tf.constant(classes)))
    positives = tf.reduce_mean([tf.cast(n, tf.float32) for _, _, n in labelled])
    labels = {"mean_num_positives": tf.fill([batch, 1], positives)}
    for level in range(config.min_level, config.max_level + 1):
        labels[f"cls_targets_{level}"] = tf.stack([c[level] for c, _, _ in labelled])
        labels[f"box_targets_{level}"] = tf.stack([b[level] for _, b, _ in labelled])
    return images, labels


def time_training(automl, args: argparse.Namespace) -> dict:
    import tensorflow as tf
    lib = automl.train_lib
    config = official_config(automl, args)
    if args.mixed_precision:
        config.mixed_precision = True
        # As automl's tf2/train.py does, before the model is built.
        tf.keras.mixed_precision.set_global_policy(
            automl.utils.get_precision(config.strategy, True))
    config.override({"moving_average_decay": 0, "num_epochs": 10,
                     "steps_per_epoch": 100, "batch_size": args.batch_size,
                     "model_dir": tempfile.mkdtemp(prefix="automl-bench-"),
                     "heads": ["object_detection"], "img_summary_steps": None},
                    allow_new_keys=True)
    model = lib.EfficientDetNetTrain(config=config)
    model.build((None, args.image_size, args.image_size, 3))
    params = config.as_dict()
    lib.update_learning_rate_schedule_parameters(params)
    none = tf.keras.losses.Reduction.NONE
    model.compile(optimizer=lib.get_optimizer(params), loss={
        lib.BoxLoss.__name__: lib.BoxLoss(config.delta, reduction=none),
        lib.BoxIouLoss.__name__: lib.BoxIouLoss(
            config.iou_loss_type, config.min_level, config.max_level,
            config.num_scales, config.aspect_ratios, config.anchor_scale,
            config.image_size, reduction=none),
        lib.FocalLoss.__name__: lib.FocalLoss(
            config.alpha, config.gamma, label_smoothing=config.label_smoothing,
            reduction=none)})
    batch = fixed_training_batch(automl, config, args.batch_size, args.image_size)
    step = tf.function(model.train_step)
    start = time.perf_counter()
    step(batch)
    first = time.perf_counter() - start
    for _ in range(args.warmup):
        step(batch)
    start = time.perf_counter()
    for _ in range(args.steps):
        outputs = step(batch)
    float(outputs["loss"])  # waits for the last step
    seconds = time.perf_counter() - start
    return {"images_per_second": args.steps * args.batch_size / seconds,
            "first_step_s": first, "steps": args.steps}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before TensorFlow is first imported: automl's tf.keras must be tf-keras.
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    automl = import_automl(args.automl_dir)
    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    timed = time_inference if args.what == "infer" else time_training
    result = timed(automl, args)
    print(f"automl {args.model_name} {args.image_size}x{args.image_size} "
          f"{args.what}: {result}")
    emit_result({**result, "peak_rss_gb": peak_rss_gb()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
