"""ONNX export through tf2onnx (optional: ``pip install tf2onnx onnxruntime``).

The ONNX graph is ``serving_default``'s: uint8 ``images [B, h, w, 3]`` of any
size -> ``detection_boxes``, ``detection_scores``, ``detection_classes``,
``num_detections`` (pre-processing and NMS included).

Both NMS methods export. Hard NMS maps onto ONNX's ``NonMaxSuppression``
operator. That operator has no soft-NMS (tf2onnx would map TF's kernel onto
it, silently dropping ``soft_nms_sigma``), so the default Gaussian method is
exported as :func:`efficientdet_tf.ops.postprocess.greedy_nms`: a loop (ONNX
``Loop``) of elementwise ops that selects the same boxes with the same
decayed scores as the SavedModel.
"""
from __future__ import annotations

import os

import keras
import numpy as np

from efficientdet_tf.config import Config
from efficientdet_tf.serving.export import (SERVING_DEFAULT, ExportError,
                                    ServingGraph)
from efficientdet_tf.utils.files import atomic_path

DEFAULT_OPSET = 17
INSTALL_HINT = "pip install tf2onnx onnxruntime"


def _tf2onnx():
    try:
        import tf2onnx
    except ImportError as err:
        raise ExportError(f"ONNX export needs tf2onnx ({err}); "
                          f"{INSTALL_HINT}") from None
    try:
        # tf2onnx 1.17 still uses NumPy 1 names; Keras ships the shim it
        # needs for its own ONNX export.
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
        patch_tf2onnx()
    except ImportError:
        pass
    return tf2onnx


def export_onnx(model: keras.Model, config: Config, path: str,
                batch_size: int | None = None,
                opset: int = DEFAULT_OPSET) -> str:
    """Converts ``serving_default`` to ONNX at ``path`` (written to a
    temporary file, then renamed)."""
    tf2onnx = _tf2onnx()
    function = ServingGraph(model, config, batch_size,
                            portable_nms=True).functions()[SERVING_DEFAULT]
    target = os.fspath(path)
    with atomic_path(target) as temp:
        try:
            tf2onnx.convert.from_function(
                function, input_signature=function.input_signature,
                opset=opset, output_path=temp)
        except Exception as err:  # tf2onnx raises bare Exceptions of many kinds
            raise ExportError(f"tf2onnx could not convert the model: "
                              f"{type(err).__name__}: {err}") from None
    return target


class OnnxDetector:
    """Runs an exported ``.onnx`` with onnxruntime: uint8 images -> dict."""

    def __init__(self, path: str):
        try:
            import onnxruntime
        except ImportError as err:
            raise ExportError(f"running ONNX needs onnxruntime ({err}); "
                              f"{INSTALL_HINT}") from None
        self.session = onnxruntime.InferenceSession(
            path, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self.session.get_outputs()]

    def detect(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self._outputs,
                                  {"images": np.asarray(images, np.uint8)})
        return dict(zip(self._outputs, values))
