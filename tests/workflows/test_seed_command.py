"""The command users bring from automl, unchanged but for the flags that make
it short:

  python main.py --mode=train_and_eval --training_file_pattern=... \\
      --validation_file_pattern=... --model_name=efficientdet-d0 \\
      --model_dir=... --hparams=hparams/wrs.yaml

on a generated 12-class dataset (COCO JSON -> our converter -> TFRecords).
``hparams/wrs.yaml`` brings mixed precision, a frozen backbone and BiFPN,
``anchor_scale`` 2, no EMA, 13 classes for 12 named ids and an automl-only
key, all of which must pass through the real CLI at the default 512x512.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from efficientdet_tf.training import trainer_state
from efficientdet_tf.datasets.coco import convert_coco

NUM_CLASSES = 12


def write_twelve_class_split(images_dir: pathlib.Path, json_path: pathlib.Path,
                             count: int, rng: np.random.Generator,
                             prefix: str = "") -> pathlib.Path:
    """``count`` 160x120 JPEGs with 1-3 coloured rectangles of classes
    ``obj1``..``obj12`` and their COCO JSON shaped as CVAT's "COCO 1.0"
    export writes it (``info``/``licenses``, empty supercategories and
    segmentations, ``attributes`` per object); returns ``json_path``."""
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        pixels = rng.integers(0, 60, size=(120, 160, 3), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            label = int(rng.integers(1, NUM_CLASSES + 1))
            w, h = (int(v) for v in rng.integers(20, 60, size=2))
            x, y = int(rng.integers(0, 160 - w)), int(rng.integers(0, 120 - h))
            pixels[y:y + h, x:x + w] = (label * 20, 255 - label * 20, 128)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": label, "segmentation": [], "area": float(w * h),
                "bbox": [float(x), float(y), float(w), float(h)], "iscrowd": 0,
                "attributes": {"occluded": False}})
        name = f"{prefix}{image_id:03d}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG")
        (images_dir / name).write_bytes(buffer.getvalue())
        images.append({"id": image_id, "width": 160, "height": 120,
                       "file_name": name, "license": 0, "flickr_url": "",
                       "coco_url": "", "date_captured": 0})
    categories = [{"id": i, "name": f"obj{i}", "supercategory": ""}
                  for i in range(1, NUM_CLASSES + 1)]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "",
                 "url": "", "version": "", "year": ""},
        "categories": categories, "images": images,
        "annotations": annotations}))
    return json_path


@pytest.mark.slow  # D0 at 512x512 in mixed precision, train then eval
def test_seed_command_with_wrs_yaml_on_twelve_classes(tmp_path):
    rng = np.random.default_rng(12)
    patterns = {}
    for split, count in (("train", 6), ("val", 3)):
        annotations = write_twelve_class_split(
            tmp_path / "data" / split, tmp_path / "data" / f"{split}.json",
            count, rng, prefix=f"{split}_")
        convert_coco(str(tmp_path / "data" / split), str(annotations),
                     str(tmp_path / "records" / split), num_shards=2,
                     num_threads=1)
        patterns[split] = str(tmp_path / "records" / f"{split}-*.tfrecord")
    model_dir = tmp_path / "model"
    seed_command = [
        sys.executable, "main.py", "--mode=train_and_eval",
        f"--training_file_pattern={patterns['train']}",
        f"--validation_file_pattern={patterns['val']}",
        "--model_name=efficientdet-d0", f"--model_dir={model_dir}",
        "--hparams=hparams/wrs.yaml"]
    shortening = ["--train_batch_size=2", "--num_epochs=1",
                  "--val_json_file=" + str(tmp_path / "data" / "val.json")]
    done = subprocess.run(seed_command + shortening, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    # 6 examples at global batch 2: one epoch is 3 steps, then one eval.
    assert "3 steps (1 epochs of 3), global batch 2" in log
    assert "step 3/3" in log
    assert "use_keras_model" in log  # automl-only key: warned, ignored
    # Every named class appears in the per-class table of the evaluation.
    table = log.split("per-class AP")[1]
    assert all(f"obj{i} " in table for i in range(1, NUM_CLASSES + 1)), table
    results = json.loads((model_dir / "eval" / "eval_results.json").read_text())
    assert set(results) >= {"AP", "AP50", "AP_/obj12"}
    saved = (model_dir / "config.yaml").read_text()
    assert "mixed_precision: true" in saved and "num_classes: 13" in saved
    latest = trainer_state.latest_checkpoint(str(model_dir))
    assert trainer_state.checkpoint_steps(latest)[0] == 3
