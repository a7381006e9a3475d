"""The configuration as data: automl's defaults and the named models.

The defaults are the official automl EfficientDet defaults and each named
model is a small diff on them, so a reader sees at a glance what D3 changes
from D0. :mod:`efficientdet_tf.config` builds configs from these (and says
what every key may hold); nothing here is code but the one helper that
spells a preset.
"""
from __future__ import annotations

from typing import Any

IMAGENET_MEAN_RGB = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STDDEV_RGB = [0.229 * 255, 0.224 * 255, 0.225 * 255]

DEFAULTS: dict[str, Any] = {
    "name": "efficientdet-d1",
    "backbone_name": "efficientnet-b1",
    # {blocks: [EfficientNet block strings]} replacing the seven stages of
    # B0 (scaled by backbone_name's width and depth); None: the official ones.
    "backbone_config": None,
    # Drop-connect survival of the last backbone block (decaying from 1 at
    # the first); None: automl's, 0.8 and none for B0. 1.0 turns it off.
    "backbone_survival_prob": None,
    "act_type": "swish",
    # Input.
    "image_size": 640,
    "input_rand_hflip": True,
    "jitter_min": 0.1,
    "jitter_max": 2.0,
    "mean_rgb": IMAGENET_MEAN_RGB,
    "stddev_rgb": IMAGENET_STDDEV_RGB,
    "max_instances_per_image": 100,
    "skip_crowd_during_training": True,
    # automl's training augmentation of the decoded image, in its order:
    # GridMask, then an AutoAugment policy (v0..v3, or randaug); off: None.
    "grid_mask": False,
    "autoaugment_policy": None,
    # Shares of training images made by Mosaic (4 images), MixUp (2 blended)
    # and CutMix (a patch of another image); at most 1 together.
    "mosaic_prob": 0.0,
    "mixup_prob": 0.0,
    "cutmix_prob": 0.0,
    "regenerate_source_id": False,
    # Classes.
    "num_classes": 90,
    "label_map": None,
    # Anchors.
    "min_level": 3,
    "max_level": 7,
    "num_scales": 3,
    "aspect_ratios": [1.0, 2.0, 0.5],
    "anchor_scale": 4.0,
    # Network.
    # The feature network's topology: a name from fpn_topologies.FPN_TOPOLOGIES
    # (None: "bifpn"), or fpn_config = {nodes: [{feat_level: L,
    # inputs_offsets: [ids]}, ...], weight_method: optional}, which wins.
    "fpn_name": None,
    "fpn_config": None,
    "fpn_num_filters": 88,
    "fpn_cell_repeats": 4,
    # How nodes fuse their inputs (fpn_config's weight_method wins, as in
    # automl); None: "fastattn".
    "fpn_weight_method": None,
    "box_class_repeats": 3,
    "separable_conv": True,
    "apply_bn_for_resampling": True,
    "conv_after_downsample": False,
    "conv_bn_act_pattern": False,
    "survival_prob": None,
    "batch_norm_momentum": 0.99,
    "batch_norm_epsilon": 1e-3,
    "mixed_precision": False,
    # Recompute backbone block activations in the backward pass instead of
    # keeping them: ~40 % less training memory for ~20 % more time.
    "grad_checkpoint": False,
    # Optimization.
    "optimizer": "sgd",
    "momentum": 0.9,
    "learning_rate": 0.08,
    "lr_warmup_init": 0.008,
    "lr_warmup_epoch": 1.0,
    "lr_decay_method": "cosine",
    "first_lr_drop_epoch": 200.0,
    "second_lr_drop_epoch": 250.0,
    "poly_lr_power": 0.9,
    "clip_gradients_norm": 10.0,
    "num_epochs": 300,
    "weight_decay": 4e-5,
    "moving_average_decay": 0.9998,
    "var_freeze_expr": None,
    "drop_remainder": True,
    # Loss.
    "label_smoothing": 0.0,
    "alpha": 0.25,
    "gamma": 1.5,
    "delta": 0.1,
    "box_loss_weight": 50.0,
    "iou_loss_type": None,
    "iou_loss_weight": 1.0,
    # Post-processing.
    "nms_configs": {
        "method": "gaussian",
        "iou_thresh": None,
        "score_thresh": None,
        "sigma": None,
        "max_nms_inputs": 0,
        "max_output_size": 100,
        "per_class": True,
    },
}

