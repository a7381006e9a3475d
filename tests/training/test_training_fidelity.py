"""Training against the official automl numbers (fixtures
``automl_d0_train_step/`` and ``automl_d0_trajectory/``, README there).

Three levels, each isolating the one before it:

* the anchor labeler on the official ground truth gives the official
  targets;
* one training step from the raw (non-EMA) D0 weights gives the official
  loss terms and gradients of all 493 trainable variables;
* the Trainer's own compiled step, run ten times on the official batch from
  the EMA weights (as ``--ckpt`` loads them), gives the official losses,
  learning rates, gradient norms and weight updates, batch-norm moving
  statistics included.

Steps two and three feed the official targets, so a labeler bug shows in
the first test only. Ten steps on one fixed batch amplify the ~0.2 %
difference between our backward kernels and automl's: the trajectory is
compared tightly until that difference feeds back, and at the level of the
run's own sensitivity after (tolerances below). One D0 (inside one Trainer)
serves the whole module.
"""
from __future__ import annotations

import io
import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.ops.anchors import IGNORED, label_anchors
from efficientdet_tf.modeling.checkpoint import load_weights, official_variable_map
from efficientdet_tf.config import Config, get_config
from efficientdet_tf.data.pipeline import targets_from_labels
from efficientdet_tf.data.tfrecord import Example, encode_example
from efficientdet_tf.ops.losses import detection_loss
from efficientdet_tf.training.optim import l2_regularization
from efficientdet_tf.training.trainer import Trainer, TrainOptions

LEVELS = range(3, 8)
D0 = {"image_size": 256, "num_classes": 90}
LOSS_KEYS = ("weight_decay", "alpha", "gamma", "delta", "box_loss_weight",
             "label_smoothing", "iou_loss_type")
TRAJECTORY_KEYS = ("learning_rate", "lr_warmup_epoch", "lr_decay_method",
                   "momentum", "optimizer", "clip_gradients_norm",
                   "weight_decay", "moving_average_decay", "mixed_precision")
BATCH = 2

# One step, run eagerly as the fixture was made: the same kernels in the same
# order as automl (TF's fused batch norm forward and backward, the BiFPN
# fusion as input * weight / total), so the gradients agree to float
# rounding (measured: cosine 1 - 2e-12, median variable 1e-6, worst 1e-4).
# Far tighter than the README's tolerances (norm 1e-4, cosine 0.9999,
# variables 5e-2), which Keras 3's composed batch norm and another fusion
# order only just met (median 0.2 %, fusion weights up to 1.8 %).
LOSS_RTOL = 1e-5
GRAD_NORM_RTOL = 1e-6
MIN_COSINE = 1 - 1e-9
VARIABLE_RTOL = 1e-3
TINY_GRADIENT = 1e-5  # official norm below this: compared absolutely
# Ten steps. This run is chaotic, and the fixture's own trajectory is not
# reproduced on this machine by the official code itself: automl's
# train_step, run here ten times from the same weights on the same batch
# (TF 2.21, tf-keras), drifts from the fixture as ours does, losses from 5e-5
# at step 4 to 1e-3, updates at cosine 0.9956, median relative error 8.7 %
# (the fixture README's 0.99998 and 0.7 % are run to run on its machine).
# Ours, compiled as the Trainer runs it: cosine 0.995, median 9 %, losses
# within 8e-4, box loss 6.5e-3, gradient norms 11 % (before the fused batch
# norm and automl's fusion order: cosine 0.987, median 14 %). So the first
# steps are compared tightly and the whole run at the official code's own
# level here.
EXACT_STEPS = 2  # every loss term: before any gradient difference fed back
EXACT_TOTAL_STEPS = 3  # the total loss: still ~1e-6 after one fed back
EXACT_RTOL = 1e-5
LEARNING_RATE_RTOL = 1e-6  # of the peak rate
TRAJECTORY_LOSS_RTOL = 1.5e-3  # ~10x below the loss's per-step drop (2 %)
TRAJECTORY_BOX_RTOL = 2e-2
TRAJECTORY_GRAD_NORM_RTOL = 0.2
UPDATE_MIN_COSINE = 0.99
UPDATE_MEDIAN_RTOL = 0.12
BN_MOMENTUM = 0.99  # automl's batch_norm_momentum
MOVING_VARIANCE_RTOL = 0.02


