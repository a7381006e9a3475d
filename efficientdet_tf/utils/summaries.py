"""TensorBoard scalars and images without the ``tensorboard`` package.

``tf.summary.scalar`` and ``tf.summary.image`` live in TensorBoard, which
``tensorflow-cpu`` no longer installs; the event files only need
``tf.summary.write`` (in core TensorFlow) plus the metadata naming the
plugin and the plugin's tensor layout, which is what those functions write
too, so TensorBoard shows them as usual.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2, types_pb2
from tensorflow.core.util import event_pb2

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


def png_image(name: str, path: str, step: int) -> None:
    """Writes the PNG file at ``path`` under ``name`` (a plot the run just
    drew), described by its file name."""
    from PIL import Image
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    image(name, pixels, step, os.path.basename(path))


def read_scalars(directory: str) -> dict[str, dict[int, float]]:
    """The scalars that :func:`scalar` wrote into ``directory``'s event
    files: ``{tag: {step: value}}``. A step written again (by a resumed
    run, in a newer file) keeps the value written last, by the events' own
    wall times: file names order by the second they were opened in, and
    two files of one second in no particular order. A file cut short by a
    killed run is read up to the cut.

    Scalars are recognised by their value (a float tensor of rank 0), not by
    their metadata, which an event file holds only at a tag's first value.
    """
    written: dict[str, dict[int, tuple[float, float]]] = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(directory,
                                                     "events.out.tfevents.*"))):
        try:
            for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
                event = event_pb2.Event.FromString(record)
                for value in event.summary.value:
                    tensor = value.tensor
                    if (tensor.dtype == types_pb2.DT_FLOAT
                            and not tensor.tensor_shape.dim):
                        steps = written.setdefault(value.tag, {})
                        step = int(event.step)
                        if step not in steps or steps[step][0] <= event.wall_time:
                            steps[step] = (event.wall_time,
                                           float(tf.make_ndarray(tensor)))
        except tf.errors.DataLossError:
            continue
    scalars = {tag: {step: value for step, (_, value) in sorted(steps.items())}
               for tag, steps in written.items()}
    return scalars
