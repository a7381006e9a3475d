"""Augmentation as a user switches it on: a YAML of automl's keys plus ours,
the contact sheet to look at first, then training with it; the real CLIs,
from a working folder, with relative paths.

automl's ``autoaugment_policy`` and ``grid_mask`` were once accepted with a
warning and silently trained without: here the run must train with them and
print no such warning.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.workflows.workdir import checkout_copy, run_shell

AUG_YAML = """\
autoaugment_policy: v0
grid_mask: true
mosaic_prob: 0.5
mixup_prob: 0.2
"""

PREPARE = """
python dataset/make_demo_dataset.py --output_dir=shapes --seed=0 --image_size=128 --num_train=8 --num_val=4
python dataset/create_coco_tfrecord.py --image_dir=shapes/train/images --object_annotations_file=shapes/train/annotations.json --output_file_prefix=records/train --num_shards=1
"""
SHEET = ("python dataset/inspect_tfrecord.py --file_pattern='records/train-*.tfrecord' "
         "--augment --hparams=hparams/demo.yaml,aug.yaml --num_samples=6 "
         "--output_dir=looks{suffix}")
TRAIN = ("python main.py --mode=train --training_file_pattern='records/train-*.tfrecord' "
         "--model_name=efficientdet-d0 --hparams=hparams/demo.yaml,aug.yaml "
         "--model_dir=run --train_batch_size=2 --num_examples_per_epoch=4 "
         "--num_epochs=1 --seed=0 --deterministic")


@pytest.mark.slow
def test_contact_sheet_then_training_with_automl_and_mixing_keys(tmp_path):
    work = checkout_copy(tmp_path / "clone")
    (work / "aug.yaml").write_text(AUG_YAML)
    prepared = run_shell(PREPARE, work, timeout=300)
    assert prepared.returncode == 0, prepared.stderr[-3000:]

    sheet = run_shell(SHEET.format(suffix="") + " && "
                      + SHEET.format(suffix="_again"), work, timeout=300)
    log = sheet.stdout + sheet.stderr
    assert sheet.returncode == 0, log[-3000:]
    assert ("augmented training samples (6 at 128x128; flip, scale jitter "
            "0.8-1.2, GridMask, AutoAugment v0, Mosaic 50%, MixUp 20%): "
            "looks/augmented.png") in sheet.stdout
    picture = np.asarray(Image.open(work / "looks" / "augmented.png"))
    # 6 samples: a 3 x 2 grid of 128 px tiles with 4 px gutters.
    assert picture.shape == (2 * 128 + 4, 3 * 128 + 8, 3)
    again = np.asarray(Image.open(work / "looks_again" / "augmented.png"))
    np.testing.assert_array_equal(picture, again)  # seeded: repeatable

    trained = run_shell(TRAIN, work, timeout=900)
    log = trained.stdout + trained.stderr
    assert trained.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    assert "no effect in efficientdet_tf" not in log, log[-3000:]
    assert list((work / "run").glob("ckpt-*.index"))
