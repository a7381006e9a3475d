"""main.py: flags and their help, one-line errors, config precedence, a run
killed with SIGKILL resuming with the same command, and the eval modes
(evaluate stubbed: it is another module's job)."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tests.conftest import REPO_ROOT
from efficientdet_tf.cli import train as main
from efficientdet_tf.training import runner, strategy, trainer_state
from tests.training.test_train import SMALL, make_demo_records, quick_graph_optimisation  # noqa: F401

# The backbone is frozen to keep these runs' graphs small.
HPARAMS = ",".join(f"{k}={v}" for k, v in {
    **SMALL, "learning_rate": 0.64, "lr_warmup_epoch": 0.2,
    "moving_average_decay": 0.9, "var_freeze_expr": "efficientnet"}.items())


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> str:
    return make_demo_records(tmp_path_factory.mktemp("shapes"))


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main.main(list(argv))
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def test_help_explains_every_flag(capsys):
    parser = main.build_parser()
    for action in parser._actions:
        assert action.help and len(action.help) > 20, action.option_strings
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    for flag in ("--training_file_pattern", "--train_file_pattern",
                 "--validation_file_pattern", "--val_file_pattern",
                 "--eval_after_train", "--eval_after_training", "--strategy",
                 "--keep_checkpoint_max", "--deterministic", "WIDTHxHEIGHT"):
        assert flag in out
    assert main.MODES == runner.MODES and main.STRATEGIES == strategy.STRATEGIES


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: --model_dir"),
    (["--model_dir=x"], "--mode=train needs --training_file_pattern"),
    (["--model_dir=x", "--mode=eval"], "--mode=eval needs --validation_file_pattern"),
    (["--model_dir=x", "--train_file_pattern=a", "--eval_after_train"],
     "--mode=train --eval_after_train needs --validation_file_pattern"),
    (["--model_dir=x", "--train_file_pattern=a", "--strategy=tpu"],
     "--strategy=tpu needs --tpu"),
    (["--model_dir=x", "--deterministic=maybe"], "expected true or false"),
    (["--model_dir=x", "--train_batch_size=0"], "must be at least 1"),
])
def test_usage_errors_are_one_line(capsys, argv, message):
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("main.py: error: "), err
    assert message in err


def test_run_errors_exit_1_with_one_line(capsys, tmp_path, monkeypatch):
    base = [f"--model_dir={tmp_path / 'run'}",
            f"--training_file_pattern={tmp_path / 'none-*.tfrecord'}"]
    code, _, err = run_main(capsys, *base)
    assert code == 1 and err == (
        f"main.py: error: training data: no TFRecord files match "
        f"'{tmp_path / 'none-*.tfrecord'}' (check the path and the glob; "
        "several patterns are separated by commas)\n")
    code, _, err = run_main(capsys, *base, "--hparams=num_clases=3")
    assert code == 1 and "did you mean 'num_classes'" in err and err.count("\n") == 1
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code, _, err = run_main(capsys, *base, "--strategy=multi_worker")
    assert code == 1 and "needs the TF_CONFIG environment variable" in err
    code, _, err = run_main(capsys, "--mode=eval", f"--model_dir={tmp_path}",
                            "--validation_file_pattern=x", "--hparams=num_classes=3")
    assert code == 1 and "no checkpoint in" in err and err.count("\n") == 1


def test_config_precedence(tmp_path):
    hparams = tmp_path / "h.yaml"
    hparams.write_text(yaml.safe_dump({"num_epochs": 7, "learning_rate": 0.1,
                                       "use_keras_model": False}))
    for given in (str(hparams), "num_epochs=7,learning_rate=0.1"):
        config = runner.resolve_config("efficientdet-d1", given,
                                       {"num_epochs": 3, "unused": None})
        assert config.num_epochs == 3  # explicit flag over hparams
        assert config.learning_rate == 0.1  # hparams over preset/defaults
        assert config.fpn_num_filters == 88  # the d1 preset over defaults
        assert config.alpha == 0.25  # defaults


def latest_step(model_dir: pathlib.Path) -> int:
    prefix = trainer_state.latest_checkpoint(str(model_dir))
    return trainer_state.checkpoint_steps(prefix)[0] if prefix else 0


@pytest.mark.slow  # two training processes
def test_killed_run_resumes_with_the_same_command(records, tmp_path):
    model_dir = tmp_path / "run"
    command = [sys.executable, str(REPO_ROOT / "main.py"), "--mode=train",
               f"--training_file_pattern={records}", f"--model_dir={model_dir}",
               f"--hparams={HPARAMS}", "--train_batch_size=2",
               "--num_examples_per_epoch=20", "--num_epochs=2",
               "--save_checkpoints_steps=5", "--keep_checkpoint_max=3",
               "--deterministic", "--log_every_steps=5"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                 env=env)
        deadline = time.monotonic() + 300
        while "(step 5)" not in log.read_text() and first.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, log.read_text()
    killed_at = latest_step(model_dir)
    assert 5 <= killed_at < 20, log.read_text()

    second = subprocess.run(command, capture_output=True, text=True, env=env,
                            timeout=600, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    prefix = trainer_state.latest_checkpoint(str(model_dir))
    assert f"resuming from {model_dir}" in second.stdout
    assert f"at step {killed_at}" in second.stdout
    assert "starts fresh" not in second.stdout and "step 20/20" in second.stdout
    assert trainer_state.checkpoint_steps(prefix) == (20, 20)
    # The optimizer counted on from its restored state, not from zero.
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_tensor("optimizer/iteration/.ATTRIBUTES/VARIABLE_VALUE") == 20
    assert len(list(model_dir.glob("ckpt-*.index"))) == 3


@pytest.mark.slow  # two training processes
def test_deterministic_runs_end_bit_identical(records, tmp_path):
    """Two processes, same command: every saved tensor equal to the bit.
    Grappler's rewrites of sums made the shared head kernels differ in the
    last bit from the first step on (an AP spread of 0.04 on the demo)."""
    def train(model_dir: str) -> dict:
        done = subprocess.run(
            [sys.executable, str(REPO_ROOT / "main.py"), "--mode=train",
             f"--training_file_pattern={records}", f"--model_dir={model_dir}",
             f"--hparams={REPO_ROOT / 'hparams' / 'demo.yaml'}",
             "--train_batch_size=8", "--num_examples_per_epoch=16",
             "--num_epochs=1", "--deterministic"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        reader = tf.train.load_checkpoint(str(tmp_path / model_dir))
        return {name: reader.get_tensor(name)  # all but the input's state
                for name, dtype in reader.get_variable_to_dtype_map().items()
                if dtype != tf.variant}

    first, second = train("first"), train("second")
    assert len(first) > 700 and first.keys() == second.keys()  # weights, slots, EMA
    differing = [name for name in first
                 if not np.array_equal(first[name], second[name])]
    assert not differing, differing[:10]


def test_train_and_eval_then_eval_mode(capsys, records, tmp_path, monkeypatch):
    calls, detectors = [], []

    def fake_evaluate(detector, file_pattern, **kwargs):
        detectors.append(detector)
        calls.append((kwargs["step"], file_pattern, kwargs["max_images"]))
        return {"AP": [0.3, 0.2, 0.1][len(calls) % 3], "AP50": 0.5}
    monkeypatch.setitem(sys.modules, "efficientdet_tf.evaluation.evaluate",
                        types.SimpleNamespace(evaluate=fake_evaluate))
    model_dir = tmp_path / "run"
    # Validation records must exist (the start-up scan reads them); the
    # training ones serve.
    common = [f"--model_dir={model_dir}", f"--validation_file_pattern={records}",
              "--eval_samples=2"]
    code, out, err = run_main(
        capsys, "--mode=train_and_eval", *common, f"--hparams={HPARAMS}",
        f"--train_file_pattern={records}", "--train_batch_size=2",
        "--num_examples_per_epoch=4", "--num_epochs=2", "--deterministic")
    assert code == 0, err
    assert calls == [(2, records, 2), (4, records, 2)]
    # One detector for the run's model: its traced function is reused.
    assert detectors[0] is detectors[1]
    assert "best AP so far: 0.2000 at step 2" in out
    assert "at step 4" not in out.split("best AP")[-1]  # 0.1 is no better
    best = model_dir / trainer_state.BEST_DIR
    assert '"step": 2' in (best / trainer_state.BEST_FILE).read_text()
    assert len(list(best.glob("ckpt-*.index"))) == 1
    # Redrawn at each evaluation from the run's event files.
    assert (model_dir / "training_curves.png").stat().st_size > 10_000

    # eval mode: the run's own config, its newest checkpoint, once ...
    code, out, err = run_main(capsys, "--mode=eval", *common,
                              f"--hparams={model_dir / 'config.yaml'}")
    assert code == 0, err
    assert calls[-1] == (4, records, 2) and "evaluating" in out
    assert "best AP so far: 0.3000 at step 4" in out
    # ... or waiting for new ones, stopping at the run's last step.
    code, out, err = run_main(capsys, "--mode=eval", *common, "--eval_timeout=30",
                              f"--hparams={model_dir / 'config.yaml'}")
    assert code == 0, err
    assert len(calls) == 4 and "best AP" not in out


def test_a_p2_model_trains_checkpoints_and_evaluates(capsys, records, tmp_path):
    """``min_level=2`` end to end through main.py: finite losses, a
    checkpoint of the P2 network (its level-2 head batch norms included)
    that loads back whole, and COCO metrics from it."""
    from efficientdet_tf.config import get_config
    from efficientdet_tf.modeling import checkpoint as ckpt_lib
    from efficientdet_tf.modeling.model import build_model
    model_dir = tmp_path / "p2"
    code, out, err = run_main(
        capsys, "--mode=train", f"--model_dir={model_dir}",
        f"--training_file_pattern={records}", f"--hparams={HPARAMS},min_level=2",
        "--train_batch_size=2", "--num_examples_per_epoch=6", "--num_epochs=1",
        "--log_every_steps=1", "--eval_after_train",
        f"--validation_file_pattern={records}", "--eval_batch_size=2")
    assert code == 0, err
    losses = [float(line.split()[3]) for line in out.splitlines()
              if line.startswith("step ")]
    assert len(losses) == 3 and all(np.isfinite(losses)), out
    assert latest_step(model_dir) == 3
    assert "COCO box metrics: 4 images" in out and "AP50" in out
    # Every evaluation writes its report beside the metrics.
    assert "per-class table" in out
    for name in ("pr_curves.png", "f1_vs_threshold.png", "confusion_matrix.png",
                 "confusion_matrix.csv", "per_class.md", "per_class.csv"):
        assert (model_dir / "eval" / name).is_file(), name
    config = get_config("efficientdet-d0", str(model_dir / "config.yaml"))
    assert config.min_level == 2
    report = ckpt_lib.load_weights(build_model(config), model_dir)
    assert not report.missing and not report.unused and not report.other_levels
    assert "class_net/class-0-bn-2/moving_mean" in report.loaded
