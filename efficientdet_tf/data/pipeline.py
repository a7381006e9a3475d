"""The ``tf.data`` input pipeline: records -> network inputs + training labels.

:func:`build_dataset` yields ``(images, labels)``: ``images`` float32
``[B, H, W, 3]`` normalised and letterboxed as
:mod:`efficientdet_tf.data.augment` describes, and ``labels`` a flat dict
(flat so it batches, distributes and feeds ``keras.Model.fit`` without nested
structures; automl's key names):

==========================  =========================================  =====
key                         value                                      pad
==========================  =========================================  =====
``cls_targets_{l}``         int32 ``[B, H_l, W_l, A]`` per level l      --
                            min..max: class channel (id - 1),
                            -1 background, -2 ignored
``box_targets_{l}``         float32 ``[B, H_l, W_l, A*4]``: (ty, tx,    --
                            th, tw) of positives, 0 elsewhere
``num_positives``           float32 ``[B]``                             --
``boxes``                   float32 ``[B, M, 4]`` yxyx, pixels of the   0
                            network input (after flip/jitter/crop)
``classes``                 int32 ``[B, M]``, 1-based ids               -1
``is_crowd``                int32 ``[B, M]``                            0
``image_scale``             float32 ``[B]``: network-input pixels per   --
                            original pixel; in eval, divide network-
                            input boxes by it to get original-image
                            boxes (in training boxes are also shifted
                            by the random crop)
``source_id``               string ``[B]``, as in the records           --
``image_size``              int32 ``[B, 2]``: original (height, width)  --
==========================  =========================================  =====

``M = config.max_instances_per_image``. :func:`targets_from_labels` turns the
per-level keys back into the :class:`~efficientdet_tf.ops.anchors.AnchorTargets`
that :func:`~efficientdet_tf.ops.losses.detection_loss` takes.

Anchor targets are computed from every box of the image; only the ``boxes``
/ ``classes`` / ``is_crowd`` lists are cut to ``M``, so a crowded image still
trains on all of its objects. In eval, where those lists are the ground
truth, each cut prints a warning on stderr naming the image.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, NamedTuple, Sequence

import tensorflow as tf

from efficientdet_tf.ops.anchors import AnchorTargets, label_anchors
from efficientdet_tf.config import Config
from efficientdet_tf.data import augment
from efficientdet_tf.data.autoaugment import check_policy
from efficientdet_tf.data.mix_stage import mixed_examples, mixing_probabilities
from efficientdet_tf.data.tfrecord import decode_example
from efficientdet_tf.ops.geometry import resize_crop_pad, scale_geometry
from efficientdet_tf.ops.preprocess import normalize_image

_LOG = logging.getLogger(__name__)

# Records buffered for shuffling in training (automl's value). Files are
# shuffled too and interleaved, so the buffer only needs to mix neighbours.
SHUFFLE_BUFFER = 64
# Files read at once. A fixed number (rather than AUTOTUNE, which follows
# the core count) keeps a seeded, deterministic pipeline identical across
# machines.
MAX_CYCLE_LENGTH = 32
# A predicate on one serialized record: True keeps it.
RecordFilter = Callable[[tf.Tensor], tf.Tensor]


def build_dataset(file_pattern: str | Sequence[str], config: Config, *,
                  training: bool, batch_size: int, seed: int | None = None,
                  deterministic: bool = False,
                  input_context: tf.distribute.InputContext | None = None,
                  keep: RecordFilter | None = None) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` (module docstring) from TFRecords.

    ``file_pattern``: a glob, several separated by commas, or a list of them;
    a pattern matching no file is a :class:`FileNotFoundError` naming it.

    Training: files and records shuffled, repeated forever, automl's
    ``grid_mask`` and ``autoaugment_policy`` when set, random flip
    (``input_rand_hflip``) and scale jitter + crop (``jitter_min`` /
    ``jitter_max``), crowd boxes dropped (``skip_crowd_during_training``),
    then the shares of Mosaic / MixUp / CutMix images set by
    ``mosaic_prob`` / ``mixup_prob`` / ``cutmix_prob``
    (:mod:`~efficientdet_tf.data.mix_stage`), incomplete last batch dropped (``drop_remainder``). Eval: one pass, no
    shuffle (files read round-robin), no augmentation, every image kept (the
    last batch may be short), crowd boxes kept with ``is_crowd`` set and
    their anchors ignored.

    ``seed`` fixes the shuffles and the augmentation draws; with
    ``deterministic=True`` too, the same seed gives the same batches (also
    the parallel stages keep their order, which costs some throughput).

    ``input_context`` (from ``strategy.distribute_datasets_from_function``):
    this pipeline reads its shard of the files (of each file's records when
    there are fewer files than pipelines) and ``batch_size`` is the *global*
    batch size, split per replica. Without it ``batch_size`` is the batch
    this dataset yields.

    ``keep`` (a K-fold run's folds, :func:`~efficientdet_tf.datasets.kfold.
    fold_filter`) drops the records it rejects as each file is read, so they
    are neither shuffled, decoded nor counted in the batches.
    """
    if training and config.autoaugment_policy:
        # Here rather than in Dataset.map, which would wrap the ConfigError.
        check_policy(config.autoaugment_policy)
    mixing = training and bool(mixing_probabilities(config))
    files = list_record_files(file_pattern)
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        if seed is not None:
            # Replicas must not all draw the same augmentations.
            seed += pipeline_id
    shard_records = num_pipelines > 1 and len(files) < num_pipelines
    _LOG.info("%s input: %d files (%s), pipeline %d of %d, batch %d",
              "training" if training else "eval", len(files),
              "record shards" if shard_records else "file shards",
              pipeline_id, num_pipelines, batch_size)

    def read(path: tf.Tensor) -> tf.data.Dataset:
        records = tf.data.TFRecordDataset(path)
        if shard_records:
            records = records.shard(num_pipelines, pipeline_id)
        return records if keep is None else records.filter(keep)

    if not shard_records:
        files = files[pipeline_id::num_pipelines]

    def records(shuffle_seed: int | None) -> tf.data.Dataset:
        dataset = tf.data.Dataset.from_tensor_slices(files)
        if training:
            dataset = dataset.shuffle(len(files), seed=shuffle_seed).repeat()
        dataset = dataset.interleave(
            read, cycle_length=min(len(files), MAX_CYCLE_LENGTH),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        if training:
            dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed)
            # One stateless seed [2] per image, drawn in dataset order.
            seeds = tf.data.Dataset.random(seed=shuffle_seed).batch(2)
            dataset = tf.data.Dataset.zip((dataset, seeds))
        return dataset

    def letterboxed(shuffle_seed: int | None) -> tf.data.Dataset:
        return records(shuffle_seed).map(
            lambda record, image_seed: letterbox_example(
                record, config, training=True, seed=image_seed),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

    if not training:
        dataset = records(seed).map(
            lambda record: parse_example(record, config, training=False),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    elif mixing:
        dataset = mixed_examples(letterboxed, config, seed,
                                 deterministic).map(
            lambda example: label_example(example, config, training=True),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    else:
        dataset = records(seed).map(
            lambda record, image_seed: parse_example(
                record, config, training=True, seed=image_seed),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    dataset = dataset.batch(batch_size,
                            drop_remainder=training and config.drop_remainder,
                            num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=deterministic)
    return dataset.prefetch(tf.data.AUTOTUNE)


def list_record_files(file_pattern: str | Sequence[str]) -> list[str]:
    """Sorted, de-duplicated files matching every pattern.

    Globbing here rather than in ``Dataset.list_files`` gives a clear error
    for each pattern that matches nothing (a typo would otherwise silently
    train on fewer files) and a fixed order for sharding across replicas.
    """
    patterns = ([p.strip() for p in file_pattern.split(",")]
                if isinstance(file_pattern, str) else list(file_pattern))
    patterns = [p for p in patterns if p]
    if not patterns:
        raise FileNotFoundError("no TFRecord file pattern given")
    files: set[str] = set()
    for pattern in patterns:
        try:
            matches = tf.io.gfile.glob(pattern)
        except tf.errors.NotFoundError:
            matches = []
        if not matches:
            raise FileNotFoundError(
                f"no TFRecord files match {pattern!r} (check the path and "
                f"the glob; several patterns are separated by commas)")
        files.update(matches)
    return sorted(files)


class Letterboxed(NamedTuple):
    """One image placed in the network input, before anchor labeling.

    ``image`` float32 ``[H, W, 3]``, normalised; ``boxes`` float32 ``[N, 4]``
    yxyx network-input pixels, ``classes`` / ``is_crowd`` int32 ``[N]``;
    ``image_scale``, ``source_id``, ``image_size`` as the labels of the
    module docstring; ``content_size`` int32 ``[2]``, the (height, width) of
    the picture at the top-left of ``image`` (the rest is letterbox padding).
    """
    image: tf.Tensor
    boxes: tf.Tensor
    classes: tf.Tensor
    is_crowd: tf.Tensor
    image_scale: tf.Tensor
    source_id: tf.Tensor
    image_size: tf.Tensor
    content_size: tf.Tensor


def parse_example(serialized: tf.Tensor, config: Config, *, training: bool,
                  seed: tf.Tensor | None = None
                  ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """One record -> network input ``[H, W, 3]`` and unbatched labels.

    ``seed`` (int ``[2]``) drives the training augmentation and is required
    when ``training``. Labels are those of the module docstring without the
    batch dimension.
    """
    return label_example(letterbox_example(serialized, config,
                                           training=training, seed=seed),
                         config, training=training)


def letterbox_example(serialized: tf.Tensor, config: Config, *,
                      training: bool, seed: tf.Tensor | None = None
                      ) -> Letterboxed:
    """One record decoded, augmented (when ``training``, from ``seed``) and
    letterboxed; the first half of :func:`parse_example`."""
    output_size = tuple(config.image_size)
    data = decode_example(serialized)
    boxes, classes, is_crowd = data["boxes"], data["classes"], data["is_crowd"]
    if training and config.skip_crowd_during_training:
        # automl drops crowd rows, so their anchors become negatives. Rows
        # kept (eval, or this switched off) reach label_anchors with their
        # flag and their anchors are ignored; automl would train them as
        # ordinary objects there.
        keep = tf.equal(is_crowd, 0)
        boxes, classes, is_crowd = (tf.boolean_mask(t, keep)
                                    for t in (boxes, classes, is_crowd))
    original_size = tf.stack([data["height"], data["width"]])
    image = data["image"]
    if training:
        if seed is None:
            raise ValueError("parse_example(training=True) needs a seed")
        image, boxes, keep = augment.automl_policies(image, boxes, config, seed)
        boxes, classes, is_crowd = (tf.boolean_mask(t, keep)
                                    for t in (boxes, classes, is_crowd))
    image = normalize_image(image, config.mean_rgb, config.stddev_rgb)
    if training:
        draw = augment.sample_augmentation(seed, config.jitter_min,
                                           config.jitter_max,
                                           config.input_rand_hflip)
        image, boxes = tf.cond(
            draw.flip, lambda: augment.flip_left_right(image, boxes),
            lambda: (image, boxes))
        geometry = scale_geometry(original_size, output_size, draw.jitter,
                                  draw.crop_fraction)
    else:
        geometry = scale_geometry(original_size, output_size)
    image = resize_crop_pad(image, geometry, output_size)
    boxes, keep = augment.transform_boxes(boxes, geometry, output_size)
    boxes, classes, is_crowd = (tf.boolean_mask(t, keep)
                                for t in (boxes, classes, is_crowd))
    content_size = tf.clip_by_value(geometry.scaled_size - geometry.offset,
                                    0, tf.constant(output_size, tf.int32))
    return Letterboxed(image=image, boxes=boxes, classes=classes,
                       is_crowd=is_crowd, image_scale=geometry.scale,
                       source_id=source_id_of(data, config),
                       image_size=original_size, content_size=content_size)


def label_example(example: Letterboxed, config: Config, *, training: bool
                  ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Anchor targets and padded box lists of a letterboxed image: the
    second half of :func:`parse_example`."""
    boxes, classes, is_crowd = example.boxes, example.classes, example.is_crowd
    targets = label_anchors(boxes, classes, config, is_crowd=is_crowd)
    labels = {}
    for level, cls_t, box_t in zip(
            range(config.min_level, config.max_level + 1),
            targets.cls_targets, targets.box_targets):
        labels[f"cls_targets_{level}"] = cls_t
        labels[f"box_targets_{level}"] = box_t
    limit = config.max_instances_per_image
    if not training:
        _warn_if_truncated(tf.shape(classes)[0], limit, example.source_id)
    labels.update(
        num_positives=targets.num_positives,
        boxes=_pad_or_truncate(boxes, limit, 0.0),
        classes=_pad_or_truncate(classes, limit, -1),
        is_crowd=_pad_or_truncate(is_crowd, limit, 0),
        image_scale=example.image_scale,
        source_id=example.source_id,
        image_size=example.image_size,
    )
    return example.image, labels


def targets_from_labels(labels: dict[str, tf.Tensor],
                        config: Config) -> AnchorTargets:
    """The per-level label keys as the ``AnchorTargets`` that
    :func:`~efficientdet_tf.ops.losses.detection_loss` takes (batched)."""
    levels = range(config.min_level, config.max_level + 1)
    return AnchorTargets(
        cls_targets=tuple(labels[f"cls_targets_{l}"] for l in levels),
        box_targets=tuple(labels[f"box_targets_{l}"] for l in levels),
        num_positives=labels["num_positives"])


def source_id_of(data: dict[str, tf.Tensor], config: Config) -> tf.Tensor:
    """The record's ``image/source_id``; with ``regenerate_source_id`` (as
    automl) a hash of the file name instead, for datasets whose ids clash."""
    if config.regenerate_source_id:
        return tf.strings.as_string(
            tf.strings.to_hash_bucket_fast(data["filename"], 2 ** 63 - 1))
    return data["source_id"]


def _pad_or_truncate(values: tf.Tensor, length: int,
                     pad_value: float | int) -> tf.Tensor:
    """First ``length`` rows of ``values``, padded with ``pad_value``."""
    values = values[:length]
    padding = [[0, length - tf.shape(values)[0]]] + [[0, 0]] * (
        values.shape.rank - 1)
    padded = tf.pad(values, padding, constant_values=pad_value)
    return tf.ensure_shape(padded, [length, *values.shape[1:]])


def _warn_if_truncated(count: tf.Tensor, limit: int,
                       source_id: tf.Tensor) -> None:
    """Prints (from inside the graph) which eval image lost ground-truth
    boxes to the limit, so a user knows to raise it."""
    tf.cond(count > limit,
            lambda: tf.print("WARNING: image", source_id, "has", count,
                             "boxes; the labels keep max_instances_per_image "
                             "=", limit, output_stream=sys.stderr),
            tf.no_op)
