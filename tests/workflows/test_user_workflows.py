"""The commands users type, run as they type them: from a folder of their
own, with relative paths, through the real CLIs.

* the automl seed workflow (convert with automl's flags, move the records
  into a folder, fine-tune from an official checkpoint directory with
  ``wrs.yaml``, export from ``<model_dir>/archive/``, infer with the frozen
  ``.pb`` that the export writes), small: D0 at 128x128, 2 epochs;
* README command 1, ``bash demo.sh``, at smoke scale.

Every path below is relative to the working directory, a copy of the
checkout: absolute temporary paths once hid a relative ``model_dir`` being
joined twice, which broke the README's first command.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.workflows.test_seed_command import NUM_CLASSES, write_twelve_class_split
from tests.workflows.workdir import checkout_copy, run_shell

# The automl workflow, typed as its users type it (D3 -> D0, fewer
# examples and epochs, batch 2; paths are the workflow's own).
SEED_WORKFLOW = """
PYTHONPATH=".:${PYTHONPATH:-}" python dataset/create_coco_tfrecord.py --image_dir=wrs/train2017/ --object_annotations_file=wrs/annotations/instances_train2017.json --output_file_prefix=wrs/train
PYTHONPATH=".:${PYTHONPATH:-}" python dataset/create_coco_tfrecord.py --image_dir=wrs/valid2017/ --object_annotations_file=wrs/annotations/instances_valid2017.json --output_file_prefix=wrs/valid
mkdir -p wrs/tfrecords && mv wrs/*.tfrecord wrs/tfrecords/
python main.py --mode=train_and_eval --training_file_pattern=wrs/tfrecords/train*.tfrecord --validation_file_pattern=wrs/tfrecords/valid*.tfrecord \\
  --model_name=efficientdet-d0 --model_dir=wrs_efficientdet-d0-finetune --ckpt=efficientdet-d0 --train_batch_size=2 \\
  --num_examples_per_epoch=8 --num_epochs=2 --hparams=wrs.yaml
python model_inspect.py --runmode=saved_model --model_name=efficientdet-d0 --saved_model_dir=tmp/saved_model/ \\
  --ckpt_path=wrs_efficientdet-d0-finetune/archive/ --hparams=wrs.yaml --batch_size=1
python model_inspect.py --runmode=saved_model_infer --model_name=efficientdet-d0 --ckpt_path=wrs_efficientdet-d0-finetune/ \\
  --saved_model_dir=tmp/saved_model/efficientdet-d0_frozen.pb --input_image=./wrs/test/*.png --output_image_dir=tmp/img_output --hparams=wrs.yaml
"""


@pytest.mark.slow
def test_automl_seed_workflow_from_official_checkpoint(fixtures_dir, tmp_path):
    work = checkout_copy(tmp_path / "automl_user")
    rng = np.random.default_rng(7)
    for split, count in (("train2017", 8), ("valid2017", 4)):
        write_twelve_class_split(
            work / "wrs" / split,
            work / "wrs" / "annotations" / f"instances_{split}.json", count, rng)
    (work / "wrs" / "test").mkdir()
    for i, jpeg in enumerate(sorted((work / "wrs" / "valid2017").glob("*.jpg"))[:2]):
        Image.open(jpeg).save(work / "wrs" / "test" / f"test_{i}.png")
    # The user's wrs.yaml, at a tiny image size for the test's sake.
    (work / "wrs.yaml").write_text(
        (work / "hparams" / "wrs.yaml").read_text() + "image_size: 128\n")
    # An official automl checkpoint directory, as its archives extract.
    shutil.copytree(fixtures_dir / "automl_d0_256x256" / "ckpt",
                    work / "efficientdet-d0")

    done = run_shell(SEED_WORKFLOW, work, timeout=1500)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    assert "Traceback" not in log
    assert "initialised from" in log and "class_net/class-predict" in log
    model_dir = work / "wrs_efficientdet-d0-finetune"
    assert "mixed_precision: true" in (model_dir / "config.yaml").read_text()
    assert (model_dir / "archive" / "best_eval.json").is_file()
    assert (work / "tmp" / "saved_model" / "efficientdet-d0_frozen.pb").is_file()
    drawn = sorted(p.name for p in (work / "tmp" / "img_output").glob("*.png"))
    assert drawn == ["test_0.png", "test_1.png"]
    report = json.loads((work / "tmp" / "img_output" / "detections.json").read_text())
    assert len(report["images"]) == 2 and not report["failed"]
    # Labels come from wrs.yaml's label_map; its 13th class has no name.
    names = {n for image in report["images"] for n in image["names"]}
    assert names <= {f"obj{i}" for i in range(1, NUM_CLASSES + 1)} | {"13"}


@pytest.mark.slow
def test_demo_sh_at_smoke_scale(tmp_path):
    """README command 1 with its own relative defaults, minus the install
    (the package under test is already installed; reinstalling from a
    temporary copy would repoint it)."""
    work = checkout_copy(tmp_path / "clone")
    done = run_shell("bash demo.sh", work, timeout=1500, env={
        "DEMO_INSTALL": "0", "DEMO_EPOCHS": "2", "DEMO_NUM_TRAIN": "16",
        "DEMO_NUM_VAL": "4", "DEMO_BATCH": "8"})
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    assert "Traceback" not in log
    out = work / "demo_output"
    results = json.loads((out / "model" / "eval" / "eval_results.json").read_text())
    assert f"AP {results['AP']:.3f}" in done.stdout  # the demo prints its AP
    drawn = sorted((out / "predictions").glob("*.jpg"))
    assert len(drawn) == 4
    # Where the model fails, after every evaluation (matplotlib is a test
    # dependency, as demo.sh installs it).
    for name in ("pr_curves.png", "confusion_matrix.png", "f1_vs_threshold.png",
                 "per_class.md"):
        assert (out / "model" / "eval" / name).is_file(), name
    assert (out / "model" / "training_curves.png").is_file()
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert len(list((out / "model").glob("ckpt-*.index"))) >= 2
    # Rerun: the finished run resumes from its newest checkpoint (relative
    # model_dir with two checkpoints) instead of starting again at step 0.
    again = run_shell(
        "python main.py --mode=train --training_file_pattern="
        "'demo_output/tfrecord/train-*.tfrecord' --model_name=efficientdet-d0 "
        "--hparams=hparams/demo.yaml --model_dir=demo_output/model "
        "--train_batch_size=8 --num_epochs=2", work, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "resuming from demo_output/model/ckpt-" in again.stdout + again.stderr
