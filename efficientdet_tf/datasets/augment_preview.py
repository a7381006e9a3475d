"""A contact sheet of what training feeds the network: augmented samples.

Augmentation mistakes (boxes that do not follow the pixels, a policy too
strong for the data, a mosaic that hides every object) are invisible in the
loss curve and obvious in a picture. The sheet is made by the training
pipeline itself (:func:`~efficientdet_tf.data.pipeline.build_dataset` in
training mode), so it shows exactly the images and boxes a training step
sees: after GridMask, AutoAugment, flip, scale jitter and crop, Mosaic /
MixUp / CutMix, letterboxed to ``image_size``.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from efficientdet_tf.config import Config
from efficientdet_tf.utils.files import atomic_write
from efficientdet_tf.utils.visualize import draw_detections

# Pixels of background between tiles, so the letterbox padding of one
# sample does not read as part of its neighbour.
GUTTER = 4
GUTTER_COLOR = (255, 255, 255)


def augmented_samples(file_pattern: str, config: Config, num_samples: int,
                      seed: int) -> list[np.ndarray]:
    """``num_samples`` training inputs as uint8 ``[H, W, 3]`` with their
    boxes drawn, from a seeded (so repeatable) training pipeline."""
    from efficientdet_tf.data.pipeline import build_dataset

    dataset = build_dataset(file_pattern, config, training=True,
                            batch_size=num_samples, seed=seed,
                            deterministic=True)
    images, labels = next(iter(dataset.take(1)))
    pixels = (images.numpy() * np.asarray(config.stddev_rgb)
              + np.asarray(config.mean_rgb))
    pixels = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    drawn = []
    for image, boxes, classes in zip(pixels, labels["boxes"].numpy(),
                                     labels["classes"].numpy(), strict=True):
        real = classes > 0
        drawn.append(draw_detections(image, boxes[real], classes[real],
                                     label_map=config.label_map,
                                     max_boxes=int(real.sum()), line_width=1))
    return drawn


def contact_sheet(images: list[np.ndarray]) -> np.ndarray:
    """Equal-size images tiled row by row in a near-square grid."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    height, width = images[0].shape[:2]
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    sheet = np.empty((rows * (height + GUTTER) - GUTTER,
                      columns * (width + GUTTER) - GUTTER, 3), np.uint8)
    sheet[...] = GUTTER_COLOR
    for index, image in enumerate(images):
        top = (index // columns) * (height + GUTTER)
        left = (index % columns) * (width + GUTTER)
        sheet[top:top + height, left:left + width] = image
    return sheet


def write_contact_sheet(file_pattern: str, config: Config, path: str,
                        num_samples: int, seed: int) -> str:
    """Draws ``num_samples`` augmented samples into one PNG at ``path``
    (written atomically); returns ``path``."""
    sheet = contact_sheet(augmented_samples(file_pattern, config, num_samples,
                                            seed))
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())
    return path


def describe_augmentation(config: Config) -> str:
    """One line naming the training augmentation the config switches on."""
    parts = []
    if config.input_rand_hflip:
        parts.append("flip")
    parts.append(f"scale jitter {config.jitter_min:g}-{config.jitter_max:g}")
    if config.grid_mask:
        parts.append("GridMask")
    if config.autoaugment_policy:
        parts.append(f"AutoAugment {config.autoaugment_policy}")
    for key, name in (("mosaic_prob", "Mosaic"), ("mixup_prob", "MixUp"),
                      ("cutmix_prob", "CutMix")):
        if config[key]:
            parts.append(f"{name} {config[key]:.0%}")
    return ", ".join(parts)
