"""Writing files atomically, and the file names the package shares.

Every file the package writes (configs, the checkpoint state file, JSON
outputs, drawn images, TFRecord shards, exported models) goes to a temporary
sibling first and is renamed onto its name only once it is complete: a
reader, or a run killed half-way, sees the old file or the new one, never a
truncated one that looks finished. The temporary name is hidden (a leading
dot), so patterns such as ``{prefix}*`` or ``*.tfrecord`` never match it.

Directories published as a whole (a SavedModel, the TFLite staging folder)
are a different operation and stay with their exporters.

Standard library only: the dataset converters import this without paying for
TensorFlow.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

# The config of a run (``model_dir/config.yaml``, checked on restart) and of
# an export (``assets.extra/config.yaml``): one name, so ``--hparams`` can
# point at either.
CONFIG_FILE = "config.yaml"

# What counts as an image file when a folder or pattern is listed. Files a
# given reader cannot decode (TIFF and WebP for ``tf.io.decode_image``) are
# then reported as skipped with the reason, rather than silently left out.
# Order matters to the VOC converter, which tries them in turn.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp",
                    ".gif")


def temporary_path(path: str) -> str:
    """A hidden sibling of ``path``: same file system, so the final rename is
    atomic, and no match for glob patterns on the visible name."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path for a writer that needs a file name (a
    ``tf.io`` writer, tf2onnx, Pillow); when the block ends normally the file
    is renamed onto ``path``, and when it raises (Ctrl-C included) the file
    is removed. ``path``'s folder is created when missing."""
    target = os.fspath(path)
    folder = os.path.dirname(target)
    if folder:
        os.makedirs(folder, exist_ok=True)
    temp = temporary_path(target)
    try:
        yield temp
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Writes ``data`` (``str`` as UTF-8) to ``path`` via :func:`atomic_path`."""
    with atomic_path(path) as temp, open(temp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
