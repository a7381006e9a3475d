"""The training loop on the demo shapes: loss goes down, EMA is what gets
evaluated, checkpoints rotate and resume exactly, freezing freezes,
divergence stops cleanly, fine-tuning across class counts loads all but the
class head, bad input patterns fail before anything is built.

Models are D0 at 128x128 with one BiFPN cell and one head repeat (same
layer types, a third of the graph to trace) and 3 classes.
"""
from __future__ import annotations

import io
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from efficientdet_tf.modeling import checkpoint as ckpt_lib
from efficientdet_tf.training import runner, trainer_state
from efficientdet_tf.config import get_config
from efficientdet_tf.datasets.coco import convert_coco
from efficientdet_tf.datasets.demo import make_demo_dataset
from efficientdet_tf.modeling.model import build_model
from efficientdet_tf.utils.progress import Progress
from efficientdet_tf.training.trainer import (Trainer, TrainingDivergedError,
                                   TrainingError, TrainOptions)

SMALL = {"image_size": 128, "num_classes": 3, "fpn_cell_repeats": 1,
         "box_class_repeats": 1}
# A fixed subset of 4 images without augmentation, batch 2, 10 examples an
# epoch (5 steps), 6 epochs = 30 steps. The rate is for automl's global
# batch of 64; scaled to batch 2 it is an actual 0.02.
TRAIN = {**SMALL, "learning_rate": 0.64, "lr_warmup_epoch": 0.4,
         "num_epochs": 6, "moving_average_decay": 0.9, "jitter_min": 1.0,
         "jitter_max": 1.0, "input_rand_hflip": False}
STEP_LINE = re.compile(r"^step (\d+)/\d+ loss ([\d.]+)")


@pytest.fixture(scope="module", autouse=True)
def quick_graph_optimisation():
    """Grappler's whole-graph passes take ~3x longer than the training steps
    these tests run; they change speed, not results."""
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})


def make_demo_records(root: pathlib.Path, num_train: int = 4,
                      num_shards: int = 1, image_size: int = 128) -> str:
    """The demo shapes as TFRecord shards; returns their pattern."""
    make_demo_dataset(str(root), num_train=num_train, num_val=0, seed=0,
                      image_size=image_size)
    convert_coco(str(root / "train" / "images"),
                 str(root / "train" / "annotations.json"),
                 str(root / "records" / "train"), num_shards=num_shards,
                 num_threads=1)
    return str(root / "records" / "train-*.tfrecord")


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> str:
    return make_demo_records(tmp_path_factory.mktemp("shapes"))


def options(model_dir: pathlib.Path, pattern: str, **overrides) -> TrainOptions:
    values = dict(model_dir=str(model_dir), training_file_pattern=pattern,
                  train_batch_size=2, num_examples_per_epoch=10,
                  save_checkpoints_steps=100, keep_checkpoint_max=2,
                  deterministic=True, log_every_steps=1)
    values.update(overrides)
    return TrainOptions(**values)


def snapshot(trainer: Trainer) -> dict[str, np.ndarray]:
    """Every number a resumed run must reproduce, by name."""
    values = {f"model/{n}": v.numpy() for n, v in
              ckpt_lib.official_variable_map(trainer.model).items()}
    values.update({f"ema/{n}": v.numpy() for n, v in trainer.ema.shadows.items()})
    values.update({f"optimizer/{n}": v.numpy() for n, v in
                   trainer_state.optimizer_variables(trainer.optimizer).items()})
    return values


@pytest.fixture(scope="module")
def trained(records, tmp_path_factory):
    """30 deterministic steps; returns the trainer, its log and a snapshot
    of the final state."""
    stream = io.StringIO()
    trainer = Trainer(get_config("efficientdet-d0", TRAIN),
                      options(tmp_path_factory.mktemp("run"), records),
                      stream=stream)
    assert trainer.train() == 30
    return trainer, stream.getvalue(), snapshot(trainer)


