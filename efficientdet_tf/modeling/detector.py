"""The detector: one network and config wrapped with their pre- and
post-processing, the single inference path every consumer runs.

Evaluation, the SavedModel and frozen graph, TFLite, ONNX and in-process
inference all need "pixels in, detections out" and differ only in where the
pixels come from: the eval pipeline hands over normalised, letterboxed
network inputs; the SavedModel takes uint8 images of any size or encoded
bytes; TFLite takes letterboxed uint8 at the network's size. Wiring anchor
decoding and NMS once, here, is what keeps a checkpoint, its evaluation and
every export giving the same detections (effdet calls this wrapper a
"bench").

A :class:`Detector` holds its traced functions, so a caller that runs the
same model repeatedly (a training loop evaluating every epoch) keeps the
detector and pays the seconds of tracing once. The network function reads
the model's variables when it runs, so new weights (training steps, EMA
swaps) are seen without retracing.
"""
from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from efficientdet_tf.config import Config, ConfigError
from efficientdet_tf.ops.postprocess import Detections, postprocess
from efficientdet_tf.ops.preprocess import normalize_image, preprocess_image

# Op names under this scope are the post-processing; TFLite's INT8 export
# keeps them float (box coordinates do not fit 8 bits).
POSTPROCESS_SCOPE = "postprocess"

HeadOutputs = tuple[list[tf.Tensor], list[tf.Tensor]]


class Detector:
    """``model`` (``images -> (class_outputs, box_outputs)``, as
    :func:`~efficientdet_tf.modeling.model.build_model` returns, called with
    ``training=False``) with ``config``'s pre-processing, anchors and NMS.

    ``batch_size``: a fixed batch for every function (some runtimes prefer
    the per-image NMS unrolled); None keeps it dynamic. ``portable_nms``:
    soft-NMS from plain ops, for converters without TF's kernel (ONNX).
    """

    def __init__(self, model: Callable[..., Any], config: Config,
                 batch_size: int | None = None, portable_nms: bool = False):
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.config = model, config
        self.batch_size, self.portable_nms = batch_size, portable_nms
        height, width = config.image_size
        self.input_spec = tf.TensorSpec([batch_size, height, width, 3],
                                        tf.float32)
        # One traced network under every entry point: tracing D0 takes
        # seconds, and an export then holds the network once.
        self.network = tf.function(self._call_network, autograph=False,
                                   input_signature=[self.input_spec])
        self._detect_inputs: Callable[..., Detections] | None = None

    def _call_network(self, inputs: tf.Tensor) -> HeadOutputs:
        class_outputs, box_outputs = self.model(inputs, training=False)
        return list(class_outputs), list(box_outputs)

    def postprocess(self, outputs: HeadOutputs,
                    to_original: tf.Tensor | float | None = None
                    ) -> Detections:
        """Head outputs -> detections, scaled by ``to_original`` (network
        pixels -> original pixels; None keeps network pixels)."""
        with tf.name_scope(POSTPROCESS_SCOPE):
            return postprocess(*outputs, self.config, image_scales=to_original,
                               portable=self.portable_nms)

    def preprocess(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """uint8 ``[B, h, w, 3]`` of any size -> network inputs and their
        factors to original pixels ``[B]``."""
        return preprocess_image(images, self.config.image_size,
                                self.config.mean_rgb, self.config.stddev_rgb)

    def detect_images(self, images: tf.Tensor) -> Detections:
        """uint8 ``[B, h, w, 3]`` -> detections in pixels of the input."""
        inputs, to_original = self.preprocess(images)
        return self.postprocess(self.network(inputs), to_original)

    def detect_bytes(self, image_bytes: tf.Tensor) -> Detections:
        """Encoded images ``[B]`` (JPEG, PNG, BMP, GIF) -> detections; each
        image is decoded and scaled on its own, so one batch may mix sizes."""
        def one_image(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = tf.io.decode_image(data, channels=3,
                                       expand_animations=False)
            return self.preprocess(image)
        inputs, to_original = tf.map_fn(
            one_image, image_bytes, fn_output_signature=(
                tf.TensorSpec(self.input_spec.shape[1:], tf.float32),
                tf.TensorSpec([], tf.float32)))
        return self.postprocess(self.network(inputs), to_original)

    def detect_letterboxed(self, images: tf.Tensor) -> Detections:
        """uint8 ``[B, H, W, 3]`` already at the network size (TFLite's
        input: the client letterboxes) -> detections in its pixels."""
        inputs = normalize_image(images, self.config.mean_rgb,
                                 self.config.stddev_rgb)
        return self.postprocess(self.network(inputs))

    def detect_inputs(self, inputs: tf.Tensor, to_original: tf.Tensor
                      ) -> Detections:
        """Network inputs (normalised, letterboxed float32 ``[B, H, W, 3]``,
        as the eval pipeline makes them) and their factors to original
        pixels ``[B]`` -> detections in original pixels, traced once."""
        if self._detect_inputs is None:
            self._detect_inputs = tf.function(
                lambda x, scale: self.postprocess(self.network(x), scale),
                input_signature=[self.input_spec,
                                 tf.TensorSpec([self.batch_size], tf.float32)])
        return self._detect_inputs(inputs, to_original)

    def head_outputs(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 ``[B, h, w, 3]`` -> the raw per-level head outputs
        ``class_outputs_<level>`` / ``box_outputs_<level>`` and
        ``image_scales``, to debug differences before NMS."""
        inputs, to_original = self.preprocess(images)
        class_outputs, box_outputs = self.network(inputs)
        levels = range(self.config.min_level, self.config.max_level + 1)
        outputs = {"image_scales": to_original}
        for level, cls, box in zip(levels, class_outputs, box_outputs,
                                   strict=True):
            outputs[f"class_outputs_{level}"] = tf.cast(cls, tf.float32)
            outputs[f"box_outputs_{level}"] = tf.cast(box, tf.float32)
        return outputs
