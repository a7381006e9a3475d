"""Image loading for the converters: every record holds an RGB JPEG.

The input pipeline decodes ``image/encoded`` with three channels and ignores
EXIF, so anything else has to be fixed here, once, where it can be counted:

* grayscale, CMYK, palette, 16-bit and alpha images become RGB (alpha is
  composited on white, so transparent areas do not turn into whatever colour
  the hidden pixels happen to hold);
* PNG/BMP/TIFF/... are re-encoded as JPEG, the format automl's records use;
* EXIF orientation is applied: annotation tools (LabelImg, CVAT) show, and so
  box, the image as displayed, while ``tf.io.decode_jpeg`` returns the stored
  pixels;
* unreadable, corrupt or truncated files raise :class:`ImageError` with a
  one-line reason, so the converter skips and counts them instead of dying.

Well-formed RGB JPEGs without rotation are kept byte for byte.
"""
from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from efficientdet_tf.errors import EfficientDetError

JPEG_QUALITY = 95  # re-encoding loses a little; 95 keeps it below notice
_ORIENTATION_TAG = 0x0112

MISSING = "missing image"
CORRUPT = "corrupt or unreadable image"


class ImageError(EfficientDetError):
    """An image that cannot be used; ``reason`` is the report key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class LoadedImage:
    """An RGB JPEG ready for ``image/encoded``, its displayed size, and what
    had to be changed to get there (report keys)."""
    encoded: bytes
    width: int
    height: int
    fixes: tuple[str, ...] = ()


def load_image(path: str) -> LoadedImage:
    """Reads, checks and (when needed) re-encodes the image at ``path``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageError(MISSING, f"{path}: image file not found") from None
    except OSError as e:
        raise ImageError(CORRUPT, f"{path}: cannot read ({e.strerror})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF/ICC chatter; errors raise
            return _normalise(data)
    except UnidentifiedImageError:
        raise ImageError(CORRUPT, f"{path}: not an image (unknown format "
                         "or corrupt header)") from None
    except (OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as e:
        raise ImageError(CORRUPT, f"{path}: corrupt or unreadable image "
                         f"({str(e) or type(e).__name__})") from None


def image_size(path: str) -> tuple[int, int]:
    """The displayed ``(width, height)`` from the file header alone (no
    decoding), for ground truth made without converting the images."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(_ORIENTATION_TAG, 1) in (5, 6, 7, 8):
                width, height = height, width  # rotated by 90 degrees
            return width, height
    except FileNotFoundError:
        raise ImageError(MISSING, f"{path}: image file not found") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(CORRUPT, f"{path}: unreadable image ({e})") from None


def _normalise(data: bytes) -> LoadedImage:
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: truncated files fail here
        source_format = image.format or "unknown"
        fixes = []
        # MPO (camera JPEGs with a preview appended) decodes as its JPEG.
        if source_format not in ("JPEG", "MPO"):
            fixes.append(f"re-encoded {source_format} as JPEG")
        if image.getexif().get(_ORIENTATION_TAG, 1) not in (None, 1):
            fixes.append("applied EXIF orientation")
            image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            fixes.append(f"converted {image.mode} to RGB")
        if not fixes:
            return LoadedImage(data, image.width, image.height)
        buffer = io.BytesIO()
        _to_rgb(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return LoadedImage(buffer.getvalue(), image.width, image.height,
                           tuple(fixes))


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels as they would be displayed."""
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith(("I", "F")):
        # 16-bit or float grayscale: Pillow's convert() would clip at 255.
        pixels = np.asarray(image, dtype=np.float64)
        if pixels.max(initial=0) > 255:
            pixels = pixels / 257.0
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 array (instance masks, as automl stores
    them: 0/1 values)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
