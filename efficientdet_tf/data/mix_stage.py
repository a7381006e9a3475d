"""Mosaic, MixUp and CutMix as a ``tf.data`` stage of the training input.

Config keys ``mosaic_prob``, ``mixup_prob`` and ``cutmix_prob`` (0 by
default, so automl's recipe is the default) are the shares of training
images made by each op; the rest are ordinary images. Each op has its own
stream of letterboxed images (its own shuffle of the same records, decoded
and augmented per image exactly like the ordinary stream: GridMask,
AutoAugment, flip, scale jitter and crop), grouped by the op's size (4 for
Mosaic, 2 for MixUp and CutMix) and mixed by :mod:`efficientdet_tf.data.
mixing`. ``Dataset.sample_from_datasets`` then picks each training image
from one stream with those probabilities. Streams are only read when
picked, so an op used for 10 % of the images costs 10 % of its decoding,
not a decode of 4 images for every training image.

A mixed image keeps the first image's ``image_scale``, ``source_id`` and
``image_size`` labels (training reads none of them) and labels all its
boxes; MixUp's per-box weights are not used (see
:func:`efficientdet_tf.data.mixing.mixup`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import tensorflow as tf

from efficientdet_tf.config import Config, ConfigError
from efficientdet_tf.data import mixing

# (images [k, H, W, 3], boxes [k, M, 4], classes [k, M], seed [2],
#  content sizes [k, 2]) -> (image, boxes, classes)
MixFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor],
                 tuple[tf.Tensor, tf.Tensor, tf.Tensor]]


class MixOp(NamedTuple):
    """One multi-image op: its probability key and group size."""
    key: str
    group_size: int
    apply: MixFn


MIX_OPS = (
    MixOp("mosaic_prob", 4, lambda images, boxes, classes, seed, sizes:
          mixing.mosaic(images, boxes, classes, seed, content_sizes=sizes)),
    MixOp("mixup_prob", 2, lambda images, boxes, classes, seed, sizes:
          mixing.mixup(images, boxes, classes, seed)[:3]),
    MixOp("cutmix_prob", 2, lambda images, boxes, classes, seed, sizes:
          mixing.cutmix(images, boxes, classes, seed)),
)
# Streams after the first read the records with seed + STREAM_SEED_STRIDE *
# index: far from seed + replica index, which the replicas use.
STREAM_SEED_STRIDE = 1_000_003


def mixing_probabilities(config: Config) -> dict[str, float]:
    """``{key: probability}`` of the ops switched on, validated: each in
    [0, 1], together at most 1 (they are shares of the training images)."""
    settings = {"mosaic_prob": config.mosaic_prob,
                "mixup_prob": config.mixup_prob,
                "cutmix_prob": config.cutmix_prob}
    chosen = {}
    for op in MIX_OPS:
        value = settings[op.key] or 0.0
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{op.key} must be a probability in [0, 1], "
                              f"got {value!r}")
        if value > 0:
            chosen[op.key] = float(value)
    if sum(chosen.values()) > 1.0 + 1e-9:
        raise ConfigError(
            f"{' + '.join(chosen)} = {sum(chosen.values()):g} > 1: they are "
            f"the shares of training images each op makes, so they must add "
            f"up to at most 1")
    if chosen and not config.skip_crowd_during_training:
        raise ConfigError(
            f"{', '.join(chosen)} need skip_crowd_during_training: true (the "
            f"mixed images do not carry crowd flags); set it, or the "
            f"probabilities to 0")
    return chosen


def mixed_examples(stream: Callable[[int | None], tf.data.Dataset],
                   config: Config, seed: int | None,
                   deterministic: bool) -> tf.data.Dataset:
    """Training images (as :class:`~efficientdet_tf.data.pipeline.
    Letterboxed`), each ordinary or mixed with the config's probabilities.

    ``stream(seed)`` must return an endless dataset of letterboxed training
    images shuffled by ``seed``; ``stream(seed)`` itself is the ordinary
    images' stream.
    """
    probabilities = mixing_probabilities(config)
    plain = 1.0 - sum(probabilities.values())
    datasets, weights = [], []
    if plain > 1e-9:
        datasets.append(stream(seed))
        weights.append(plain)
    for index, op in enumerate(MIX_OPS, start=1):
        if op.key not in probabilities:
            continue
        op_seed = None if seed is None else seed + STREAM_SEED_STRIDE * index
        datasets.append(_mixed_stream(stream(op_seed), op, op_seed,
                                      deterministic))
        weights.append(probabilities[op.key])
    if len(datasets) == 1:
        return datasets[0]
    return tf.data.Dataset.sample_from_datasets(datasets, weights, seed=seed)


def _mixed_stream(images: tf.data.Dataset, op: MixOp, seed: int | None,
                  deterministic: bool) -> tf.data.Dataset:
    """Groups of ``op.group_size`` images -> one mixed image each."""
    spec = images.element_spec
    padding = tf.nest.map_structure(
        lambda s: tf.constant("" if s.dtype == tf.string else 0, s.dtype), spec)
    padding = padding._replace(classes=tf.constant(-1, spec.classes.dtype))
    groups = images.padded_batch(op.group_size, drop_remainder=True,
                                 padding_values=padding)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def mix(group, group_seed: tf.Tensor):
        image, boxes, classes = op.apply(group.image, group.boxes,
                                         group.classes, group_seed,
                                         group.content_size)
        real = classes >= 1
        boxes = tf.boolean_mask(boxes, real)
        classes = tf.boolean_mask(classes, real)
        return type(group)(
            image=image, boxes=boxes, classes=classes,
            is_crowd=tf.zeros(tf.shape(classes), spec.is_crowd.dtype),
            image_scale=group.image_scale[0], source_id=group.source_id[0],
            image_size=group.image_size[0],
            content_size=tf.shape(image)[:2])

    return tf.data.Dataset.zip((groups, seeds)).map(
        mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