def test_loss_decreases(trained):
    _, log, _ = trained
    losses = [float(m.group(2)) for m in map(STEP_LINE.match, log.splitlines()) if m]
    assert len(losses) == 30, log
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 0.2, losses


def test_the_dataset_doctors_verdict_comes_before_step_1(trained):
    """A dataset its anchors cannot learn shows before hours of training."""
    _, log, _ = trained
    lines = log.splitlines()
    verdicts = [i for i, line in enumerate(lines)
                if line.startswith("dataset doctor (4 training images): ")]
    first_step = next(i for i, line in enumerate(lines) if STEP_LINE.match(line))
    assert len(verdicts) == 1 and verdicts[0] < first_step, log
    assert "match an anchor" in lines[verdicts[0]] or "match no anchor" in lines[
        verdicts[0]], lines[verdicts[0]]


def test_checkpoints_rotate_and_record_the_run(trained):
    trainer, log, _ = trained
    model_dir = pathlib.Path(trainer.options.model_dir)
    # Saved at every epoch end (5, 10, ..., 30); the newest two are kept.
    assert log.count("saved ") == 6
    assert sorted(p.name for p in model_dir.glob("ckpt-*.index")) == [
        "ckpt-5.index", "ckpt-6.index"]
    state = tf.train.get_checkpoint_state(str(model_dir))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-5", "ckpt-6"]
    latest = trainer_state.latest_checkpoint(str(model_dir))
    assert trainer_state.checkpoint_steps(latest) == (30, 30)
    assert trainer_state.checkpoint_steps(str(model_dir / "ckpt-5")) == (25, 30)
    assert "num_classes: 3" in (model_dir / "config.yaml").read_text()
    events = list((model_dir / "train").glob("events.out.tfevents.*"))
    tags = {value.tag for event in tf.compat.v1.train.summary_iterator(str(events[0]))
            for value in event.summary.value}
    assert {"loss/loss", "loss/cls_loss", "loss/box_loss", "learning_rate",
            "images_per_second"} <= tags


