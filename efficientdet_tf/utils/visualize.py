"""Draw detections on images (inference output, TensorBoard, dataset checks)."""
from __future__ import annotations

import colorsys
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per class id (golden-ratio hues)."""
    hue = (class_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def class_name(class_id: int, label_map: Mapping[int, str] | None) -> str:
    """The label-map name, or the id itself when the map has no entry."""
    if label_map and int(class_id) in label_map:
        return str(label_map[int(class_id)])
    return str(int(class_id))


def draw_detections(image: np.ndarray, boxes: Sequence[Sequence[float]],
                    classes: Sequence[int], scores: Sequence[float] | None = None,
                    label_map: Mapping[int, str] | None = None,
                    min_score: float = 0.0, max_boxes: int = 100,
                    line_width: int | None = None,
                    color: tuple[int, int, int] | None = None) -> np.ndarray:
    """Returns a copy of ``image`` (uint8 ``[H, W, 3]``) with labelled boxes.

    ``boxes`` are ``(ymin, xmin, ymax, xmax)`` pixels of ``image``; ``classes``
    1-based ids; detections below ``min_score`` are not drawn, and at most
    ``max_boxes`` of the highest-scoring ones are. ``scores=None`` draws
    ground truth (no score in the caption). Boxes are clipped to the image
    and those with nothing inside it (or non-finite corners) skipped: an
    untrained model decodes boxes far outside any image, up to float32's
    range, which Pillow cannot draw. ``color`` draws every box in one colour
    (instead of one per class), to tell two sets apart on one image.
    """
    canvas = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = line_width or max(1, round(min(canvas.size) / 200))
    order = (np.argsort(-np.asarray(scores, dtype=np.float64))
             if scores is not None else np.arange(len(boxes)))
    drawn = 0
    for index in order:
        if drawn >= max_boxes:
            break
        score = None if scores is None else float(scores[index])
        if score is not None and score < min_score:
            continue
        corners = np.asarray(boxes[index], dtype=np.float64)
        if not np.all(np.isfinite(corners)):
            continue
        bottom, right = canvas.height - 1, canvas.width - 1  # last pixels
        ymin, xmin, ymax, xmax = np.clip(corners, 0, [bottom, right, bottom, right])
        if ymax <= ymin or xmax <= xmin:
            continue
        box_color = color or class_color(int(classes[index]))
        draw.rectangle([xmin, ymin, xmax, ymax], outline=box_color, width=width)
        caption = class_name(int(classes[index]), label_map)
        if score is not None:
            caption = f"{caption}: {score:.0%}"
        left, top, right, bottom = draw.textbbox((xmin, ymin), caption, font=font)
        text_top = max(0.0, ymin - (bottom - top) - 2)
        draw.rectangle([xmin, text_top, xmin + (right - left) + 4,
                        text_top + (bottom - top) + 2], fill=box_color)
        draw.text((xmin + 2, text_top), caption, fill=(0, 0, 0), font=font)
        drawn += 1
    return np.asarray(canvas)
