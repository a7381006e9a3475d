"""K-fold as users run it: ``bash kfold.sh`` from a checkout with relative
paths trains every fold, reports the cross-validated AP, then scores each
fold model and their ensemble (with flip TTA) on a held-out test set."""
from __future__ import annotations

import json

import pytest

from tests.workflows.workdir import checkout_copy, run_shell

PREPARE = """
PYTHONPATH=. python dataset/make_demo_dataset.py --output_dir=data --seed=0 --image_size=128 --num_train=12 --num_val=4
for split in train val; do
  PYTHONPATH=. python dataset/create_coco_tfrecord.py --image_dir=data/$split/images --object_annotations_file=data/$split/annotations.json --output_file_prefix=tfrecord/$split --num_shards=2
done
"""


@pytest.mark.slow
def test_kfold_sh_trains_each_fold_and_scores_the_ensemble(tmp_path):
    work = checkout_copy(tmp_path / "clone")
    prepared = run_shell(PREPARE, work, timeout=300)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    done = run_shell(
        "bash kfold.sh 'tfrecord/train-*.tfrecord' 2 runs "
        "--model_name=efficientdet-d0 --hparams=hparams/demo.yaml "
        "--train_batch_size=4 --num_epochs=1 --seed=0", work, timeout=1200,
        env={"KFOLD_TEST": "tfrecord/val-*.tfrecord",
             "KFOLD_TEST_JSON": "data/val/annotations.json",
             "KFOLD_FUSION": "--tta=flip"})
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    assert "Traceback" not in log
    assert "fold 0 of 2: training on 6 images, evaluating on 6" in done.stdout
    best = [json.loads((work / "runs" / f"fold-{k}" / "archive" /
                        "best_eval.json").read_text())["AP"] for k in (0, 1)]
    assert f"fold 1: best AP {best[1]:.4f} on its held-out fold" in done.stdout
    assert f"cross-validated AP {sum(best) / 2:.4f} +- " in done.stdout
    assert "2 model(s) x 2 view(s); TTA x1, flip x1; merged by wbf" in \
        done.stdout
    for folder in ("fold-0/test_eval", "fold-1/test_eval", "ensemble_eval"):
        results = json.loads((work / "runs" / folder /
                              "eval_results.json").read_text())
        assert 0 <= results["AP"] <= 1