# automl keys that configure things this implementation does differently (or
# not at all). A YAML written for automl may carry them: accept with a warning.
AUTOML_ONLY_KEYS = frozenset({
    "use_keras_model", "strategy", "data_format", "verbose",
    "save_freq", "sample_image", "map_freq", "img_summary_steps", "dataset_type",
    "seg_num_classes", "heads", "positives_momentum", "ckpt_var_scope",
    "model_optimizations", "scale_range",
    "target_size", "loss_scale", "use_tpu", "precision", "nms_configs.pyfunc",
    # Batch norms follow each call's `training` argument, as in Keras.
    "is_training_bn",
    # Warm starts (--ckpt) always keep variables whose shapes differ.
    "skip_mismatch",
    # TFLite models run the SavedModel's NMS: nms_configs.max_output_size.
    "tflite_max_detections",
})

# automl's drop-connect in an EfficientDet backbone: EfficientNet's default,
# except that the B0 backbone trains without it.
BACKBONE_SURVIVAL_PROB = 0.8
DEFAULT_FPN_NAME = "bifpn"
DEFAULT_FPN_WEIGHT_METHOD = "fastattn"

_LITE_COMMON = {
    "mean_rgb": 127.0,
    "stddev_rgb": 128.0,
    "act_type": "relu6",
    "fpn_weight_method": "sum",
}


def _preset(backbone: str, image_size: int, filters: int, cells: int,
            repeats: int, **extra: Any) -> dict[str, Any]:
    return dict(backbone_name=backbone, image_size=image_size,
                fpn_num_filters=filters, fpn_cell_repeats=cells,
                box_class_repeats=repeats, **extra)


PRESETS: dict[str, dict[str, Any]] = {
    "efficientdet-d0": _preset("efficientnet-b0", 512, 64, 3, 3),
    "efficientdet-d1": _preset("efficientnet-b1", 640, 88, 4, 3),
    "efficientdet-d2": _preset("efficientnet-b2", 768, 112, 5, 3),
    "efficientdet-d3": _preset("efficientnet-b3", 896, 160, 6, 4),
    "efficientdet-d4": _preset("efficientnet-b4", 1024, 224, 7, 4),
    "efficientdet-d5": _preset("efficientnet-b5", 1280, 288, 7, 4),
    "efficientdet-d6": _preset("efficientnet-b6", 1280, 384, 8, 5,
                               fpn_weight_method="sum"),
    "efficientdet-d7": _preset("efficientnet-b6", 1536, 384, 8, 5,
                               anchor_scale=5.0, fpn_weight_method="sum"),
    "efficientdet-d7x": _preset("efficientnet-b7", 1536, 384, 8, 5,
                                max_level=8, fpn_weight_method="sum"),
    "efficientdet-lite0": _preset("efficientnet-lite0", 320, 64, 3, 3,
                                  anchor_scale=3.0, **_LITE_COMMON),
    "efficientdet-lite1": _preset("efficientnet-lite1", 384, 88, 4, 3,
                                  anchor_scale=3.0, **_LITE_COMMON),
    "efficientdet-lite2": _preset("efficientnet-lite2", 448, 112, 5, 3,
                                  anchor_scale=3.0, **_LITE_COMMON),
    "efficientdet-lite3": _preset("efficientnet-lite3", 512, 160, 6, 4,
                                  **_LITE_COMMON),
    "efficientdet-lite3x": _preset("efficientnet-lite3", 640, 200, 6, 4,
                                   anchor_scale=3.0, **_LITE_COMMON),
    "efficientdet-lite4": _preset("efficientnet-lite4", 640, 224, 7, 4,
                                  **_LITE_COMMON),
}
