"""TensorBoard scalars without the ``tensorboard`` package.

``tf.summary.scalar`` lives in TensorBoard, which ``tensorflow-cpu`` no
longer installs; the event files only need ``tf.summary.write`` (in core
TensorFlow) plus the metadata naming the scalars plugin, which is what
``tf.summary.scalar`` writes too, so TensorBoard shows them as usual.
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    data_class=summary_pb2.DATA_CLASS_SCALAR,
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def scalar(name: str, value: float, step: int) -> None:
    """Writes ``value`` under ``name`` to the default summary writer."""
    tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                     metadata=_SCALAR_METADATA)
