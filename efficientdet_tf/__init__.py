"""EfficientDet for TensorFlow 2 / Keras 3, faithful to the official automl
checkpoints.

The public API is importable from here in one line::

    from efficientdet_tf import get_config, build_model, load_weights

Names resolve lazily (PEP 562): ``import efficientdet_tf`` alone does not
import TensorFlow, so the dataset converters and ``--help`` of every CLI stay
fast, and a user pays only for the part of the library they touch. The
folders hold the rest by role (see the README's "Layout").
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "Config": "config", "ConfigError": "config", "get_config": "config",
    "EfficientDetError": "errors",
    "build_model": "modeling.model", "Detector": "modeling.detector",
    "load_weights": "modeling.checkpoint", "save_native": "modeling.checkpoint",
    "official_variable_map": "modeling.checkpoint",
    "anchor_boxes": "ops.anchors", "label_anchors": "ops.anchors",
    "encode_boxes": "ops.anchors", "decode_boxes": "ops.anchors",
    "detection_loss": "ops.losses",
    "preprocess_image": "ops.preprocess",
    "postprocess": "ops.postprocess", "Detections": "ops.postprocess",
    "build_dataset": "data.pipeline",
    "Trainer": "training.trainer", "TrainOptions": "training.trainer",
    "evaluate": "evaluation.evaluate",
    "export_saved_model": "serving.export", "freeze_graph": "serving.export",
    "export_tflite": "serving.tflite_export", "export_onnx": "serving.onnx_export",
    "SavedModelDetector": "serving.inference", "run_inference": "serving.inference",
    "open_model": "serving.predictors",
    "FusedPredictor": "fusion.fused", "FusionOptions": "fusion.fused",
    "parse_tta": "fusion.views", "TileSpec": "fusion.tiles",
    "weighted_boxes_fusion": "fusion.merge",
    "assign_folds": "datasets.kfold",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'efficientdet_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
