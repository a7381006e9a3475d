"""Losses against direct NumPy formulas and automl's normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.ops import anchors as anchors_lib
from efficientdet_tf.ops.losses import detection_loss, focal_loss, huber_loss
from tests.conftest import tiny_config


def numpy_focal(logits, y, alpha, gamma, smoothing=0.0):
    """The focal loss written out from its definition, in float64."""
    logits, y = np.float64(logits), np.float64(y)
    p = 1 / (1 + np.exp(-logits))
    p_t = y * p + (1 - y) * (1 - p)
    alpha_t = y * alpha + (1 - y) * (1 - alpha)
    y_smooth = y * (1 - smoothing) + 0.5 * smoothing
    cross_entropy = -(y_smooth * np.log(p) + (1 - y_smooth) * np.log(1 - p))
    return alpha_t * (1 - p_t) ** gamma * cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_loss_matches_numpy_formula(smoothing):
    rng = np.random.default_rng(1)
    logits = rng.uniform(-8, 8, (4, 5, 6)).astype(np.float32)
    y = (rng.uniform(size=logits.shape) < 0.3).astype(np.float32)
    got = focal_loss(logits, y, 0.25, 1.5, smoothing)
    np.testing.assert_allclose(got, numpy_focal(logits, y, 0.25, 1.5, smoothing),
                               rtol=1e-5, atol=1e-7)


def test_huber_hand_values():
    got = huber_loss([0.0, 0.0, 1.0], [0.05, -0.3, 1.0], delta=0.1)
    np.testing.assert_allclose(got, [0.5 * 0.05 ** 2, 0.1 * (0.3 - 0.05), 0.0],
                               rtol=1e-6)


def batch_of_targets(config):
    """Targets for two images, batched as tf.data would batch them; the
    second has a crowd box on anchor 0, so some targets are IGNORED."""
    crowd = anchors_lib.anchor_boxes(config)[0]
    labels = [anchors_lib.label_anchors(np.float32([[2, 2, 14, 14], [6, 20, 9, 23]]),
                                        [1, 3], config),
              anchors_lib.label_anchors(np.stack([np.float32([0, 8, 16, 32]), crowd]),
                                        [2, 1], config, is_crowd=[0, 1])]
    return tf.nest.map_structure(lambda *t: tf.stack(t), *labels)


def random_outputs(config, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    cls, box = [], []
    for h, w in ((2, 4), (1, 2)):
        cls.append(rng.normal(0, 2 * scale, (2, h, w, 4 * config.num_classes)))
        box.append(rng.normal(0, 0.2 * scale, (2, h, w, 4 * 4)))
    return [np.float32(c) for c in cls], [np.float32(b) for b in box]


def test_detection_loss_follows_automl_normalisation():
    config = tiny_config()
    targets = batch_of_targets(config)
    cls_out, box_out = random_outputs(config)
    losses = detection_loss(cls_out, box_out, targets, config)

    normalizer = float(tf.reduce_sum(targets.num_positives)) + 1
    assert normalizer > 2 and (targets.cls_targets[0].numpy()[1, 0, 0, 0] == -2)
    cls_sum = box_sum = 0.0
    for logits, cls_t, box_t, box_o in zip(cls_out, targets.cls_targets,
                                           targets.box_targets, box_out,
                                           strict=True):
        cls_t = cls_t.numpy()
        onehot = (np.eye(config.num_classes)[np.maximum(cls_t, 0)] *
                  (cls_t >= 0)[..., None])
        per_class = numpy_focal(logits.reshape(onehot.shape), onehot, 0.25, 1.5)
        cls_sum += (per_class * (cls_t != -2)[..., None]).sum()
        error = np.abs(box_o - box_t.numpy())
        huber = np.where(error <= 0.1, 0.5 * error ** 2, 0.1 * (error - 0.05))
        box_sum += (huber * (box_t.numpy() != 0)).sum()
    np.testing.assert_allclose(losses["cls_loss"], cls_sum / normalizer, rtol=1e-5)
    np.testing.assert_allclose(losses["box_loss"], box_sum / (4 * normalizer), rtol=1e-5)
    assert float(losses["box_iou_loss"]) == 0.0
    np.testing.assert_allclose(
        losses["total"], cls_sum / normalizer + 50 * box_sum / (4 * normalizer), rtol=1e-5)


@pytest.mark.parametrize("gamma,smoothing,dtype", [
    (1.5, 0.0, tf.float32), (0.5, 0.1, tf.float32), (2.0, 0.0, tf.float16)])
def test_class_loss_gradient_equals_autodiff_of_focal_loss(gamma, smoothing, dtype):
    """The class loss's hand-written gradient (which spares the memory of
    autodiff's intermediates) against autodiff of the plain focal loss,
    including ignored anchors, gamma < 1, smoothing, confident logits and
    float16 (mixed precision) outputs."""
    config = tiny_config(gamma=gamma, label_smoothing=smoothing)
    targets = batch_of_targets(config)
    cls_out, box_out = random_outputs(config, scale=4.0)
    cls_out = [tf.constant(c, dtype) for c in cls_out]

    def reference(logits_per_level):
        total = 0.0
        for logits, cls_t in zip(logits_per_level, targets.cls_targets,
                                 strict=True):
            shape = tf.concat([tf.shape(cls_t), [config.num_classes]], 0)
            onehot = tf.one_hot(tf.cast(cls_t, tf.int32), config.num_classes)
            loss = focal_loss(tf.reshape(logits, shape), onehot, config.alpha,
                              gamma, smoothing)
            keep = tf.cast(cls_t != -2, tf.float32)[..., None]
            total += tf.reduce_sum(loss * keep)
        return total / (float(tf.reduce_sum(targets.num_positives)) + 1.0)

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(cls_out)
        ours = detection_loss(cls_out, box_out, targets, config)["cls_loss"]
        theirs = reference(cls_out)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    for got, want in zip(tape.gradient(ours, cls_out),
                         tape.gradient(theirs, cls_out), strict=True):
        assert got.dtype == dtype
        assert np.all(np.isfinite(got.numpy()))
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=1e-3,
                                   atol=1e-6 if dtype == tf.float32 else 1e-3)


def test_iou_loss_is_zero_for_perfect_boxes_and_hand_value_for_anchors():
    config = tiny_config(iou_loss_type="giou", iou_loss_weight=2.0)
    targets = batch_of_targets(config)
    cls_out, _ = random_outputs(config)
    perfect = detection_loss(cls_out, list(targets.box_targets), targets, config)
    np.testing.assert_allclose(perfect["box_iou_loss"], 0.0, atol=1e-6)
    np.testing.assert_allclose(perfect["box_loss"], 0.0, atol=1e-7)

    # Predicting zero codes means predicting the anchors themselves.
    zeros = [tf.zeros_like(t) for t in targets.box_targets]
    losses = detection_loss(cls_out, zeros, targets, config)
    expected = 0.0
    for level, (cls_t, box_t) in enumerate(zip(targets.cls_targets,
                                               targets.box_targets,
                                               strict=True)):
        anchors = np.broadcast_to(anchors_lib.level_anchors(config)[level],
                                  cls_t.shape + (4,))
        gt = anchors_lib.decode_boxes(tf.reshape(box_t, cls_t.shape + (4,)), anchors)
        giou = anchors_lib.box_iou(anchors, gt, "giou").numpy()
        expected += (1 - giou)[cls_t.numpy() >= 0].sum()
    assert expected > 0  # anchors are not their boxes: a loss to match
    normalizer = float(tf.reduce_sum(targets.num_positives)) + 1
    np.testing.assert_allclose(losses["box_iou_loss"], expected / (4 * normalizer),
                               rtol=1e-5)
    np.testing.assert_allclose(
        losses["total"], losses["cls_loss"] + 50 * losses["box_loss"]
        + 2.0 * losses["box_iou_loss"], rtol=1e-6)


def test_no_positives_gives_finite_loss():
    config = tiny_config(iou_loss_type="ciou")
    empty = anchors_lib.label_anchors(np.zeros([0, 4]), np.zeros([0]), config)
    targets = tf.nest.map_structure(lambda t: tf.stack([t, t]), empty)
    losses = detection_loss(*random_outputs(config), targets, config)
    assert all(np.isfinite(v) for v in losses.values())
    assert float(losses["cls_loss"]) > 0 and float(losses["box_loss"]) == 0.0


@pytest.mark.parametrize("iou_type", [None, "iou", "giou", "diou", "ciou"])
def test_gradients_finite_under_float16_outputs(iou_type):
    config = tiny_config(iou_loss_type=iou_type)
    targets = batch_of_targets(config)
    cls_out, box_out = random_outputs(config, seed=3, scale=10.0)  # logits ~ +-20
    cls_vars = [tf.Variable(c.astype(np.float16)) for c in cls_out]
    box_vars = [tf.Variable(b.astype(np.float16)) for b in box_out]
    with tf.GradientTape() as tape:
        losses = detection_loss(cls_vars, box_vars, targets, config)
    assert losses["total"].dtype == tf.float32 and np.isfinite(losses["total"])
    grads = tape.gradient(losses["total"], cls_vars + box_vars)
    for grad in grads:
        assert grad.dtype == tf.float16 and np.isfinite(grad.numpy()).all()
    assert any(np.abs(g.numpy()).max() > 0 for g in grads[len(cls_vars):])


def test_bad_inputs_are_reported():
    config = tiny_config()
    targets = batch_of_targets(config)
    cls_out, box_out = random_outputs(config)
    with pytest.raises(ValueError, match="2 levels"):
        detection_loss(cls_out[:1], box_out[:1], targets, config)
    with pytest.raises(ValueError, match="iou_loss_type"):
        detection_loss(cls_out, box_out, targets, tiny_config(iou_loss_type="l1"))


def test_a_box_only_level_2_anchors_fit_is_learned_on_level_2():
    """min_level 2: a 6x7 box (IoU 0.66 and 0.60 with two level-2
    anchors, under 0.2 with any level-3 one) is a positive on level 2
    alone; its box loss reaches the network only through the level-2
    output. Without level 2 the labeler can only force it onto a poorly
    fitting level-3 anchor."""
    box = np.float32([[3, 7, 9, 14]])
    config = tiny_config(min_level=2)
    targets = anchors_lib.label_anchors(box, [2], config)
    assert [int((t.numpy() >= 0).sum()) for t in targets.cls_targets] == [2, 0, 0]
    without = anchors_lib.label_anchors(box, [2], tiny_config())
    assert [int((t.numpy() >= 0).sum()) for t in without.cls_targets] == [1, 0]

    sizes = anchors_lib.level_grid_sizes(config)
    cls_out = [tf.zeros((1, h, w, 4 * config.num_classes)) for h, w in sizes]
    box_out = [tf.zeros((1, h, w, 4 * 4)) for h, w in sizes]
    with tf.GradientTape() as tape:
        tape.watch(box_out)
        losses = detection_loss(cls_out, box_out,
                                tf.nest.map_structure(lambda t: t[None], targets),
                                config)
    assert float(losses["box_loss"]) > 0
    gradients = tape.gradient(losses["box_loss"], box_out)
    assert [bool(np.any(g.numpy())) for g in gradients] == [True, False, False]
