"""build_model: output layout, precision, tracing, topologies, memory."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import ConfigError, get_config
from efficientdet_tf.modeling.fpn_topologies import bifpn_topology, qufpn_topology
from efficientdet_tf.modeling.model import build_model

def small_config(name: str = "efficientdet-d0", **overrides):
    """Parameter counts do not depend on the image size: build tiny."""
    config = get_config(name)
    size = 2 ** config.max_level
    return config.override({"image_size": size, **overrides})


@pytest.mark.parametrize("image_size,expected", [
    ((256, 256), [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]),
    ((256, 384), [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]),
])
def test_d0_output_shapes_per_level(image_size, expected):
    config = get_config("efficientdet-d0", {"image_size": list(image_size)})
    model = build_model(config)
    class_outputs, box_outputs = model(tf.zeros([2, *image_size, 3]))
    assert [tuple(c.shape) for c in class_outputs] == [
        (2, h, w, 9 * 90) for h, w in expected]
    assert [tuple(b.shape) for b in box_outputs] == [
        (2, h, w, 9 * 4) for h, w in expected]


def test_anchor_layout_follows_config():
    config = small_config(num_classes=3, num_scales=2,
                          aspect_ratios=[1.0, 2.0, 0.5, 3.0])
    class_outputs, box_outputs = build_model(config)(tf.zeros([1, 128, 128, 3]))
    assert class_outputs[0].shape[-1] == 8 * 3
    assert box_outputs[0].shape[-1] == 8 * 4


def test_class_prior_bias():
    model = build_model(small_config())
    bias = model.get_layer("class_net").predict.bias.numpy()
    np.testing.assert_allclose(bias, -np.log(99.0), rtol=1e-6)
    box_bias = model.get_layer("box_net").predict.bias.numpy()
    np.testing.assert_array_equal(box_bias, 0.0)


@pytest.mark.parametrize("value,compute", [(True, "float16"),
                                           ("float16", "float16"),
                                           ("bfloat16", "bfloat16")])
def test_mixed_precision_outputs_float32_and_policy_restored(value, compute):
    before = keras.config.dtype_policy().name
    model = build_model(small_config(mixed_precision=value))
    assert keras.config.dtype_policy().name == before
    class_outputs, box_outputs = model(tf.random.normal([1, 128, 128, 3]))
    assert all(o.dtype == tf.float32 for o in class_outputs + box_outputs)
    assert all(np.isfinite(o.numpy()).all() for o in class_outputs)
    backbone = model.get_layer("efficientnet-b0")
    assert backbone.blocks[0].depthwise.compute_dtype == compute
    assert all(w.dtype == "float32" for w in model.weights)


def test_unknown_mixed_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="mixed_precision 'int8'.*bfloat16"):
        build_model(small_config(mixed_precision="int8"))


def test_tf_function_with_dynamic_batch():
    model = build_model(small_config())

    @tf.function(input_signature=[tf.TensorSpec([None, 128, 128, 3])])
    def forward(images):
        return model(images, training=False)

    for batch in (1, 3):
        class_outputs, _ = forward(tf.zeros([batch, 128, 128, 3]))
        assert class_outputs[0].shape[0] == batch
    assert len(forward._list_all_concrete_functions()) == 1


def assert_same_network(model: keras.Model, clone: keras.Model,
                        images: tf.Tensor) -> None:
    assert [w.path for w in clone.weights] == [w.path for w in model.weights]
    for ours, theirs in zip(tf.nest.flatten(model(images)),
                            tf.nest.flatten(clone(images))):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_get_config_from_config_round_trip():
    """The layers are registered: no ``custom_objects`` needed."""
    model = build_model(small_config(num_classes=4))
    clone = keras.Model.from_config(model.get_config())
    images = tf.random.normal([1, 128, 128, 3], seed=0)
    clone(images)
    clone.set_weights(model.get_weights())
    assert_same_network(model, clone, images)


def test_keras_file_save_and_load(tmp_path):
    model = build_model(small_config(num_classes=4, fpn_cell_repeats=1,
                                     box_class_repeats=1))
    path = tmp_path / "model.keras"
    model.save(path)
    assert_same_network(model, keras.saving.load_model(path),
                        tf.random.normal([1, 128, 128, 3], seed=0))


def one_cell_config(**overrides):
    """D0 at 128 px with one cell and one head repeat: quick to build."""
    return small_config(fpn_cell_repeats=1, box_class_repeats=1, **overrides)


def test_fpn_name_selects_a_registered_topology():
    model = build_model(one_cell_config(fpn_name="qufpn"))
    cell = model.get_layer("fpn_cells").cells[0]
    assert cell.topology == qufpn_topology(3, 7)
    assert [node.name for node in cell.fnodes][-1] == "fnode20"
    class_outputs, _ = model(tf.zeros([1, 128, 128, 3]))
    assert [tuple(c.shape[1:3]) for c in class_outputs] == [
        (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]


def test_fpn_config_nodes_win_over_fpn_name():
    """The default graph written out as explicit nodes is the default
    network, variable for variable, whatever fpn_name says."""
    nodes = [node.as_config() for node in bifpn_topology(3, 7)]
    explicit = build_model(one_cell_config(fpn_name="qufpn",
                                           fpn_config={"nodes": nodes}))
    default = build_model(one_cell_config())
    assert [(w.path, w.shape) for w in explicit.weights] == [
        (w.path, w.shape) for w in default.weights]


def test_fpn_config_weight_method_is_used():
    nodes = [node.as_config() for node in bifpn_topology(3, 7)]
    model = build_model(one_cell_config(
        fpn_config={"nodes": nodes, "weight_method": "sum"}))
    assert not any("WSM" in w.path for w in model.weights)


def test_backbone_config_blocks_replace_the_stages():
    blocks = ["r1_k3_s11_e1_i32_o16_se0.25", "r1_k3_s22_e6_i16_o24_se0.25",
              "r1_k5_s22_e6_i24_o40_se0.25", "r1_k3_s22_e6_i40_o80_se0.25",
              "r1_k3_s22_e6_i80_o96_se0.25"]
    model = build_model(one_cell_config(backbone_config={"blocks": blocks}))
    assert len(model.get_layer("efficientnet-b0").blocks) == 5
    class_outputs, _ = model(tf.zeros([1, 128, 128, 3]))
    assert [c.shape[1] for c in class_outputs] == [16, 8, 4, 2, 1]
    with pytest.raises(ConfigError, match="reduce the image 4 times"):
        build_model(one_cell_config(backbone_config={"blocks": blocks[:-1]}))
    with pytest.raises(ConfigError, match="block string 'r1_k3'"):
        build_model(one_cell_config(backbone_config={"blocks": ["r1_k3"]}))


def test_training_flag_changes_batch_norm_behaviour():
    model = build_model(small_config())
    images = tf.random.normal([2, 128, 128, 3], seed=1)
    inference = model(images, training=False)[0][0]
    training = model(images, training=True)[0][0]
    assert not np.allclose(inference, training)


def test_bad_min_level():
    with pytest.raises(ValueError, match="min_level"):
        build_model(small_config(min_level=6))


def test_grad_checkpoint_gives_the_same_gradients_and_one_statistics_update():
    """``grad_checkpoint`` recomputes each backbone block in the backward
    pass: the loss, every gradient and the batch-norm moving averages
    (updated once per step, not again by the recomputation) must equal the
    plain model's."""
    small = {"image_size": 128, "num_classes": 3, "fpn_cell_repeats": 1,
             "box_class_repeats": 1}
    plain = build_model(get_config("efficientdet-d0", small))
    recomputing = build_model(get_config("efficientdet-d0",
                                         {**small, "grad_checkpoint": True}))
    recomputing.set_weights(plain.get_weights())
    initial = [w.numpy() for w in plain.non_trainable_weights]
    images = tf.random.stateless_normal([2, 128, 128, 3], seed=[1, 2])

    def train_step(model):
        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                classes, boxes = model(x, training=True)
                loss = tf.add_n([tf.reduce_mean(tf.square(t))
                                 for t in classes + boxes])
            return loss, tape.gradient(loss, model.trainable_variables)
        return run(images)

    loss, grads = train_step(plain)
    loss_again, grads_again = train_step(recomputing)
    np.testing.assert_allclose(loss, loss_again, rtol=1e-6)
    assert len(grads) == len(grads_again) > 300
    for variable, a, b in zip(plain.trainable_variables, grads, grads_again):
        assert b is not None, variable.path
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7, err_msg=variable.path)
    moved = 0
    for before, a, b in zip(initial, plain.non_trainable_weights,
                            recomputing.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=a.path)
        moved += not np.allclose(before, a.numpy())
    assert moved > 100  # the statistics did update (once, as in plain)


