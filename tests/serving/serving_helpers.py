"""Shared by test_export.py and test_inference.py: one small detector with
meaningful weights, exported once per test session.

The network is D0 at 128x128 with 3 classes: the official fixture's weights
(every variable random but influential) and a new, random class-prediction
layer (it is the only shape that differs), scaled so that scores spread over
(0, 1) instead of tying at the prior: ties would make detection order, hence
comparisons between runtimes, arbitrary.
"""
from __future__ import annotations

import atexit
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from tests.conftest import REPO_ROOT

SMALL_OVERRIDES = {"image_size": 128, "num_classes": 3,
                   "label_map": {1: "cat", 2: "dog", 3: "bird"}}
_CACHE: dict = {}


def fixture_dir(fixtures_dir: pathlib.Path) -> pathlib.Path:
    return fixtures_dir / "automl_d0_256x256"


def small_model(fixtures_dir: pathlib.Path):
    """(model, config), built once per session."""
    if "model" not in _CACHE:
        from efficientdet_tf.modeling.checkpoint import load_weights
        from efficientdet_tf.config import get_config
        from efficientdet_tf.modeling.model import build_model
        config = get_config("efficientdet-d0", SMALL_OVERRIDES)
        model = build_model(config)
        load_weights(model, fixture_dir(fixtures_dir) / "ckpt",
                     skip_mismatch=True)
        spread_class_scores(model)
        _CACHE["model"] = (model, config)
    return _CACHE["model"]


def spread_class_scores(model) -> None:
    """Gives ``model`` a random class-prediction layer scaled so that scores
    spread over (0, 1) instead of tying at the prior (see the module
    docstring)."""
    rng = np.random.default_rng(0)
    predict = model.get_layer("class_net").predict
    predict.pointwise_kernel.assign(
        rng.normal(0, 0.3, predict.pointwise_kernel.shape).astype(np.float32))
    predict.bias.assign(
        rng.normal(-1.5, 0.5, predict.bias.shape).astype(np.float32))


def temp_root() -> pathlib.Path:
    """A session-wide scratch folder, removed at exit."""
    if "root" not in _CACHE:
        root = pathlib.Path(tempfile.mkdtemp(prefix="edet-serving-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _CACHE["root"] = root
    return _CACHE["root"]


def small_export(fixtures_dir: pathlib.Path) -> pathlib.Path:
    """The small model's SavedModel (dynamic batch)."""
    if "export" not in _CACHE:
        from efficientdet_tf.serving.export import export_saved_model
        model, config = small_model(fixtures_dir)
        _CACHE["export"] = pathlib.Path(export_saved_model(
            model, config, temp_root() / "small_saved_model"))
    return _CACHE["export"]


def sample_images(fixtures_dir: pathlib.Path) -> dict[str, np.ndarray]:
    """Two uint8 batches of two sizes cut from the fixture photo-like image
    (300x400): the image and its mirror; a 170x130 crop and its flip."""
    image = np.load(fixture_dir(fixtures_dir) / "image.npy")
    crop = np.ascontiguousarray(image[40:210, 100:230])
    return {"a": np.stack([image, image[:, ::-1]]),
            "b": np.stack([crop, crop[::-1]])}


def png_bytes(images: np.ndarray) -> list[bytes]:
    """Lossless encodings, so bytes and uint8 inputs must agree exactly."""
    import tensorflow as tf
    return [tf.io.encode_png(image).numpy() for image in images]


def run_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with the repository importable."""
    import os
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO_ROOT)


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``model_inspect.py args`` in a fresh process."""
    import os
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(REPO_ROOT / "model_inspect.py"),
                           *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO_ROOT)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of yxyx boxes ``[N, 4]`` x ``[M, 4]``."""
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)
