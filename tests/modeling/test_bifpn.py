"""BiFPN: topology data, fusion weights and resampling."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import ConfigError
from efficientdet_tf.modeling.bifpn import FNode, ResampleFeatureMap, fuse
from efficientdet_tf.modeling.fpn_topologies import (FPN_TOPOLOGIES, FNodeSpec,
                                                     bifpn_topology, fpn_topology,
                                                     qufpn_topology,
                                                     topology_from_nodes)


def test_topology_levels_3_to_7_is_the_official_graph():
    expected = [(6, (3, 4)), (5, (2, 5)), (4, (1, 6)), (3, (0, 7)),
                (4, (1, 7, 8)), (5, (2, 6, 9)), (6, (3, 5, 10)), (7, (4, 11))]
    assert bifpn_topology(3, 7) == [FNodeSpec(l, i) for l, i in expected]


def test_topology_levels_3_to_8_has_ten_nodes():
    nodes = bifpn_topology(3, 8)
    assert len(nodes) == 10
    assert nodes[-1] == FNodeSpec(8, (5, 14))


def test_qufpn_levels_3_to_7_is_automl_graph():
    """BiFPN's eight nodes, then a bottom-up and a top-down path from the
    inputs again (13 fuses the inputs P4 and P3), then one node per level
    fusing the two paths' outputs."""
    expected = [(6, (3, 4)), (5, (2, 5)), (4, (1, 6)), (3, (0, 7)),
                (4, (1, 7, 8)), (5, (2, 6, 9)), (6, (3, 5, 10)), (7, (4, 11)),
                (4, (1, 0)), (5, (2, 13)), (6, (3, 14)), (7, (4, 15)),
                (6, (3, 15, 16)), (5, (2, 14, 17)), (4, (1, 13, 18)),
                (3, (0, 19)),
                (7, (12, 16)), (6, (11, 17)), (5, (10, 18)), (4, (9, 19)),
                (3, (8, 20))]
    assert qufpn_topology(3, 7) == [FNodeSpec(l, i) for l, i in expected]


def test_topologies_are_selected_by_name_or_given_as_nodes():
    assert set(FPN_TOPOLOGIES) == {"bifpn", "bifpn_dyn", "qufpn"}
    assert fpn_topology("bifpn_dyn", None, 3, 7) == bifpn_topology(3, 7)
    nodes = [node.as_config() for node in bifpn_topology(3, 5)]
    assert fpn_topology("qufpn", {"nodes": nodes}, 3, 5) == bifpn_topology(3, 5)
    with pytest.raises(ConfigError, match="unknown fpn_name 'pan'.*qufpn"):
        fpn_topology("pan", None, 3, 7)


@pytest.mark.parametrize("nodes,message", [
    ([{"feat_level": 3, "inputs": [0, 1]}], r"nodes\[0\]: expected"),
    ([{"feat_level": 2, "inputs_offsets": [0, 1]}], "outside min_level"),
    ([{"feat_level": 3, "inputs_offsets": [0, 2]}], r"0\.\.1 \(0\.\.1 are"),
    ([{"feat_level": 3, "inputs_offsets": []}], "earlier nodes"),
    ([{"feat_level": 3, "inputs_offsets": [0, 1]}], r"no node for level\(s\) \[4\]"),
])
def test_explicit_nodes_are_checked(nodes, message):
    with pytest.raises(ConfigError, match=message):
        topology_from_nodes(nodes, 3, 4)


def fusion_weights(method: str, raw: list[tf.Tensor]) -> list[np.ndarray]:
    """Each input's effective weight: the fusion of one-hot inputs."""
    shape = [1, 1, 1, 2]
    return [fuse(method, [tf.fill(shape, float(i == j)) for j in range(len(raw))],
                 raw).numpy().reshape(-1) for i in range(len(raw))]


@pytest.mark.parametrize("method", ["fastattn", "channel_fastattn"])
def test_fastattn_weights_non_negative_and_normalised(method):
    raw = [tf.constant([-3.0, 0.5]), tf.constant([2.0, -1.0]),
           tf.constant([0.25, 0.0])]
    weights = np.stack(fusion_weights(method, raw))
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights[:, 0], [0, 2 / 2.2501, 0.25 / 2.2501],
                               rtol=1e-6)
    assert (weights.sum(axis=0) <= 1.0).all()