def relative(ours: float, official: float) -> float:
    return abs(ours - official) / abs(official)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(a).astype(np.float64) for a in arrays])


@pytest.fixture(scope="module")
def step_dir(fixtures_dir: pathlib.Path) -> pathlib.Path:
    return fixtures_dir / "automl_d0_train_step"


@pytest.fixture(scope="module")
def trajectory_dir(fixtures_dir: pathlib.Path) -> pathlib.Path:
    return fixtures_dir / "automl_d0_trajectory"


@pytest.fixture(scope="module")
def ckpt(fixtures_dir: pathlib.Path) -> str:
    return str(fixtures_dir / "automl_d0_256x256" / "ckpt")


@pytest.fixture(scope="module")
def step_meta(step_dir: pathlib.Path) -> dict:
    return json.loads((step_dir / "meta.json").read_text())


@pytest.fixture(scope="module")
def trajectory_meta(trajectory_dir: pathlib.Path) -> dict:
    return json.loads((trajectory_dir / "meta.json").read_text())


@pytest.fixture(scope="module")
def config(step_meta: dict, trajectory_meta: dict) -> Config:
    """D0 with the official loss settings and the trajectory's schedule;
    one epoch of ``total_steps`` batches makes the cosine span the run."""
    settings = trajectory_meta["settings"]
    assert settings["image_size"] == D0["image_size"]
    assert settings["num_classes"] == D0["num_classes"]
    assert settings["weight_decay"] == step_meta["weight_decay"]
    return get_config("efficientdet-d0", {
        **D0, **{k: step_meta[k] for k in LOSS_KEYS},
        **{k: settings[k] for k in TRAJECTORY_KEYS}, "num_epochs": 1})


@pytest.fixture(scope="module")
def official_targets(step_dir: pathlib.Path) -> dict[str, np.ndarray]:
    return dict(np.load(step_dir / "targets.npz"))


@pytest.fixture(scope="module")
def images(step_dir: pathlib.Path) -> np.ndarray:
    return np.load(step_dir / "images.npy")


def write_placeholder_records(path: pathlib.Path) -> str:
    """One valid record: the Trainer checks and opens its training files,
    though these tests hand its step the official batch instead."""
    pixels = tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()
    example = Example(encoded=pixels, height=8, width=8,
                      filename="placeholder.png", source_id="0",
                      image_format="png")
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(encode_example(example))
    return str(path)