def test_save_native_keeps_the_newest_and_clears_leftovers(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")])
    for leftover in ("ckpt-0.index", "ckpt-0.data-00000-of-00001"):  # a killed run's
        (tmp_path / leftover).write_bytes(b"")
    for _ in range(4):
        ckpt_lib.save_native(model, tmp_path, max_to_keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index",
        "ckpt-4.data-00000-of-00001", "ckpt-4.index"]
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-3", "ckpt-4"]


def test_optimizer_state_names_are_stable_across_instances():
    """Keras numbers optimizer names per process (sgd, sgd_1, ...): the
    checkpoint keys must not depend on that, also under mixed precision."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")],
                             name="net")
    names = []
    for _ in range(2):
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.1, momentum=0.9))
        optimizer.build(model.trainable_variables)
        names.append(sorted(trainer_state.optimizer_variables(optimizer)))
    assert names[0] == names[1]
    assert {"iteration", "net_d_kernel_momentum", "net_d_bias_momentum",
            "loss_scale/dynamic_scale", "loss_scale/iteration"} <= set(names[0])


def test_ema_differs_and_is_what_gets_evaluated(trained, monkeypatch):
    trainer, _, final = trained
    variables = trainer.ema.variables
    assert any(not np.array_equal(final[f"model/{n}"], final[f"ema/{n}"])
               for n in variables)
    # Shadows cover batch-norm statistics too, as official checkpoints do.
    assert any(n.endswith("moving_variance") for n in trainer.ema.shadows)

    seen = {}

    def fake_evaluate(detector, file_pattern, **kwargs):
        seen.update({n: v.numpy() for n, v in variables.items()})
        seen["step"] = kwargs["step"]
        return {"AP": 0.25, "AP50": 0.5}
    monkeypatch.setitem(sys.modules, "efficientdet_tf.evaluation.evaluate",
                        types.SimpleNamespace(evaluate=fake_evaluate))
    model_dir = trainer.options.model_dir
    evaluator = runner.Evaluator(model_dir, runner.EvalOptions("unused"), io.StringIO())
    runner._evaluate_trainer(trainer, evaluator)
    assert seen.pop("step") == 30
    for name, value in seen.items():
        np.testing.assert_array_equal(value, final[f"ema/{name}"], err_msg=name)
        np.testing.assert_array_equal(variables[name].numpy(),
                                      final[f"model/{name}"], err_msg=name)

    # archive/ keeps the weights that were evaluated, for export to load.
    best = pathlib.Path(model_dir) / trainer_state.BEST_DIR
    assert '"AP": 0.25' in (best / "best_eval.json").read_text()
    assert not evaluator.best.offer(31, {"AP": 0.2}, trainer.model)
    try:
        ckpt_lib.load_weights(trainer.model, best)
        for name, variable in variables.items():
            np.testing.assert_array_equal(variable.numpy(), final[f"ema/{name}"])
    finally:
        ckpt_lib.load_weights(trainer.model, model_dir, use_ema=False)
    # The training checkpoint carries raw weights and EMA; loading prefers EMA.
    fresh = build_model(trainer.config)
    assert ckpt_lib.load_weights(fresh, model_dir).used_ema
    for name, variable in ckpt_lib.official_variable_map(fresh).items():
        expected = final.get(f"ema/{name}", final[f"model/{name}"])
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=name)


def test_resume_equals_uninterrupted_training(trained, tmp_path):
    """A run restarted from the step-25 checkpoint (weights, EMA, optimizer
    slots, input position) ends bit-identical to the uninterrupted one."""
    first, _, final = trained
    source = pathlib.Path(first.options.model_dir)
    for path in [*source.glob("ckpt-5.*"), source / "config.yaml"]:
        shutil.copy(path, tmp_path)
    stream = io.StringIO()
    resumed = Trainer(get_config("efficientdet-d0", TRAIN),
                      options(tmp_path, first.options.training_file_pattern),
                      stream=stream)
    assert resumed.step == 25 and "resuming from" in stream.getvalue()
    assert "starts fresh" not in stream.getvalue()
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt-5"))
    slots = trainer_state.optimizer_variables(resumed.optimizer)
    assert sum(name.endswith("_momentum") for name in slots) > 10, sorted(slots)[:5]
    for name, variable in slots.items():
        key = f"optimizer/{name}/.ATTRIBUTES/VARIABLE_VALUE"
        np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(key))
    assert int(resumed.optimizer.iterations.numpy()) == 25
    assert resumed.train() == 30
    again = snapshot(resumed)
    assert again.keys() == final.keys()
    for name, value in final.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)


@pytest.fixture(scope="module")
def huge_rate_run(records, tmp_path_factory):
    """Backbone and BiFPN frozen, an absurd learning rate after one warm-up
    step, a checkpoint every step: the freezing test and the divergence test
    share it (frozen variables stay bit-identical even while the rest
    diverges). Returns the trainer and the weights before training."""
    config = get_config("efficientdet-d0", {
        **SMALL, "learning_rate": 1e9, "lr_warmup_epoch": 0.2,
        "var_freeze_expr": "(efficientnet|fpn_cells)"})
    model_dir = tmp_path_factory.mktemp("huge")
    trainer = Trainer(config, options(model_dir, records, save_checkpoints_steps=1,
                                      keep_checkpoint_max=100),
                      stream=io.StringIO())
    before = {n: v.numpy() for n, v in
              ckpt_lib.official_variable_map(trainer.model).items()}
    trainer.train(until_step=2)
    return trainer, before


def test_var_freeze_expr_keeps_frozen_variables_bit_identical(huge_rate_run):
    trainer, before = huge_rate_run
    after = ckpt_lib.official_variable_map(trainer.model)
    frozen = [n for n in after if re.search("(efficientnet|fpn_cells)", n)]
    assert any(n.endswith("moving_mean") for n in frozen)
    for name in frozen:
        np.testing.assert_array_equal(after[name].numpy(), before[name], err_msg=name)
    changed = [n for n in after if n not in frozen
               and not np.array_equal(after[n].numpy(), before[n])]
    assert any(n.startswith("class_net/") for n in changed)
    assert any(n.startswith("box_net/") and "moving_mean" in n for n in changed)
    assert not set(frozen) & set(trainer.ema.shadows)


def test_nan_loss_stops_with_diagnosis_and_keeps_last_good_checkpoint(
        huge_rate_run):
    trainer, _ = huge_rate_run
    model_dir = pathlib.Path(trainer.options.model_dir)
    with pytest.raises(TrainingDivergedError) as failure:
        trainer.train(until_step=20)
    message = str(failure.value)
    step = int(re.search(r"diverged at step (\d+)", message).group(1))
    saved = sorted(model_dir.glob("ckpt-*.index"))
    assert len(saved) == step - 1, message
    # At this rate the weights overflow while the loss that led there was
    # still finite: the check before saving stops the run.
    assert "the weights are no longer finite" in message, message
    assert "loss=" in message and "\n" not in message
    assert "learning_rate" in message and "inspect_tfrecord.py" in message
    latest = trainer_state.latest_checkpoint(str(model_dir))
    assert f"last good checkpoint is {latest}" in message
    fresh = build_model(trainer.config)
    ckpt_lib.load_weights(fresh, latest, use_ema=False)
    assert all(np.isfinite(v.numpy()).all() for v in fresh.weights)

    # A non-finite loss is caught before anything else, naming its term.
    bias = ckpt_lib.official_variable_map(trainer.model)["class_net/class-predict/bias"]
    bias.assign(np.full(bias.shape, np.nan, np.float32))
    with pytest.raises(TrainingDivergedError,
                       match=rf"step {step + 1}: the loss is not finite in cls_loss "):
        trainer.train(until_step=20)
    assert sorted(model_dir.glob("ckpt-*.index")) == saved


def test_mixed_precision_fine_tuning_of_the_heads_from_an_official_checkpoint(
        fixtures_dir, tmp_path):
    """hparams/wrs.yaml (mixed precision, backbone and BiFPN frozen) from an
    official checkpoint at D0's own 512 px: the frozen batch norms run on
    the checkpoint's moving statistics, so block 0's 256x256 maps carry
    channel means above 1, whose float16 spatial sum (65,536 terms) used to
    overflow in the squeeze-and-excitation and turn the loss into NaN a few
    steps in. Smaller images keep those sums in range, hence the full size;
    the default augmentation supplies the batch that overflowed."""
    config = get_config("efficientdet-d0", str(REPO_ROOT / "hparams" / "wrs.yaml")
                        ).override({"num_epochs": 1, "learning_rate": 0.64,
                                    "lr_warmup_epoch": 0.1})
    assert config.mixed_precision and tuple(config.image_size) == (512, 512)
    pattern = make_demo_records(tmp_path / "shapes", image_size=512)
    stream = io.StringIO()
    trainer = Trainer(config, options(
        tmp_path / "run", pattern, num_examples_per_epoch=40,
        ckpt=str(fixtures_dir / "automl_d0_256x256" / "ckpt")), stream=stream)
    assert trainer.train() == 20, stream.getvalue()
    log = stream.getvalue()
    losses = [float(m.group(2)) for m in map(STEP_LINE.match, log.splitlines()) if m]
    assert len(losses) == 20 and all(map(math.isfinite, losses)), log
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


def test_bfloat16_training_needs_no_loss_scaling_and_learns(records, tmp_path):
    """mixed_precision=bfloat16: the network computes in bfloat16, the
    optimizer is the plain one (bfloat16 has float32's exponent range, so a
    loss scale would only cost a step's all-finite check) and the loss of
    the fixed subset falls."""
    stream = io.StringIO()
    trainer = Trainer(get_config("efficientdet-d0",
                                 {**TRAIN, "mixed_precision": "bfloat16",
                                  "num_epochs": 4}),
                      options(tmp_path / "run", records), stream=stream)
    assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.model.get_layer("efficientnet-b0").blocks[0].depthwise \
        .compute_dtype == "bfloat16"
    assert trainer.train() == 20, stream.getvalue()
    losses = [float(m.group(2)) for m in map(STEP_LINE.match,
                                             stream.getvalue().splitlines()) if m]
    assert len(losses) == 20 and all(map(math.isfinite, losses)), losses
    assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5]), losses


def test_class_count_change_loads_all_but_the_class_head(records, tmp_path):
    source = build_model(get_config("efficientdet-d0", {**SMALL, "num_classes": 90}))
    prefix = ckpt_lib.save_native(source, tmp_path / "coco")
    stream = io.StringIO()
    trainer = Trainer(get_config("efficientdet-d0", SMALL),
                      options(tmp_path / "run", records, ckpt=prefix), stream=stream)
    text = stream.getvalue()
    head = ["class_net/class-predict/bias",
            "class_net/class-predict/pointwise_kernel"]
    assert "skipped 2" in text and all(name in text for name in head), text
    ours = ckpt_lib.official_variable_map(trainer.model)
    theirs = ckpt_lib.official_variable_map(source)
    for name, variable in ours.items():
        if name not in head:
            np.testing.assert_array_equal(variable.numpy(), theirs[name].numpy())
    name = "box_net/box-predict/bias"
    np.testing.assert_array_equal(trainer.ema.shadows[name].numpy(),
                                  theirs[name].numpy())


def test_official_checkpoint_warm_starts_a_p2_model(fixtures_dir, records,
                                                   tmp_path):
    """--ckpt of an official (levels 3..7) checkpoint for a min_level 2
    model: no error; the start-up message names what keeps its initial
    values because the pyramids differ (the BiFPN, the level-2 head batch
    norms), beside the class layer a new class count skips."""
    stream = io.StringIO()
    Trainer(get_config("efficientdet-d0", {**SMALL, "min_level": 2}),
            options(tmp_path / "run", records,
                    ckpt=str(fixtures_dir / "automl_d0_256x256" / "ckpt")),
            stream=stream)
    text = stream.getvalue()
    assert "initialised from" in text and "skipped 2" in text, text
    assert ("the checkpoint's pyramid has levels 3..7, the model's 2..7, so "
            in text), text
    assert ("keep their initial values: fpn_cells, box_net/box-0-bn-2, "
            "class_net/class-0-bn-2") in text, text


def test_bad_training_patterns_fail_before_building(tmp_path, monkeypatch):
    def no_model(config):
        raise AssertionError("the model was built before the input was checked")
    monkeypatch.setattr("efficientdet_tf.training.trainer.build_model", no_model)
    config = get_config("efficientdet-d0", SMALL)
    (tmp_path / "empty-0.tfrecord").write_bytes(b"")
    (tmp_path / "broken-0.tfrecord").write_bytes(b"this is not a record file")
    cases = {str(tmp_path / "missing-*.tfrecord"): "no TFRecord files match",
             str(tmp_path / "empty-*.tfrecord"): "hold no records",
             str(tmp_path / "broken-*.tfrecord"): "broken-0.tfrecord: record index 0"}
    for pattern, expected in cases.items():
        for count in (None, 10):
            with pytest.raises(TrainingError, match=expected):
                Trainer(config, options(tmp_path / "run", pattern,
                                        num_examples_per_epoch=count))
    assert not (tmp_path / "run").exists()


def test_model_dir_of_another_network_is_refused(tmp_path):
    config = get_config("efficientdet-d0", SMALL)
    trainer_state.prepare_model_dir(str(tmp_path), config)
    trainer_state.prepare_model_dir(str(tmp_path), config.override(
        {"learning_rate": 0.5}))  # schedule changes are fine
    assert "learning_rate: 0.5" in (tmp_path / "config.yaml").read_text()
    with pytest.raises(trainer_state.ModelDirError,
                       match=r"num_classes: 3 -> 4.*--hparams=.*config.yaml"):
        trainer_state.prepare_model_dir(str(tmp_path), config.override(
            {"num_classes": 4}))


def test_progress_plain_lines_without_a_terminal_and_a_bar_with_one():
    plain = io.StringIO()
    progress = Progress(0, 25, batch_size=4, every=10, stream=plain)
    for step in range(1, 26):
        progress.update(step, {"loss": 1.0 / step}, 0.01)
    lines = plain.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["10/25", "20/25", "25/25"]
    assert "img/s" in lines[-1] and "lr 0.01" in lines[-1] and "\r" not in plain.getvalue()
    bar = io.StringIO()
    progress = Progress(0, 4, batch_size=4, stream=bar, interactive=True)
    for step in range(1, 5):
        progress.update(step, {"loss": 0.5}, 0.01)
    progress.close()
    assert bar.getvalue().count("\r") == 4 and "[" in bar.getvalue()


MIRRORED_CHECK = """
import io, sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
tf.config.optimizer.set_experimental_options({{"disable_meta_optimizer": True}})
from efficientdet_tf.config import get_config
from efficientdet_tf.modeling.checkpoint import official_variable_map
from efficientdet_tf.training.trainer import Trainer, TrainOptions
config = get_config("efficientdet-d0", {train!r})
runs = []
for name, strategy in [("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                       ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
    options = TrainOptions(model_dir=sys.argv[1] + name, training_file_pattern={pattern!r},
                           train_batch_size=2, num_examples_per_epoch=10,
                           deterministic=True)
    trainer = Trainer(config, options, strategy, stream=io.StringIO())
    start = {{n: v.numpy() for n, v in official_variable_map(trainer.model).items()}}
    trainer.train(until_step=2)
    values = {{n: v.numpy() for n, v in official_variable_map(trainer.model).items()}}
    changes = {{n: np.abs(values[n] - start[n]).max() / (np.abs(start[n]).max() + 1e-3)
               for n in start}}
    print(name, "largest relative change", max(changes.values()), max(changes, key=changes.get))
    values.update({{"ema:" + n: v.numpy() for n, v in trainer.ema.shadows.items()}})
    runs.append(values)
one, two = runs
gap = {{n: np.abs(one[n] - two[n]).max() / (np.abs(one[n]).max() + 1e-3) for n in one}}
print("worst relative difference", max(gap.values()), max(gap, key=gap.get))
"""


def test_two_replicas_train_like_one_device_with_the_global_batch(records, tmp_path):
    """Two steps with batch 2 on one device and 1+1 on two mirrored CPU
    replicas give the same weights and EMA: loss normaliser, L2 share,
    gradient sum and clipping (active at 0.01; clipping per replica fails
    this) combine right, and the weights did move. Batch norms are frozen
    (they run on their moving statistics; the synchronized batch norm is
    compared with one device in the next test), and the backbone to keep
    the graph small. A fresh process: logical devices must be set before
    TensorFlow starts."""
    train = {**TRAIN, "moving_average_decay": 0.5, "clip_gradients_norm": 0.01,
             "var_freeze_expr": "(efficientnet|.*batch_normalization|.*bn)"}
    script = MIRRORED_CHECK.format(train=train, pattern=records)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run-")],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    worst = float(done.stdout.split("worst relative difference")[1].split()[0])
    assert worst < 1e-4 and math.isfinite(worst), done.stdout
    # Not two untrained copies of one initialisation: both runs trained.
    for name in ("one", "two"):
        moved = float(done.stdout.split(f"{name} largest relative change")[1].split()[0])
        assert moved > 100 * worst, done.stdout


SYNC_BN_CHECK = """
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from efficientdet_tf.modeling.layers import FusedBatchNormalization, batch_norm
from efficientdet_tf.training.trainer import synchronize_batch_norms
images = np.load(sys.argv[1])
results = {}
for name, strategy in [("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                       ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
    with strategy.scope():
        model = keras.Sequential([keras.Input(images.shape[1:]), batch_norm("bn", 0.5, 1e-3)])
        synchronize_batch_norms(model)
        (layer,) = model.layers
        assert type(layer) is FusedBatchNormalization and layer.synchronized
        layer.gamma.assign([0.5, 2.0, 1.5])
        layer.beta.assign([0.1, -0.3, 0.7])
    step = tf.function(lambda batch: strategy.run(lambda x: model(x, training=True),
                                                  args=(batch,)))
    batches = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(images).batch(2))
    for k, batch in enumerate(batches):
        results[f"{name}/outputs/{k}"] = strategy.gather(step(batch), axis=0).numpy()
        results[f"{name}/moving_mean/{k}"] = layer.moving_mean.numpy()
        results[f"{name}/moving_variance/{k}"] = layer.moving_variance.numpy()
    results[f"{name}/replicas"] = strategy.num_replicas_in_sync
np.savez(sys.argv[2], **results)
"""


def test_synchronized_batch_norm_on_two_replicas_matches_one_device(tmp_path):
    """The library's synchronized batch norm (``batch_norm`` made
    synchronized by ``synchronize_batch_norms``, as the trainer does) over
    two mirrored CPU replicas of batch 1 normalises and keeps moving
    statistics exactly as one device with the batch of 2, for two steps.
    The two images of a step have means 4 apart (-2 and 2, then -1 and 3),
    so statistics per replica (variance ~1 against ~5) would show; the moving variance
    averages the unbiased variance with n = 2 * 4 * 4 = 32, the global
    count (n = 16 per replica would be 3 % off). Checked against NumPy too.
    A fresh process: logical devices must be set before TensorFlow starts."""
    rng = np.random.default_rng(0)
    images = rng.normal(0.0, 1.0, (4, 4, 4, 3)).astype(np.float32)
    images += np.float32([-2.0, 2.0, -1.0, 3.0])[:, None, None, None]
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run(
        [sys.executable, "-c", SYNC_BN_CHECK, str(tmp_path / "images.npy"),
         str(tmp_path / "results.npz")],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    results = dict(np.load(tmp_path / "results.npz"))
    assert (results["one/replicas"], results["two/replicas"]) == (1, 2)

    gamma, beta = np.float32([0.5, 2.0, 1.5]), np.float32([0.1, -0.3, 0.7])
    epsilon = 1e-3
    moving_mean, moving_variance = np.zeros(3), np.ones(3)
    for k in range(2):
        batch = images[2 * k:2 * k + 2].astype(np.float64)
        mean, variance = batch.mean(axis=(0, 1, 2)), batch.var(axis=(0, 1, 2))
        per_replica = batch.var(axis=(1, 2)).mean(axis=0)
        assert np.all(variance > 2 * per_replica)  # the data tells them apart
        moving_mean = 0.5 * moving_mean + 0.5 * mean
        moving_variance = 0.5 * moving_variance + 0.5 * variance * 32 / 31
        outputs = gamma * (batch - mean) / np.sqrt(variance + epsilon) + beta
        for name in ("one", "two"):
            np.testing.assert_allclose(results[f"{name}/outputs/{k}"], outputs,
                                       rtol=1e-5, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(results[f"{name}/moving_mean/{k}"],
                                       moving_mean, rtol=1e-5, atol=1e-6,
                                       err_msg=name)
            np.testing.assert_allclose(results[f"{name}/moving_variance/{k}"],
                                       moving_variance, rtol=1e-5, err_msg=name)
        for key in ("outputs", "moving_mean", "moving_variance"):
            np.testing.assert_allclose(results[f"two/{key}/{k}"],
                                       results[f"one/{key}/{k}"], rtol=1e-5,
                                       atol=1e-6, err_msg=key)