def test_attn_weights_are_softmax():
    weights = fusion_weights("attn", [tf.constant(0.0), tf.constant(np.log(3.0),
                                                                     tf.float32)])
    np.testing.assert_allclose([w[0] for w in weights], [0.25, 0.75],
                               rtol=1e-6)


def _node(method: str) -> FNode:
    return FNode(4, [0, 1], node_id=2, target_size=[4, 6], filters=8,
                 weight_method=method, act_type="swish", name="fnode0")


def test_fnode_fastattn_ignores_negative_weights():
    node = _node("fastattn")
    a = tf.random.normal([1, 4, 6, 8], seed=1)
    b = tf.random.normal([1, 2, 3, 8], seed=2)
    node([a, b])
    node.fusion_weights[0].assign(-1.0)  # ReLU makes this input's weight 0
    node.fusion_weights[1].assign(2.0)
    upsampled = tf.repeat(tf.repeat(b, 2, axis=1), 2, axis=2)
    expected = node.op_after_combine(upsampled * (2.0 / (2.0 + 1e-4)))
    np.testing.assert_allclose(node([a, b]), expected, atol=1e-5)
    assert [w.path for w in node.fusion_weights] == ["fnode0/WSM", "fnode0/WSM_1"]


def test_fnode_sum_has_no_weights():
    node = _node("sum")
    node([tf.zeros([1, 4, 6, 8]), tf.zeros([1, 2, 3, 8])])
    assert not any("WSM" in w.path for w in node.weights)


def test_resample_down_non_square_and_conv_only_when_channels_differ():
    layer = ResampleFeatureMap([3, 5], 16, name="resample_p6")
    out = layer(tf.zeros([2, 6, 10, 40]))
    assert tuple(out.shape) == (2, 3, 5, 16)
    assert {w.path for w in layer.weights} >= {"resample_p6/conv2d/kernel",
                                               "resample_p6/bn/gamma"}
    same = ResampleFeatureMap([3, 5], 16, name="resample_p7")
    assert tuple(same(tf.zeros([1, 6, 10, 16])).shape) == (1, 3, 5, 16)
    assert not same.weights


def test_resample_max_pool_window_is_stride_plus_one():
    x = tf.reshape(tf.range(16, dtype=tf.float32), [1, 4, 4, 1])
    out = ResampleFeatureMap([2, 2], 1, name="r")(x)
    # 3x3 window, stride 2, SAME padding: maxima at rows/cols {0..2}, {2..3}.
    np.testing.assert_array_equal(out[0, :, :, 0], [[10, 11], [14, 15]])


def test_resample_avg_pooling():
    x = tf.ones([1, 4, 4, 1])
    out = ResampleFeatureMap([2, 2], 1, pooling_type="avg", name="r")(x)
    np.testing.assert_allclose(out, np.ones([1, 2, 2, 1]))


def test_resample_up_nearest_integer_and_fractional():
    x = tf.reshape(tf.range(6, dtype=tf.float32), [1, 2, 3, 1])
    up = ResampleFeatureMap([4, 6], 1, name="r")(x)
    np.testing.assert_array_equal(up[0, :, :, 0], np.repeat(np.repeat(
        x[0, :, :, 0], 2, axis=0), 2, axis=1))
    # 3 -> 5 rows: automl's corner convention, source row = floor(i * 3 / 5).
    y = tf.reshape(tf.range(3, dtype=tf.float32), [1, 3, 1, 1])
    frac = ResampleFeatureMap([5, 1], 1, name="r")(y)
    np.testing.assert_array_equal(frac[0, :, 0, 0], [0, 0, 1, 1, 2])


def test_resample_rejects_mixed_directions():
    with pytest.raises(ValueError, match="cannot resample"):
        ResampleFeatureMap([2, 8], 1, name="r")(tf.zeros([1, 4, 4, 1]))


def test_unknown_fusion_method():
    with pytest.raises(ValueError, match="fpn_weight_method"):
        _node("mean")