def test_building_a_model_leaves_nothing_in_the_gradient_registry():
    """A ``tf.custom_gradient`` traced into a graph registers its gradient
    function in TensorFlow's process-wide registry for good, keeping the
    graph and every variable it captured alive: with ``tf.nn.silu`` as swish
    while Keras inferred shapes, each ``build_model`` left the model's
    weights in memory, 0.5 GB per D7x."""
    from tensorflow.python.framework import ops
    before = len(ops._gradient_registry.list())
    model = build_model(small_config())
    assert len(ops._gradient_registry.list()) == before
    # Traced for real, swish is still TF's (the official gradient).
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(
        tf.TensorSpec([1, *model.input_shape[1:]])).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "IdentityN" in op_types  # tf.custom_gradient's mark


@pytest.mark.parametrize("max_level", [7, 6])
def test_p2_level_outputs_line_up_with_its_anchors(max_level):
    """min_level 2 (small objects): the backbone's stride-4 map becomes P2,
    and every level's head output has one row per anchor of that level."""
    from efficientdet_tf.ops.anchors import anchor_boxes, level_grid_sizes
    config = one_cell_config(min_level=2, max_level=max_level, num_classes=3)
    class_outputs, box_outputs = build_model(config)(tf.zeros([2, 128, 128, 3]))
    sizes = [128 // 2 ** level for level in range(2, max_level + 1)]
    assert [tuple(c.shape) for c in class_outputs] == [
        (2, s, s, 9 * 3) for s in sizes]
    assert [tuple(b.shape) for b in box_outputs] == [
        (2, s, s, 9 * 4) for s in sizes]
    assert level_grid_sizes(config) == [(s, s) for s in sizes]
    assert anchor_boxes(config).shape == (sum(9 * s * s for s in sizes), 4)
