"""Test-time augmentation: the views of an image a model is run on.

A view is the image flipped left-right and/or rescaled; its detections are
mapped back to the original image's pixels, where the views' detections are
merged (:mod:`efficientdet_tf.fusion.merge`).

What "scale" means with a letterboxing model: every model here resizes
its input to fit ``image_size``, so resizing the whole image alone would
change nothing the network sees. A scale ``s`` is therefore the size the
network sees the image at, relative to the plain run: the image is resized
by ``s`` and run in windows of the size the plain run would have used
(the original image size, or ``--tile_size``), so that each window is
letterboxed by the same factor as before. Below 1 the smaller image is
padded with the mean colour (what the letterbox pads with) to the window;
above 1 it no longer fits and is cut into overlapping windows
(:mod:`efficientdet_tf.fusion.tiles`), the way YOLO-style TTA feeds a
larger input to a fully convolutional network, but with a fixed-size
export.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
from PIL import Image

from efficientdet_tf.errors import EfficientDetError
from efficientdet_tf.fusion.merge import Detections

MAX_SCALE = 4.0  # a 4x view already costs 16 windows per plain one


class TtaError(EfficientDetError):
    """A ``--tta`` value that cannot be used; the message says why."""


class View(NamedTuple):
    """One augmented copy of the image."""
    scale: float
    flip: bool

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``[h, w, 3]`` -> the view's pixels."""
        if self.flip:
            pixels = pixels[:, ::-1]
        if self.scale != 1.0:
            height, width = scaled_size(pixels.shape[:2], self.scale)
            pixels = np.asarray(Image.fromarray(np.ascontiguousarray(
                pixels)).resize((width, height), Image.Resampling.BILINEAR))
        return np.ascontiguousarray(pixels)

    def unmap(self, found: Detections, view_shape: tuple[int, ...],
              original_shape: tuple[int, ...]) -> Detections:
        """Detections in the view's pixels -> in the original's: divided
        by the exact resize factors, then mirrored back (``x -> w - x``,
        continuous coordinates, so a flip maps back exactly)."""
        height, width = original_shape[:2]
        factors = np.array([view_shape[0] / height, view_shape[1] / width] * 2,
                           np.float32)
        boxes = found.boxes / factors
        if self.flip:
            boxes = np.stack([boxes[:, 0], width - boxes[:, 3], boxes[:, 2],
                              width - boxes[:, 1]], axis=1)
        return found._replace(boxes=boxes.astype(np.float32))


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``size`` times ``scale``, rounded, at least one pixel."""
    return tuple(max(1, int(round(v * scale))) for v in size)  # type: ignore


@dataclasses.dataclass(frozen=True)
class TtaSpec:
    """Which views to run: every scale, each also flipped when ``flip``."""
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def views(self) -> list[View]:
        flips = (False, True) if self.flip else (False,)
        return [View(scale, flip) for scale in self.scales for flip in flips]

    @property
    def enabled(self) -> bool:
        return len(self.views()) > 1 or self.views()[0] != View(1.0, False)


def parse_tta(text: str | None) -> TtaSpec:
    """``--tta``: comma-separated ``flip`` and ``scales=a:b:c`` (e.g.
    ``flip,scales=0.8:1.0:1.2``); empty or ``none``: no TTA. Scales
    without 1.0 are allowed (the plain view is then not run)."""
    text = (text or "").strip()
    if text.lower() in ("", "none", "off"):
        return TtaSpec()
    flip, scales = False, (1.0,)
    for item in (part.strip() for part in text.split(",")):
        key, _, value = item.partition("=")
        if item == "flip":
            flip = True
        elif key == "scales" and value:
            scales = _scales(value, text)
        else:
            raise TtaError(f"--tta={text}: unknown item {item!r} (use flip "
                           "and/or scales=a:b:c, e.g. flip,scales=0.8:1.0:1.2)")
    return TtaSpec(flip, scales)


def _scales(value: str, text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(v) for v in value.split(":"))
    except ValueError:
        raise TtaError(f"--tta={text}: scales must be numbers separated by "
                       f"':', got {value!r}") from None
    bad = [s for s in scales if not 0 < s <= MAX_SCALE]
    if bad or len(set(scales)) != len(scales):
        raise TtaError(f"--tta={text}: each scale must be in (0, {MAX_SCALE}] "
                       "and given once")
    return scales