@pytest.fixture(scope="module")
def trainer(config: Config, trajectory_meta: dict, ckpt: str,
            tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    root = tmp_path_factory.mktemp("fidelity")
    steps = trajectory_meta["steps"]
    options = TrainOptions(
        model_dir=str(root / "run"),
        training_file_pattern=write_placeholder_records(root / "x.tfrecord"),
        train_batch_size=BATCH, num_examples_per_epoch=BATCH * steps,
        ckpt=ckpt, log_every_steps=1)
    trainer = Trainer(config, options, stream=io.StringIO())
    assert trainer.total_steps == steps
    assert trainer.spec.warmup_steps == 0
    assert trainer.spec.base_lr == pytest.approx(
        trajectory_meta["settings"]["adjusted_learning_rate"], rel=1e-7)
    return trainer


def official_batch_labels(targets: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    """The official targets under the label keys the training step reads."""
    keys = [f"{kind}_targets_{level}" for level in LEVELS
            for kind in ("cls", "box")] + ["num_positives"]
    return {key: tf.constant(targets[key]) for key in keys}


def trainable_by_name(model: keras.Model, trainable: list) -> dict[str, keras.Variable]:
    kept = {id(v) for v in trainable}
    return {name: v for name, v in official_variable_map(model).items()
            if id(v) in kept}


# --- anchor targets ----------------------------------------------------------

def test_labeler_reproduces_official_targets(step_dir, official_targets, config):
    """automl's thresholds are 0.5/0.5 (no ignore band) and the ground truth
    has no crowd boxes, so no anchor of ours may be IGNORED: the official
    targets only know -1 (background) and class id - 1."""
    groundtruth = np.load(step_dir / "groundtruth.npz")
    per_image = [label_anchors(groundtruth[f"boxes_{i}"],
                               groundtruth[f"classes_{i}"], config)
                 for i in range(BATCH)]
    labels = {"num_positives": tf.stack([t.num_positives for t in per_image])}
    for index, level in enumerate(LEVELS):
        labels[f"cls_targets_{level}"] = tf.stack(
            [t.cls_targets[index] for t in per_image])
        labels[f"box_targets_{level}"] = tf.stack(
            [t.box_targets[index] for t in per_image])
    ours = targets_from_labels(labels, config)

    np.testing.assert_array_equal(ours.num_positives,
                                  official_targets["num_positives"])
    np.testing.assert_array_equal(official_targets["num_positives"], [79, 78])
    for index, level in enumerate(LEVELS):
        cls_ours = ours.cls_targets[index].numpy()
        assert not np.any(cls_ours == IGNORED), f"level {level}"
        np.testing.assert_array_equal(
            cls_ours, official_targets[f"cls_targets_{level}"],
            err_msg=f"class targets, level {level}")
        np.testing.assert_allclose(
            ours.box_targets[index], official_targets[f"box_targets_{level}"],
            rtol=0, atol=1e-5, err_msg=f"box targets, level {level}")


# --- one step: loss terms and gradients --------------------------------------

@pytest.fixture(scope="module")
def one_step(trainer, ckpt, images, official_targets) -> dict:
    """Loss terms and gradients of the raw weights, put together as the
    Trainer's replica step does (with one replica its share is exactly 1)."""
    config, model = trainer.config, trainer.model
    load_weights(model, ckpt, use_ema=False)
    targets = targets_from_labels(official_batch_labels(official_targets), config)
    named = trainable_by_name(model, trainer.trainable)
    with tf.GradientTape() as tape:
        class_outputs, box_outputs = model(images, training=True)
        terms = detection_loss(class_outputs, box_outputs, targets, config)
        decay = l2_regularization(trainer.trainable, config.weight_decay)
        total = terms["total"] + decay
    grads = tape.gradient(total, list(named.values()))
    return {"terms": {"cls_loss": float(terms["cls_loss"]),
                      "box_loss": float(terms["box_loss"]),
                      "det_loss": float(terms["total"]),
                      "reg_l2_loss": float(decay),
                      "total_loss": float(total)},
            "gradients": {name: g.numpy() for name, g in zip(named, grads)}}


def test_one_step_loss_terms(one_step, step_meta):
    official = step_meta["loss_terms"]
    errors = {name: relative(value, official[name])
              for name, value in one_step["terms"].items()}
    assert max(errors.values()) <= LOSS_RTOL, (one_step["terms"], errors)


def test_one_step_gradients(one_step, step_dir, step_meta):
    official = dict(np.load(step_dir / "gradients.npz"))
    ours = one_step["gradients"]
    assert sorted(ours) == sorted(official)
    assert len(ours) == step_meta["loss_terms"]["num_trainable_variables"]
    names = sorted(official)
    ours_flat = flat([ours[n] for n in names])
    official_flat = flat([official[n] for n in names])
    norm = float(np.linalg.norm(ours_flat))
    assert relative(norm, step_meta["loss_terms"]["gradient_global_norm"]) \
        <= GRAD_NORM_RTOL, norm
    assert cosine(ours_flat, official_flat) >= MIN_COSINE

    far, tiny_far = {}, {}
    for name in names:
        reference = official[name].astype(np.float64)
        difference = ours[name].astype(np.float64) - reference
        if np.linalg.norm(reference) >= TINY_GRADIENT:
            error = np.linalg.norm(difference) / np.linalg.norm(reference)
            if error > VARIABLE_RTOL:
                far[name] = error
        elif np.abs(difference).max() > TINY_GRADIENT:
            # Conv biases feeding a batch norm (and betas feeding one through
            # a 1x1 conv): zero in exact arithmetic, float noise in both.
            tiny_far[name] = np.abs(difference).max()
    assert not far, f"relative error > {VARIABLE_RTOL}: {far}"
    assert not tiny_far, f"absolute error > {TINY_GRADIENT}: {tiny_far}"


# --- ten steps of the Trainer -------------------------------------------------

@pytest.fixture(scope="module")
def trajectory(trainer, ckpt, images, official_targets, trajectory_meta) -> dict:
    """Runs the Trainer's compiled step on the official batch, from the EMA
    weights (as the Trainer loaded them; reloaded here because the one-step
    fixture may have replaced them).

    Per step it records what the step returns, and the clipped gradient
    recovered from the weight updates: Keras' SGD does
    ``m = momentum * m - lr * g; w += m``, so ``g = (momentum * d_prev - d) / lr``
    with ``d`` the step's change of the weights.
    """
    model, steps = trainer.model, trajectory_meta["steps"]
    momentum = trajectory_meta["settings"]["momentum"]
    load_weights(model, ckpt, use_ema=True)
    assert trainer.step == 0 and int(trainer.optimizer.iterations) == 0
    batch = tf.data.Dataset.from_tensors(
        (tf.constant(images), official_batch_labels(official_targets))).repeat()
    trainer.iterator = iter(trainer.strategy.distribute_datasets_from_function(
        lambda _: batch))
    every = official_variable_map(model)
    trainable = list(trainable_by_name(model, trainer.trainable).values())
    before = {name: v.numpy() for name, v in every.items()}
    weights = flat([v.numpy() for v in trainable])
    previous_update = np.zeros_like(weights)
    records = []
    for _ in range(steps):
        values = {k: float(v) for k, v in trainer._step_fn(trainer.iterator).items()}
        now = flat([v.numpy() for v in trainable])
        update = now - weights
        gradient = (momentum * previous_update - update) / values["learning_rate"]
        values["gradient_norm"] = float(np.linalg.norm(gradient))
        values["reg_l2_loss"] = values.pop("weight_decay")
        records.append(values)
        weights, previous_update = now, update
    after = {name: v.numpy() for name, v in every.items()}
    return {"steps": records, "before": before, "after": after}


def worst_errors(trajectory: dict, trajectory_meta: dict, names: tuple[str, ...],
                 steps: slice) -> dict[str, float]:
    """Largest relative error of each named quantity over ``steps``."""
    pairs = list(zip(trajectory["steps"], trajectory_meta["per_step"],
                     strict=True))[steps]
    return {name: max(relative(ours[name], official[name])
                      for ours, official in pairs) for name in names}


def test_trajectory_learning_rates(trajectory, trajectory_meta):
    """The cosine schedule over the run, step by step. Compared to the peak
    rate: the last steps' rates are tiny and float32 rounding of the cosine
    near pi dominates their own relative error."""
    base = trajectory_meta["settings"]["adjusted_learning_rate"]
    ours = [step["learning_rate"] for step in trajectory["steps"]]
    official = [step["learning_rate"] for step in trajectory_meta["per_step"]]
    np.testing.assert_allclose(ours, official, rtol=0, atol=LEARNING_RATE_RTOL * base)


def test_trajectory_first_steps_exact(trajectory, trajectory_meta):
    """Until one step of gradient difference has fed back, every quantity
    agrees closely: the EMA weights loaded, loss, clipping to 10, learning
    rate and the first update (step 2's loss), then momentum (step 3's)."""
    terms = ("loss", "cls_loss", "box_loss", "reg_l2_loss")
    before_feedback = worst_errors(trajectory, trajectory_meta, terms,
                                   slice(0, EXACT_STEPS))
    assert max(before_feedback.values()) <= EXACT_RTOL, before_feedback
    totals = worst_errors(trajectory, trajectory_meta, ("loss",),
                          slice(0, EXACT_TOTAL_STEPS))
    assert totals["loss"] <= EXACT_RTOL, totals
    clipped = worst_errors(trajectory, trajectory_meta, ("gradient_norm",),
                           slice(0, 1))
    assert clipped["gradient_norm"] <= EXACT_RTOL, clipped


def test_trajectory_losses_and_gradient_norms(trajectory, trajectory_meta):
    """All ten steps, at the tolerances this chaotic run allows (module
    constants); the weight decay term follows the weights' norms closely."""
    worst = worst_errors(trajectory, trajectory_meta,
                         ("loss", "cls_loss", "box_loss", "reg_l2_loss",
                          "gradient_norm"), slice(None))
    limits = {"loss": TRAJECTORY_LOSS_RTOL, "cls_loss": TRAJECTORY_LOSS_RTOL,
              "box_loss": TRAJECTORY_BOX_RTOL, "reg_l2_loss": LOSS_RTOL,
              "gradient_norm": TRAJECTORY_GRAD_NORM_RTOL}
    assert all(worst[name] <= limit for name, limit in limits.items()), worst
    losses = [step["loss"] for step in trajectory["steps"]]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))


