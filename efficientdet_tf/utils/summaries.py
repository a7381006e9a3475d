"""TensorBoard scalars and images without the ``tensorboard`` package.

``tf.summary.scalar`` and ``tf.summary.image`` live in TensorBoard, which
``tensorflow-cpu`` no longer installs; the event files only need
``tf.summary.write`` (in core TensorFlow) plus the metadata naming the
plugin and the plugin's tensor layout, which is what those functions write
too, so TensorBoard shows them as usual.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    data_class=summary_pb2.DATA_CLASS_SCALAR,
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def scalar(name: str, value: float, step: int) -> None:
    """Writes ``value`` under ``name`` to the default summary writer."""
    tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                     metadata=_SCALAR_METADATA)


def image(name: str, pixels: np.ndarray, step: int,
          description: str = "") -> None:
    """Writes uint8 ``pixels [H, W, 3]`` under ``name`` to the default
    summary writer, in the images plugin's layout: ``[width, height, PNG]``
    strings."""
    metadata = summary_pb2.SummaryMetadata(
        summary_description=description,
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"))
    height, width = pixels.shape[:2]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)),
                       tf.io.encode_png(np.asarray(pixels, np.uint8))])
    tf.summary.write(name, tensor, step=step, metadata=metadata)
