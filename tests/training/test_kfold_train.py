"""main.py --fold=k --num_folds=K: training reads the other folds of
--training_file_pattern, evaluation the held-out one, the split is kept in
model_dir/folds.json, and a resumed run must keep its split."""
from __future__ import annotations

import json
import pathlib

import pytest

from tests.training.test_main_cli import HPARAMS, run_main
from tests.training.test_train import make_demo_records


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> str:
    """Nine demo images in two shards."""
    return make_demo_records(tmp_path_factory.mktemp("shapes"), num_train=9,
                             num_shards=2)


@pytest.mark.parametrize("argv, message", [
    (["--fold=1"], "--fold and --num_folds go together"),
    (["--num_folds=3"], "--fold and --num_folds go together"),
    (["--fold_seed=1"], "--fold_seed goes with --fold and --num_folds"),
    (["--fold=3", "--num_folds=3"], "--fold must be 0..2 for --num_folds=3, got 3"),
    (["--fold=-1", "--num_folds=3"], "--fold must be 0..2 for --num_folds=3, got -1"),
    (["--fold=0", "--num_folds=1"], "--num_folds must be at least 2, got 1"),
    (["--fold=0", "--num_folds=3", "--validation_file_pattern=v"],
     "--validation_file_pattern does not go with --fold: the held-out fold of "
     "--training_file_pattern is the validation data"),
    (["--fold=0", "--num_folds=3", "--mode=eval"],
     "--mode=eval --fold needs --training_file_pattern"),
])
def test_fold_flag_errors_are_usage_errors(capsys, argv, message):
    if "--mode=eval" not in argv:
        argv = [*argv, "--training_file_pattern=t"]
    code, _, err = run_main(capsys, "--model_dir=x", *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("main.py: error: "), err
    assert message in err


def held_out(model_dir: pathlib.Path, fold: int) -> set[str]:
    split = json.loads((model_dir / "folds.json").read_text())
    return {source_id for source_id, k in split["assignment"].items() if k == fold}


@pytest.mark.slow  # trains and evaluates through main.py
def test_a_fold_trains_on_the_others_and_evaluates_itself(capsys, records,
                                                          tmp_path):
    model_dir = tmp_path / "fold-1"
    truth = pathlib.Path(records).parents[1] / "train" / "annotations.json"
    argv = ["--mode=train", f"--model_dir={model_dir}",
            f"--training_file_pattern={records}", "--fold=1", "--num_folds=3",
            f"--hparams={HPARAMS}", "--train_batch_size=2", "--num_epochs=1",
            "--eval_after_train", "--eval_batch_size=2",
            f"--val_json_file={truth}", "--deterministic"]
    code, out, err = run_main(capsys, *argv)
    assert code == 0, err
    assert (f"fold 1 of 3: training on 6 images, evaluating on 3 (folds.json "
            f"in {model_dir})") in out
    assert ("6 training examples per epoch (the records outside fold 1 "
            "counted") in out
    assert "3 steps (1 epochs of 3)" in out
    split = json.loads((model_dir / "folds.json").read_text())
    assert (split["fold"], split["num_folds"], split["seed"]) == (1, 3, 0)
    assert len(split["assignment"]) == 9
    # The JSON lists all nine images; only the held-out three are scored.
    assert "COCO box metrics: 3 images, " in out and str(truth) in out
    detections = json.loads((model_dir / "eval" / "detections.json").read_text())
    assert {str(d["image_id"]) for d in detections} == held_out(model_dir, 1)

    # Resumed with another split, the run would evaluate images it trained on.
    code, _, err = run_main(capsys, *argv, "--fold_seed=5")
    assert code == 1 and err.count("\n") == 1, err
    assert "holds fold 1 of 3 (fold seed 0), not fold 1 of 3 (fold seed 5)" in err