def test_trajectory_weight_updates(trajectory, trajectory_dir):
    """Updates (after - before) of every variable, moving statistics
    included, against the official ones from the same starting weights."""
    official_after = dict(np.load(trajectory_dir / "weights_after.npz"))
    before, after = trajectory["before"], trajectory["after"]
    assert sorted(after) == sorted(official_after)
    names = sorted(official_after)
    ours = {n: after[n].astype(np.float64) - before[n] for n in names}
    official = {n: official_after[n].astype(np.float64) - before[n] for n in names}
    overall = cosine(flat([ours[n] for n in names]),
                     flat([official[n] for n in names]))
    errors = [np.linalg.norm(ours[n] - official[n]) / np.linalg.norm(official[n])
              for n in names if np.linalg.norm(official[n]) > 0]
    median = float(np.median(errors))
    assert overall >= UPDATE_MIN_COSINE, overall
    assert median <= UPDATE_MEDIAN_RTOL, median


def test_trajectory_moving_variances_per_level(trajectory, trajectory_dir):
    """What the ten steps added to the heads' moving variances, level by
    level: ``after - momentum**10 * before`` is a weighted sum of the batch
    variances, so its official/ours ratio shows how the batch variance is
    taken (``n/(n-1)`` for the unbiased one, ``n = batch * H_l * W_l``), far
    above the run's chaos on the small levels. Keras 3's own batch norm
    averages the biased variance (ratio 1.14 at level 7 here); automl's
    fused one, and ours, the unbiased one."""
    official_after = dict(np.load(trajectory_dir / "weights_after.npz"))
    before, after = trajectory["before"], trajectory["after"]
    decay = BN_MOMENTUM ** len(trajectory["steps"])
    ratios = {}
    for level in LEVELS:
        names = [n for n in official_after if n.endswith(
            f"-bn-{level}/moving_variance")]
        assert len(names) == 6, level  # 3 class + 3 box repeats
        ratios[level] = float(np.median([np.median(
            (official_after[n] - decay * before[n]) /
            (after[n] - decay * before[n])) for n in names]))
    assert all(abs(r - 1.0) <= MOVING_VARIANCE_RTOL for r in ratios.values()), ratios
